//! The job engine: Postgres is the queue, apalis is the runtime.
//!
//! One process registers itself in `job_workers`, then per configured queue runs a fetcher that
//! claims due jobs with `FOR UPDATE SKIP LOCKED` (as many as the queue has room for: its free
//! slots and a claim-ahead buffer, [`queue`]) and hands them to an apalis worker through
//! [`backend::ClaimedJobs`], whose concurrency limit is the queue's slots. The apalis workers run
//! under apalis's `Monitor`, which starts them, reports their lifecycle and stops them at
//! shutdown. Each job runs through tower layers on its worker ([`execute`]): spawned on the
//! pool, under a span, counted, leased and cancellable, under its timeout and a panic guard;
//! its outcome goes to the completer, which writes outcomes in batches ([`complete`]).
//! [`storage::Jobs`] is the same `jobs` table through apalis's backend traits (push, fetch by
//! id, list, vacuum, resume abandoned). The waker
//! ([`wake`]) turns `NOTIFY zoark_jobs_ready` and a slow poll into precise wake-ups, also for
//! delayed jobs. The heartbeat ([`lease`]) keeps this worker's lease, rescues dead workers'
//! jobs, and picks up cancellations the listener missed.

mod backend;
mod complete;
mod execute;
mod lease;
mod queue;
pub mod registry;
pub mod storage;
mod tally;
mod wake;

/// The engine's hot statements, for `cargo xtask bench queue` to run as the raw-SQL ceiling.
pub mod sql {
    /// Claims up to `$2` due jobs of queue `$1` for worker `$3` while its row exists; `$4`/`$5`
    /// are the kinds' timeouts in ms and `$6` the deadline margin in ms.
    pub const CLAIM: &str = include_str!("sql/claim.sql");
    /// Writes a batch of outcomes (parallel arrays `$1`–`$6`) fenced on worker `$7`.
    pub const COMPLETE: &str = include_str!("sql/complete.sql");
}

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use apalis::prelude::{Event, Monitor, WorkerBuilder, WorkerBuilderExt as _};
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use registry::{JobContext, JobError, JobResult, Registry};

/// How one worker process behaves; `zoark_core::Settings` fills it in production, tests build
/// it directly.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Queues and their concurrency.
    pub queues: Vec<(String, usize)>,
    pub claim_batch: usize,
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    pub rescue_after: Duration,
    pub shutdown_timeout: Duration,
    /// Outcomes waiting to be written beyond which no fetcher claims until they are.
    pub max_backlog: usize,
    /// The cap on a job's own timeout (`Opts::timeout`).
    pub max_timeout: Duration,
}

impl EngineConfig {
    pub fn from_settings(settings: &zoark_core::settings::WorkerSettings) -> Self {
        Self {
            queues: settings.queues.0.clone(),
            claim_batch: settings.claim_batch.max(1),
            poll_interval: settings.poll_interval,
            heartbeat_interval: settings.heartbeat_interval,
            rescue_after: settings.rescue_after,
            shutdown_timeout: settings.shutdown_timeout,
            max_backlog: settings.max_backlog.max(1),
            max_timeout: settings.max_timeout,
        }
    }
}

/// A claimed job on its way to a handler; counts against its queue's room until it finishes.
pub(crate) struct Claimed {
    pub(crate) id: Uuid,
    pub(crate) organization_id: Option<Uuid>,
    pub(crate) kind: String,
    pub(crate) queue: String,
    pub(crate) args: serde_json::Value,
    pub(crate) attempt: i32,
    pub(crate) max_attempts: i32,
    pub(crate) run_at: DateTime<Utc>,
    /// The job's own timeout, if it asked for one at enqueue (capped by the configuration).
    pub(crate) timeout: Option<Duration>,
    /// When the claim returned it; a job waits in its queue's buffer until a slot is free.
    pub(crate) claimed_at: std::time::Instant,
    /// Counts it against its queue's slots and claim-ahead buffer until it finishes.
    pub(crate) held: queue::Held,
}

/// Why a running job's token was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// A user cancelled it: it ends `cancelled`.
    Cancelled,
    /// Shutdown deadline: it goes back to `available` at once, its attempt not counted.
    HandBack,
    /// This worker lost its lease: the job was (or will be) rescued; write nothing.
    LeaseLost,
}

pub(crate) struct InFlight {
    pub(crate) token: CancellationToken,
    pub(crate) reason: Option<StopReason>,
}

