//! The completer: every outcome of this worker goes through one channel and is written in
//! batches — whatever is waiting when the previous write returns, up to `MAX_BATCH` — so an idle
//! worker writes at once and a busy one amortises a round trip over hundreds of jobs.
//!
//! Each write is fenced on `(id, attempt, worker_id, state = 'running')`: an outcome for an
//! attempt that was rescued or re-claimed meanwhile changes nothing.
//!
//! Nothing is dropped while the process lives: a batch that fails because Postgres is away is
//! kept and retried until it is written (the fetchers stop claiming while the backlog is over
//! its limit, so memory stays bounded); a batch that Postgres refuses is split until the refused
//! outcome is found, which is recorded in a form Postgres accepts, and the rest is written.

use std::{
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, future::BoxFuture};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const MAX_BATCH: usize = 2_000;

/// While jobs are running or waiting in a buffer, a batch smaller than this waits up to
/// [`GATHER_FOR`] for more outcomes, so that one statement and one commit serve many (an idle
/// worker's single outcome is written at once).
const GATHER_UNTIL: usize = 200;
const GATHER_FOR: Duration = Duration::from_millis(1);

/// The longest pause between two tries of a batch while Postgres is away.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The row change one attempt's outcome asks for.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub(crate) id: Uuid,
    pub(crate) attempt: i32,
    pub(crate) state: &'static str,
    /// The next `run_at` for `retryable`, `scheduled` (snooze) and `available` (handed back).
    pub(crate) run_at: Option<DateTime<Utc>>,
    /// Appended to `errors` when present.
    pub(crate) error: Option<serde_json::Value>,
    /// -1 for outcomes that do not spend an attempt (snooze, hand-back).
    pub(crate) attempt_delta: i32,
}

/// Outcomes reported and not yet written.
#[derive(Debug, Default)]
pub(crate) struct Backlog {
    count: AtomicUsize,
    /// Signalled whenever outcomes have been written.
    pub(crate) freed: Notify,
}

impl Backlog {
    pub(crate) fn len(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Called once per outcome (the hot path): a counter only; the gauge follows each write.
    pub(crate) fn added(&self, n: usize) {
        self.count.fetch_add(n, Ordering::SeqCst);
    }

    /// Called once per written batch: updates `zoark_worker_outcome_backlog` and wakes the
    /// fetchers waiting for room.
    pub(crate) fn written(&self, n: usize) {
        let now = self.count.fetch_sub(n, Ordering::SeqCst).saturating_sub(n);
        metrics::gauge!("zoark_worker_outcome_backlog").set(now as f64);
        self.freed.notify_waiters();
    }
}

pub(crate) async fn run(
    pool: PgPool,
    worker_id: Uuid,
    backlog: std::sync::Arc<Backlog>,
    queues: Vec<std::sync::Arc<super::queue::QueueState>>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    abandon: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // Held jobs beyond the outcomes in hand (a job may report just before it releases its
        // slot) mean more outcomes are on their way.
        let held: usize = queues.iter().map(|q| q.held()).sum();
        if batch.len() < GATHER_UNTIL && held > batch.len() {
            let until = tokio::time::Instant::now() + GATHER_FOR;
            while batch.len() < GATHER_UNTIL {
                let room = MAX_BATCH - batch.len();
                let more = rx.recv_many(&mut batch, room);
                match tokio::time::timeout_at(until, more).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        if abandon.is_cancelled() {
            tracing::error!(
                outcomes = batch.len() + rx.len(),
                "shutting down with job outcomes unwritten; those jobs come back through the lease"
            );
            backlog.written(batch.len());
            batch.clear();
            continue;
        }
        let written = write_all(&pool, worker_id, &batch, &abandon).await;
        if written.stale > 0 {
            tracing::warn!(
                outcomes = written.stale,
                "outcomes for attempts this worker no longer holds were ignored"
            );
        }
        backlog.written(batch.len());
        batch.clear();
    }
}

#[derive(Debug, Default)]
struct Written {
    /// Outcomes whose attempt this worker no longer held (rescued meanwhile): no-ops.
    stale: u64,
}

/// Errors after which the same statement may well succeed: the connection, the server's
/// availability or a transient conflict. Everything else is Postgres refusing the data.
fn transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e.code().is_none_or(|code| {
            ["08", "53", "57", "58", "40"]
                .iter()
                .any(|class| code.starts_with(class))
                || code == "55P03"
        }),
        sqlx::Error::PoolClosed => false,
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::WorkerCrashed => true,
        _ => false,
    }
}

