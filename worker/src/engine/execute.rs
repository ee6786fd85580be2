//! One attempt of one job: a span with `job.id`, `job.kind`, `org.id`; the handler raced
//! against its timeout and its cancellation token; panics caught; the outcome classified into a
//! row change for the completer, a metric and (for failures) a log event that Sentry receives.

use std::{
    future::Future,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::Utc;
use futures_util::FutureExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    Claimed, InFlight, Shared, StopReason,
    complete::Completion,
    registry::{JobContext, JobError, JobResult},
};

/// What happened to the attempt.
enum Outcome {
    Completed,
    /// `delay` overrides the contract's backoff.
    Failed {
        kind: &'static str,
        error: String,
        delay: Option<std::time::Duration>,
    },
    Fatal {
        kind: &'static str,
        error: String,
    },
    Snoozed(std::time::Duration),
    Stopped(StopReason),
}

pub(crate) async fn run(shared: Arc<Shared>, job: Claimed) {
    let span = tracing::info_span!(
        "job",
        job.id = %job.id,
        job.kind = %job.kind,
        job.queue = %job.queue,
        job.attempt = job.attempt,
        org.id = job.organization_id.map(|o| o.to_string()),
    );
    attempt(shared, job).instrument(span).await;
}

async fn attempt(shared: Arc<Shared>, job: Claimed) {
    let started = Instant::now();
    let token = CancellationToken::new();
    if let Ok(mut in_flight) = shared.in_flight.lock() {
        in_flight.insert(
            job.id,
            InFlight {
                token: token.clone(),
                reason: None,
            },
        );
    }
    let registered = shared.registry.get(&job.kind).cloned();
    let waited = job.claimed_at.elapsed();
    let outcome = if !*shared.leased.borrow() {
        // Handed over just before this worker fenced itself: never started, so never run
        // beside the worker that may rescue it.
        Outcome::Stopped(StopReason::LeaseLost)
    } else if waited > shared.config.rescue_after / 2 {
        // Waited in the claim-ahead buffer for half of its deadline's margin (jobs ahead of it
        // took far longer than the queue's pace): back to the queue rather than run against a
        // deadline that has been running since the claim.
        tracing::warn!(
            waited_ms = waited.as_millis() as u64,
            "claimed job waited too long for a slot; giving it back"
        );
        Outcome::Stopped(StopReason::HandBack)
    } else {
        match registered {
            // Another version of the worker may know it (a rolling deploy): retried later,
            // discarded only once its attempts are spent.
            None => Outcome::Failed {
                kind: "unknown_kind",
                error: format!(
                    "no handler for job kind `{}` in this worker (kinds: {})",
                    job.kind,
                    shared.registry.kinds().join(", ")
                ),
                delay: Some(rollout_backoff(job.attempt)),
            },
            Some(registered) => {
                let ctx = JobContext {
                    id: job.id,
                    attempt: job.attempt,
                    max_attempts: job.max_attempts,
                    organization_id: job.organization_id,
                    cancelled: token.clone(),
                };
                let timeout = job
                    .timeout
                    .map_or(registered.timeout, |t| t.min(shared.config.max_timeout));
                match (registered.run)(job.args.clone(), ctx) {
                    Err(error) => Outcome::Failed {
                        kind: "undecodable",
                        error,
                        delay: Some(rollout_backoff(job.attempt)),
                    },
                    Ok(handler) => {
                        let handler = AssertUnwindSafe(handler).catch_unwind();
                        run_handler(&shared, &job, &token, handler, timeout).await
                    }
                }
            }
        }
    };
    let backoff = shared
        .registry
        .get(&job.kind)
        .map_or(zoark_jobs::backoff as fn(i32) -> std::time::Duration, |r| {
            r.backoff
        });
    let elapsed = started.elapsed();
    job.held.queue().record(elapsed);
    let completion = classify(&job, outcome, backoff, elapsed);
    if let Ok(mut in_flight) = shared.in_flight.lock() {
        in_flight.remove(&job.id);
    }
    drop(job.held);
    if let Some(completion) = completion {
        // The receiver lives until every job has reported; a send error means the process is
        // already tearing down, and the lease brings the job back.
        shared.report(completion);
    }
}