/// State shared by the fetchers, the running jobs, the completer and the heartbeat.
pub(crate) struct Shared {
    pub(crate) pool: PgPool,
    pub(crate) worker_id: Uuid,
    pub(crate) config: EngineConfig,
    pub(crate) registry: Registry,
    pub(crate) in_flight: Mutex<HashMap<Uuid, InFlight>>,
    completions: mpsc::UnboundedSender<complete::Completion>,
    /// Outcomes sent to the completer and not yet written (or given up).
    pub(crate) backlog: Arc<complete::Backlog>,
    /// True while this worker's lease is good; fetchers claim only then, and a job handed over
    /// but not yet started when it turns false is not started.
    pub(crate) leased: watch::Sender<bool>,
    /// The registered kinds and their timeouts in ms, for the claim's deadlines.
    pub(crate) kind_timeouts: (Vec<String>, Vec<i64>),
    pub(crate) hooks: EngineHooks,
    /// This worker's queues by name.
    pub(crate) queues: HashMap<String, Arc<queue::QueueState>>,
}

/// Knobs a test (or an operator's drill) turns on a running engine.
#[derive(Debug, Clone, Default)]
pub struct EngineHooks {
    heartbeat_paused: Arc<AtomicBool>,
    worker_events: Arc<Mutex<Vec<(String, &'static str)>>>,
}

/// The most lifecycle events [`EngineHooks::worker_events`] keeps.
const KEPT_WORKER_EVENTS: usize = 1_000;

impl EngineHooks {
    /// Skips every heartbeat while `paused`, as if Postgres could not be reached by it: the
    /// worker fences itself, and its peers rescue its jobs once the window has passed.
    pub fn pause_heartbeat(&self, paused: bool) {
        self.heartbeat_paused.store(paused, Ordering::SeqCst);
    }

    pub(crate) fn heartbeat_paused(&self) -> bool {
        self.heartbeat_paused.load(Ordering::SeqCst)
    }

    /// What apalis's monitor reported of this engine's workers, in order: each worker's name
    /// (`queue@worker-id`) with `start`, `stop`, `exit` or `error` (the first thousand).
    pub fn worker_events(&self) -> Vec<(String, &'static str)> {
        self.worker_events
            .lock()
            .map(|events| events.clone())
            .unwrap_or_default()
    }
}

/// The monitor's event hook: logs and counts the lifecycle of each apalis worker
/// (`zoark_worker_events_total{event}`). Called for every job too (`Success`), so it does
/// nothing for those.
fn worker_event(hooks: &EngineHooks, worker: &str, event: &Event) {
    let name = match event {
        Event::Start => {
            tracing::info!(worker, "apalis worker started");
            "start"
        }
        Event::Stop => {
            tracing::info!(worker, "apalis worker stopping: no new jobs");
            "stop"
        }
        Event::Exit => {
            tracing::info!(worker, "apalis worker exited");
            "exit"
        }
        Event::Error(error) => {
            tracing::error!(worker, %error, "apalis worker error");
            "error"
        }
        _ => return,
    };
    metrics::counter!("zoark_worker_events_total", "event" => name).increment(1);
    if let Ok(mut events) = hooks.worker_events.lock()
        && events.len() < KEPT_WORKER_EVENTS
    {
        events.push((worker.to_owned(), name));
    }
}

impl Shared {
    /// Cancels running jobs, recording why; `ids = None` means every job of this worker.
    pub(crate) fn stop_jobs(&self, ids: Option<&[Uuid]>, reason: StopReason) -> usize {
        let Ok(mut in_flight) = self.in_flight.lock() else {
            return 0;
        };
        let mut stopped = 0;
        for (id, job) in in_flight.iter_mut() {
            if ids.is_none_or(|ids| ids.contains(id)) && job.reason.is_none() {
                job.reason = Some(reason);
                job.token.cancel();
                stopped += 1;
            }
        }
        stopped
    }

    /// Hands an outcome to the completer, counting it in the backlog until it is written.
    pub(crate) fn report(&self, completion: complete::Completion) {
        self.backlog.added(1);
        if self.completions.send(completion).is_err() {
            // The completer is gone (the process is tearing down): the lease brings the job back.
            self.backlog.written(1);
        }
    }

