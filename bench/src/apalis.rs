//! apalis-postgres 1.0 stock, as a Rust user would pick it instead of Zoark: one
//! `PostgresStorage` per process set up as its README's pub/sub example (`with_pubsub`, one
//! `LISTEN` per process, plus an interval poll as the backstop: 5 s, as there and as Zoark's),
//! a fetch batch as large as the other systems' (`Config::batch_size`, which its docs name as the
//! throughput knob), apalis's `concurrency` layer for the slots, and every other setting at its
//! default (tasks locked while running, results persisted, so that a finished task is `Done` in
//! `apalis.jobs`).
//!
//! The backstop matters: apalis's `PollWith` drops a notification that arrives while a fetch is
//! in flight, so a task inserted then waits for the next poll (seen as pickup-latency outliers).
//!
//! The job contract lives here so that the worker process and the benchmark that enqueues agree.

use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::{
    BackendExt as _, BoxDynError, Data, Strategy, TaskBuilder, WorkerBuilder, WorkerBuilderExt as _,
};
use apalis_postgres::{Config, PgPool, PgTask, PostgresStorage};
use serde::{Deserialize, Serialize};

/// The queue (apalis's `job_type`) every benchmark task goes to.
pub const QUEUE: &str = "bench";

/// Unfinished tasks of [`QUEUE`] that can still be fetched: exactly the predicate of apalis's
/// partial index `idx_apalis_jobs_fetch_partial`, so this check walks an index.
pub const PENDING_SQL: &str = "SELECT EXISTS (SELECT 1 FROM apalis.jobs WHERE job_type = 'bench' \
     AND (status = 'Pending' OR (status = 'Failed' AND attempts < max_attempts)))";

/// Every unfinished task of [`QUEUE`], fetched ones included (`Queued`, `Running`). No index of
/// apalis's covers those, so the benchmark asks this only once [`PENDING_SQL`] is false.
pub const UNFINISHED_SQL: &str = "SELECT EXISTS (SELECT 1 FROM apalis.jobs WHERE job_type = 'bench' \
     AND (status IN ('Pending', 'Queued', 'Running') \
          OR (status = 'Failed' AND attempts < max_attempts)))";

/// The interval poll behind the pub/sub wake-up.
const BACKSTOP: Duration = Duration::from_secs(5);

/// One benchmark task.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BenchJob {
    /// Does nothing.
    Noop,
    /// Sleeps `ms` milliseconds.
    Sleep { ms: u64 },
    /// Sends `NOTIFY bench_ping, '<id>'` (pickup latency).
    Ping { id: String },
}

impl BenchJob {
    /// The task as `push_tasks` takes it: the JSON bytes apalis's default codec decodes.
    pub fn task(&self) -> anyhow::Result<PgTask> {
        Ok(TaskBuilder::new(serde_json::to_vec(self)?).build())
    }
}

/// Runs one worker until SIGTERM: `concurrency` slots, fetching up to `batch` tasks at a time.
pub async fn run_worker(url: &str, concurrency: usize, batch: usize) -> anyhow::Result<()> {
    let pool = PgPool::connect(url)
        .await
        .context("connecting to the database")?;
    let config = Config::default().queue(QUEUE).batch_size(batch.max(1));
    let backend = PostgresStorage::<BenchJob>::new(&pool)
        .with_config(config)
        .with_pubsub()
        .poll_with_strategy(Strategy::new().interval(BACKSTOP));
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let worker = WorkerBuilder::new(format!("bench-{}", std::process::id()))
        .backend(backend)
        .data(pool)
        .concurrency(concurrency.max(1))
        .build(handle);
    println!("ready");
    worker
        .run_until(async move {
            terminate.recv().await;
            Ok::<(), std::io::Error>(())
        })
        .await
        .context("running the apalis worker")?;
    Ok(())
}

async fn handle(job: BenchJob, pool: Data<PgPool>) -> Result<(), BoxDynError> {
    match job {
        BenchJob::Noop => {}
        BenchJob::Sleep { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
        BenchJob::Ping { id } => {
            sqlx::query("SELECT pg_notify('bench_ping', $1)")
                .bind(id)
                .execute(&*pool)
                .await?;
        }
    }
    Ok(())
}