fn classify(
    job: &Claimed,
    outcome: Outcome,
    backoff: fn(i32) -> std::time::Duration,
    elapsed: std::time::Duration,
) -> Option<Completion> {
    let now = Utc::now();
    let error_entry = |kind: &str, error: &str| json!({ "attempt": job.attempt, "at": now, "kind": kind, "error": error });
    let completion = |state, run_at, error, attempt_delta| Completion {
        id: job.id,
        attempt: job.attempt,
        state,
        run_at,
        error,
        attempt_delta,
    };
    let record = |state: &'static str| {
        metrics::counter!("zoark_jobs_total", "kind" => job.kind.clone(), "queue" => job.queue.clone(), "state" => state).increment(1);
        metrics::histogram!("zoark_job_duration_seconds", "kind" => job.kind.clone())
            .record(elapsed.as_secs_f64());
    };
    let latency = (job.run_at.signed_duration_since(now))
        .num_milliseconds()
        .abs();
    match outcome {
        Outcome::Completed => {
            record("completed");
            tracing::debug!(
                elapsed_ms = elapsed.as_millis() as u64,
                pickup_ms = latency,
                "job completed"
            );
            Some(completion("completed", None, None, 0))
        }
        Outcome::Failed { kind, error, delay } if job.attempt < job.max_attempts => {
            let delay = delay.unwrap_or_else(|| backoff(job.attempt));
            let run_at =
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
            record("retryable");
            tracing::warn!(error.kind = kind, error = %error, retry_at = %run_at, "job attempt failed; will retry");
            Some(completion(
                "retryable",
                Some(run_at),
                Some(error_entry(kind, &error)),
                0,
            ))
        }
        Outcome::Failed { kind, error, .. } | Outcome::Fatal { kind, error } => {
            record("discarded");
            // An error event: Sentry receives it when SENTRY_DSN is set. Sentry keeps the event's
            // own fields, not its span's: the job is named here again.
            tracing::error!(
                job.id = %job.id,
                job.kind = %job.kind,
                job.queue = %job.queue,
                org.id = job.organization_id.map(|o| o.to_string()),
                error.kind = kind,
                error = %error,
                attempts = job.attempt,
                "job discarded"
            );
            Some(completion(
                "discarded",
                None,
                Some(error_entry(kind, &error)),
                0,
            ))
        }
        Outcome::Snoozed(delay) => {
            let run_at =
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
            record("snoozed");
            tracing::info!(run_at = %run_at, "job snoozed");
            Some(completion("scheduled", Some(run_at), None, -1))
        }
        Outcome::Stopped(StopReason::Cancelled) => {
            record("cancelled");
            tracing::info!("running job cancelled");
            Some(completion(
                "cancelled",
                None,
                Some(error_entry("cancelled", "cancelled while running")),
                0,
            ))
        }
        Outcome::Stopped(StopReason::HandBack) => {
            record("handed_back");
            tracing::warn!("job handed back unstarted or at shutdown");
            Some(completion("available", Some(now), None, -1))
        }
        Outcome::Stopped(StopReason::LeaseLost) => None,
    }
}

/// The handler raced against its timeout and its cancellation token.
async fn run_handler(
    shared: &Shared,
    job: &Claimed,
    token: &CancellationToken,
    handler: impl Future<Output = Result<JobResult, Box<dyn std::any::Any + Send>>>,
    timeout: Duration,
) -> Outcome {
    // Biased towards the token: a handler that returns because it saw the cancellation is
    // cancelled, not completed.
    tokio::select! {
        biased;
        () = token.cancelled() => {
            let reason = shared
                .in_flight
                .lock()
                .ok()
                .and_then(|m| m.get(&job.id).and_then(|f| f.reason))
                .unwrap_or(StopReason::Cancelled);
            match reason {
                // Written fenced: a no-op if the job was rescued meanwhile, otherwise it goes
                // back to the queue as a failed attempt.
                StopReason::LeaseLost => Outcome::Failed {
                    kind: "lease_lost",
                    error: "this worker lost contact with Postgres and stopped the attempt".into(),
                    delay: None,
                },
                reason => Outcome::Stopped(reason),
            }
        }
        result = tokio::time::timeout(timeout, handler) => match result {
            Err(_) => Outcome::Failed {
                kind: "timeout",
                error: format!("the attempt exceeded its timeout of {timeout:?}"),
                delay: None,
            },
            Ok(Err(panic)) => Outcome::Failed { kind: "panic", error: panic_message(&panic), delay: None },
            Ok(Ok(Ok(()))) => Outcome::Completed,
            Ok(Ok(Err(JobError::Retry(e)))) => Outcome::Failed { kind: "error", error: format!("{e:#}"), delay: None },
            Ok(Ok(Err(JobError::RetryAfter(e, delay)))) => Outcome::Failed { kind: "error", error: format!("{e:#}"), delay: Some(delay) },
            Ok(Ok(Err(JobError::Fatal(e)))) => Outcome::Fatal { kind: "fatal", error: format!("{e:#}") },
            Ok(Ok(Err(JobError::Snooze(d)))) => Outcome::Snoozed(d),
        },
    }
}

/// The wait before retrying a job this worker cannot run (unknown kind, payload it cannot
/// decode): long enough for a rolling deploy to bring the worker that can, at least
/// [`ROLLOUT_BACKOFF`] and never less than the usual backoff.
fn rollout_backoff(attempt: i32) -> Duration {
    zoark_jobs::backoff(attempt).max(ROLLOUT_BACKOFF)
}

/// See [`rollout_backoff`].
pub(crate) const ROLLOUT_BACKOFF: Duration = Duration::from_secs(300);

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into());
    format!("the handler panicked: {detail}")
}
