//! The completer: every outcome of this worker goes through one channel and is written in
//! batches — whatever is waiting when the previous write returns, up to `MAX_BATCH` — so an idle
//! worker writes at once and a busy one amortises a round trip over hundreds of jobs.
//!
//! Each write is fenced on `(id, attempt, worker_id, state = 'running')`: an outcome for an
//! attempt that was rescued or re-claimed meanwhile changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::mpsc;
use uuid::Uuid;

const MAX_BATCH: usize = 2_000;

/// The row change one attempt's outcome asks for.
#[derive(Debug)]
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

pub(crate) async fn run(
    pool: PgPool,
    worker_id: Uuid,
    mut rx: mpsc::UnboundedReceiver<Completion>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        write_with_retry(&pool, worker_id, &batch).await;
        batch.clear();
    }
}

/// Keeps trying while Postgres is unreachable: an outcome is only lost if the process dies,
/// and then the lease expires and the job is rescued (never silently dropped).
async fn write_with_retry(pool: &PgPool, worker_id: Uuid, batch: &[Completion]) {
    let mut delay = Duration::from_millis(50);
    for attempt in 1.. {
        match write(pool, worker_id, batch).await {
            Ok(applied) => {
                let stale = batch.len() as u64 - applied;
                if stale > 0 {
                    tracing::warn!(
                        outcomes = stale,
                        "outcomes for attempts this worker no longer holds were ignored"
                    );
                }
                return;
            }
            Err(error) if attempt < 40 => {
                tracing::warn!(%error, attempt, outcomes = batch.len(), "writing job outcomes failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(error) => {
                tracing::error!(
                    %error,
                    outcomes = batch.len(),
                    "giving up writing job outcomes; the jobs will be rescued when this worker's lease expires"
                );
                return;
            }
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