/// Writes `batch`, retrying while Postgres is away (until `abandon`), splitting it when
/// Postgres refuses it to find and record the outcome at fault.
fn write_all<'a>(
    pool: &'a PgPool,
    worker_id: Uuid,
    batch: &'a [Completion],
    abandon: &'a CancellationToken,
) -> BoxFuture<'a, Written> {
    async move {
        let mut delay = Duration::from_millis(50);
        let mut tries = 0u32;
        loop {
            match write(pool, worker_id, batch).await {
                Ok(applied) => {
                    if tries > 0 {
                        tracing::info!(outcomes = batch.len(), tries, "job outcomes written");
                    }
                    return Written {
                        stale: (batch.len() as u64).saturating_sub(applied),
                    };
                }
                Err(error) if transient(&error) => {
                    tries += 1;
                    if tries == 1 || tries.is_multiple_of(30) {
                        tracing::warn!(%error, tries, outcomes = batch.len(), "writing job outcomes failed; keeping them and retrying");
                    }
                    tokio::select! {
                        () = abandon.cancelled() => return Written::default(),
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(MAX_RETRY_DELAY);
                }
                Err(error) if batch.len() > 1 => {
                    tracing::warn!(%error, outcomes = batch.len(), "Postgres refused a batch of job outcomes; splitting it to find the one at fault");
                    let (left, right) = batch.split_at(batch.len() / 2);
                    let l = write_all(pool, worker_id, left, abandon).await;
                    let r = write_all(pool, worker_id, right, abandon).await;
                    return Written {
                        stale: l.stale + r.stale,
                    };
                }
                Err(error) => return record_refused(pool, worker_id, &batch[0], &error).await,
            }
        }
    }
    .boxed()
}

/// One outcome Postgres refuses (an error text it cannot store, say): the attempt is recorded
/// with the same state and a plain error saying why its own could not be written. If even that
/// is refused, the outcome is given up and the job's deadline brings it back.
async fn record_refused(
    pool: &PgPool,
    worker_id: Uuid,
    outcome: &Completion,
    error: &sqlx::Error,
) -> Written {
    let reason = format!("{error}").replace('\0', "");
    tracing::error!(job.id = %outcome.id, error = %reason, "Postgres refused this job's outcome; recording a plain one instead");
    metrics::counter!("zoark_job_outcomes_refused_total").increment(1);
    let plain = Completion {
        error: Some(json!({
            "attempt": outcome.attempt,
            "at": Utc::now(),
            "kind": "outcome_refused",
            "error": format!("the attempt's outcome could not be written ({reason}); recorded as {}", outcome.state),
        })),
        ..outcome.clone()
    };
    match write(pool, worker_id, std::slice::from_ref(&plain)).await {
        Ok(applied) => Written {
            stale: 1u64.saturating_sub(applied),
        },
        Err(error) => {
            tracing::error!(job.id = %outcome.id, %error, "giving up this job's outcome; its deadline will return it to the queue");
            Written::default()
        }
    }
}

async fn write(pool: &PgPool, worker_id: Uuid, batch: &[Completion]) -> Result<u64, sqlx::Error> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut attempts = Vec::with_capacity(n);
    let mut states = Vec::with_capacity(n);
    let mut run_ats = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut deltas = Vec::with_capacity(n);
    for c in batch {
        ids.push(c.id);
        attempts.push(c.attempt);
        states.push(c.state.to_owned());
        run_ats.push(c.run_at);
        errors.push(c.error.clone());
        deltas.push(c.attempt_delta);
    }
    let discarded: Vec<Uuid> = batch
        .iter()
        .filter(|c| c.state == "discarded")
        .map(|c| c.id)
        .collect();
    let query = sqlx::query_file!(
        "src/engine/sql/complete.sql",
        &ids,
        &attempts,
        &states,
        &run_ats as &[Option<DateTime<Utc>>],
        &errors as &[Option<serde_json::Value>],
        &deltas,
        worker_id,
    );
    if discarded.is_empty() {
        return Ok(query.execute(pool).await?.rows_affected());
    }
    // Discarded jobs may be webhook events: emitted in the transaction that discards them.
    let mut tx = pool.begin().await?;
    let result = query.execute(&mut *tx).await?;
    emit_discarded(&mut tx, &discarded).await?;
    tx.commit().await?;
    Ok(result.rows_affected())
}

/// Emits `job.discarded` for those of `ids` this transaction discarded, in a savepoint: the
/// job outcomes matter more than the events, so a failure is logged and the outcomes kept.
pub(crate) async fn emit_discarded(
    tx: &mut sqlx::PgConnection,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut savepoint = sqlx::Connection::begin(&mut *tx).await?;
    match zoark_jobs::webhooks::emit_jobs_discarded(&mut savepoint, ids).await {
        Ok(_) => savepoint.commit().await,
        Err(error) => {
            tracing::error!(%error, jobs = ids.len(), "emitting job.discarded failed; the events are lost");
            savepoint.rollback().await
        }
    }
}
