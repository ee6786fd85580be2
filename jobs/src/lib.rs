//! zoark-jobs: job contracts — payload struct, stable `NAME`, queue, max attempts, timeout and
//! uniqueness — and [`enqueue`] / [`enqueue_many`] inside the caller's transaction.
//!
//! This crate is deliberately light (no HTTP, no SMTP) so the API and the scheduler can depend on
//! it. The worker's handlers in `worker/src/handlers/` mirror this crate's contract files one to
//! one. [`admin`] holds the queries behind the jobs API (list, inspect, cancel, retry, queues).

pub mod admin;
pub mod agents;
pub mod approvals;
pub mod counts;
pub mod diag;
pub mod email;
mod enqueue;
pub mod maintenance;
pub mod rag;
pub mod reminders;
pub mod webhooks;

/// The bulk enqueue statement, for `cargo xtask bench queue` to run as the raw-SQL ceiling.
pub mod sql {
    /// Streams jobs without a unique key or start time as CSV: `id, organization_id, kind,
    /// queue, args, priority, max_attempts`, NULL written `\N`.
    pub const COPY_JOBS: &str = "COPY jobs (id, organization_id, kind, queue, args, priority, max_attempts) \
                                 FROM STDIN (FORMAT csv, NULL '\\N')";
}
mod state;

use std::time::Duration;

use serde::{Serialize, de::DeserializeOwned};

pub use enqueue::{EnqueueError, Enqueued, NewJob, Opts, Priority, enqueue, enqueue_many};
pub use state::{JobState, ParseStateError};

/// A job contract. `NAME` is stable forever (it is stored in every row); renaming a type is free,
/// renaming `NAME` strands the rows already enqueued.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The kind stored in `jobs.kind`: dotted lowercase, e.g. `maintenance.prune_jobs`.
    const NAME: &'static str;
    /// The queue whose workers run it.
    const QUEUE: &'static str = "default";
    /// Attempts before the job is discarded.
    const MAX_ATTEMPTS: i32 = 20;
    /// A running attempt longer than this is failed as a timeout (and retried).
    const TIMEOUT: Duration = Duration::from_secs(60);

    /// The key that makes the job unique while unfinished, if any; [`Opts::unique_key`]
    /// overrides it.
    fn unique_key(&self) -> Option<String> {
        None
    }

    /// How long to wait before attempt `attempt + 1` after attempt `attempt` failed.
    fn backoff(attempt: i32) -> Duration {
        backoff(attempt)
    }
}

/// How far a running job has got: `done` of `total` units (chunks, for document indexing).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Progress {
    pub done: i64,
    pub total: i64,
}

/// Announces a running job's progress on `zoark_job_events`, as one more event of the job (the
/// API's event stream forwards it to the job's organization with a `progress` field). Outside
/// any transaction, so that it is sent at once.
///
/// # Errors
/// Database errors.
pub async fn report_progress<J: Job>(
    conn: &mut sqlx::PgConnection,
    job_id: uuid::Uuid,
    organization_id: uuid::Uuid,
    attempt: i32,
    progress: Progress,
) -> sqlx::Result<()> {
    let event = serde_json::json!([{
        "id": job_id,
        "organization_id": organization_id,
        "kind": J::NAME,
        "queue": J::QUEUE,
        "state": JobState::Running.as_str(),
        "attempt": attempt,
        "progress": progress,
    }]);
    sqlx::query("SELECT pg_notify('zoark_job_events', $1)")
        .bind(event.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Sidekiq's schedule: `attempt⁴ + 15 s`, plus up to 30 % random jitter so that jobs failing
/// together do not retry together. Attempt 1 → ~16 s, 5 → ~11 min, 10 → ~2.8 h, capped at a day.
pub fn backoff(attempt: i32) -> Duration {
    let attempt = u64::try_from(attempt.clamp(1, 100)).unwrap_or(1);
    let base = attempt.saturating_pow(4).saturating_add(15).min(86_400);
    let jitter = rand::random_range(0..=base.saturating_mul(3) / 10);
    Duration::from_secs(base + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_the_attempt_and_stays_within_its_jitter() {
        for attempt in 1..=12 {
            let base = (attempt as u64).pow(4) + 15;
            let d = backoff(attempt).as_secs();
            assert!(
                d >= base && d <= base + base * 3 / 10,
                "attempt {attempt}: {d}"
            );
        }
        assert!(backoff(1000).as_secs() <= 86_400 + 86_400 * 3 / 10);
    }
}