    /// Waits until this worker may claim: its lease is good and its backlog of unwritten
    /// outcomes is under the limit. False when `stop` fired first.
    pub(crate) async fn ready_to_claim(&self, stop: &CancellationToken) -> bool {
        let mut leased = self.leased.subscribe();
        let mut waited = false;
        loop {
            let backlog = self.backlog.len();
            if *leased.borrow_and_update() && backlog < self.config.max_backlog {
                if waited {
                    tracing::info!(backlog, "claiming again");
                }
                return true;
            }
            if !waited {
                waited = true;
                tracing::debug!(
                    backlog,
                    leased = *leased.borrow(),
                    "not claiming until the lease is good and the outcomes are written"
                );
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                _ = leased.changed() => {}
                () = self.backlog.freed.notified() => {}
                // A notification that raced the check above is caught by this.
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    }

    fn in_flight_count(&self) -> usize {
        self.in_flight.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// A worker process's engine.
pub struct Engine {
    pool: PgPool,
    config: EngineConfig,
    registry: Registry,
    hooks: EngineHooks,
}

impl Engine {
    /// The engine runs on a pool of its own, with `pool`'s connection options and limits plus
    /// two planner settings. `plan_cache_mode = force_custom_plan`: each claim and completion is
    /// planned for the `jobs` table as it is now; a generic plan cached while the table was
    /// small seq-scans it once a burst of jobs arrives, until autovacuum analyzes it (measured:
    /// 250 ms per claim of 500 instead of 5 ms). `random_page_cost = 1.1`: the hot part of
    /// `jobs` is in memory, and with the default of 4 the planner prefers scanning the whole
    /// table to probing the primary key for each outcome of a batch.
    pub fn new(pool: PgPool, config: EngineConfig, registry: Registry) -> Self {
        let options = (*pool.connect_options()).clone().options([
            ("plan_cache_mode", "force_custom_plan"),
            ("random_page_cost", "1.1"),
        ]);
        let limits = pool.options();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(limits.get_max_connections())
            .acquire_timeout(limits.get_acquire_timeout())
            .idle_timeout(limits.get_idle_timeout())
            .connect_lazy_with(options);
        Self {
            pool,
            config,
            registry,
            hooks: EngineHooks::default(),
        }
    }

    /// The hooks of this engine, to turn while it runs.
    pub fn hooks(&self) -> EngineHooks {
        self.hooks.clone()
    }

    /// Runs until `shutdown` is cancelled; then stops claiming, gives in-flight jobs up to the
    /// shutdown timeout, hands the rest back, flushes outcomes and deregisters.
    ///
    /// # Errors
    /// When the worker cannot register itself.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".into());
        let queue_names: Vec<String> = self.config.queues.iter().map(|(q, _)| q.clone()).collect();
        let worker_id = lease::register(&self.pool, &hostname, &queue_names)
            .await
            .context("registering the worker")?;
        // Unbounded on purpose: a finished job must always be able to report. The backlog is
        // bounded by the fetchers, which stop claiming while it is over `max_backlog`: at most
        // `max_backlog` + the slots + one claim batch outcomes are ever held.
        let (completions, completion_rx) = mpsc::unbounded_channel();
        let kind_timeouts = self.registry.timeouts_ms();
        let backlog = Arc::new(complete::Backlog::default());
        let queues: HashMap<String, Arc<queue::QueueState>> = self
            .config
            .queues
            .iter()
            .map(|(name, slots)| (name.clone(), Arc::new(queue::QueueState::new(name, *slots))))
            .collect();
        let shared = Arc::new(Shared {
            pool: self.pool.clone(),
            worker_id,
            config: self.config.clone(),
            registry: self.registry,
            in_flight: Mutex::new(HashMap::new()),
            completions,
            backlog: Arc::clone(&backlog),
            leased: watch::Sender::new(true),
            kind_timeouts,
            hooks: self.hooks.clone(),
            queues,
        });
        tracing::info!(
            worker.id = %worker_id,
            job.kinds = ?shared.registry.kinds(),
            queues = ?self.config.queues,
            "job engine started"
        );

        // Stopping order: fetchers first (no new claims), then in-flight jobs, then the rest.
        let stop_claiming = shutdown.child_token();
        let stop_background = CancellationToken::new();
        let abandon_outcomes = CancellationToken::new();
        let completer = tokio::spawn(complete::run(
            self.pool.clone(),
            worker_id,
            Arc::clone(&backlog),
            shared.queues.values().cloned().collect(),
            completion_rx,
            abandon_outcomes.clone(),
        ));
        let mut background = JoinSet::new();
        background.spawn(lease::run(
            Arc::clone(&shared),
            hostname,
            self.pool.connect_options(),
            stop_background.clone(),
        ));
        background.spawn(wake::run(Arc::clone(&shared), stop_background.clone()));
        background.spawn(wake::report_queues(
            Arc::clone(&shared),
            stop_background.clone(),
        ));
        background.spawn(tally::run(Arc::clone(&shared), stop_background.clone()));

        // One apalis worker per queue, all under apalis's Monitor: it starts them, reports their
        // lifecycle (start, stop, exit, errors) and stops them when claiming stops; each drains
        // the jobs it started before it exits.
        let mut fetchers = JoinSet::new();
        let mut buffers = Vec::new();
        let mut monitor = Monitor::new().on_event({
            let hooks = self.hooks.clone();
            move |worker, event| worker_event(&hooks, worker.name(), event)
        });
        for (queue, concurrency) in &self.config.queues {
            let Some(state) = shared.queues.get(queue).cloned() else {
                continue;
            };
            // Room for every job the fetcher may hold: the slots and the claim-ahead buffer.
            let (tx, rx) = mpsc::channel((*concurrency + self.config.claim_batch).max(1));
            let buffer = Arc::new(backend::Buffer::new(rx));
            buffers.push(Arc::clone(&buffer));
            fetchers.spawn(wake::fetch(
                Arc::clone(&shared),
                state,
                tx,
                stop_claiming.clone(),
            ));
            let name = format!("{queue}@{worker_id}");
            let shared = Arc::clone(&shared);
            let slots = *concurrency;
            // apalis's concurrency limit is the queue's slots: apalis takes a job from the
            // buffer only once the limit is ready for it, so buffered jobs wait unstarted. The
            // layers below it are the attempt, outside in (`execute`).
            monitor = monitor.register(move |_restarts| {
                WorkerBuilder::new(name.clone())
                    .backend(backend::ClaimedJobs {
                        buffer: Arc::clone(&buffer),
                        shared: Arc::clone(&shared),
                    })
                    .concurrency(slots)
                    .build(execute::service(Arc::clone(&shared)))
            });
        }
        let stopped = stop_claiming.clone();
        let monitor = tokio::spawn(monitor.run_with_signal(async move {
            stopped.cancelled().await;
            Ok(())
        }));

        shutdown.cancelled().await;
        // Claimed ahead and not started: back to the queue at once, attempts unspent, for
        // other workers to take while this one finishes its running jobs.
        let given_back: usize = buffers.iter().map(|b| b.give_back(&shared)).sum();
        tracing::info!(
            in_flight = shared.in_flight_count(),
            given_back,
            "shutting down: no new claims"
        );
        let deadline = tokio::time::Instant::now() + self.config.shutdown_timeout;
        while shared.in_flight_count() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let handed_back = shared.stop_jobs(None, StopReason::HandBack);
        if handed_back > 0 {
            tracing::warn!(jobs = handed_back, "shutdown deadline: handing jobs back");
        }
        // The monitor returns once every worker has finished the jobs it started.
        match monitor.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "apalis's monitor reported failed workers"),
            Err(error) => tracing::error!(%error, "apalis's monitor did not finish"),
        }
        while fetchers.join_next().await.is_some() {}
        stop_background.cancel();
        while background.join_next().await.is_some() {}
        // Every job has reported its outcome; dropping the last sender lets the completer
        // flush and finish. It keeps trying while Postgres is away, for at most the shutdown
        // timeout; what it then abandons comes back through the lease (never lost).
        drop(shared);
        let mut completer = completer;
        let flushed = tokio::time::timeout(self.config.shutdown_timeout, &mut completer).await;
        if flushed.is_err() {
            abandon_outcomes.cancel();
            if let Err(error) = completer.await {
                tracing::error!(%error, "the completer did not finish");
            }
        }
        if let Err(error) = lease::deregister(&self.pool, worker_id).await {
            tracing::warn!(%error, "could not deregister; the row expires with its heartbeat");
        }
        self.pool.close().await;
        tracing::info!("job engine stopped");
        Ok(())
    }
}

/// Rescues the running jobs of workers silent for longer than `rescue_after` (the maintenance
/// job's backstop; live workers do the same on every heartbeat). Returns how many.
///
/// # Errors
/// A database error.
pub async fn rescue(pool: &PgPool, rescue_after: Duration) -> Result<i64, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    lease::beat(&mut conn, None, "", &[], rescue_after)
        .await
        .map(|b| b.rescued)
}
