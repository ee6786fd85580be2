//! The attempt layer: what only the engine knows. It registers the attempt in `in_flight` with
//! its cancellation token; does not start a job handed over after this worker fenced itself
//! (its lease is not good: a peer may rescue it) nor one that waited half the rescue window in
//! the claim-ahead buffer (its deadline has been running since the claim); answers an unknown
//! kind without running anything; races the attempt against its token (biased towards the
//! token: a handler that returns because it saw the cancellation is cancelled, not completed);
//! then classifies the outcome into the row change the completer writes, logs it (a discard at
//! ERROR: Sentry receives it) and reports it.
//!
//! Why not apalis's `SentryLayer`: it takes the task id for the event id of every event in the
//! scope and adds an event processor to the hub's scope per task that is never removed; it tags
//! the queue with the Rust type of the task (the same for every job here); and it reports the
//! service's errors, while here a failed attempt that will be retried is not an alert, and a
//! discard is classified by this layer, which logs it at ERROR with the job's fields for
//! Sentry's tracing integration.

use std::{
    convert::Infallible,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, Instant},
};

use apalis::prelude::{BoxDynError, Task};
use chrono::Utc;
use serde_json::json;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower_layer::Layer;
use tower_service::Service;

use super::{AttemptError, Job, Settled, Start, rollout_backoff};
use crate::engine::{
    Claimed, InFlight, Shared, StopReason, complete::Completion, registry::JobContext,
    registry::JobError,
};

#[derive(Clone)]
pub(crate) struct AttemptLayer {
    pub(crate) shared: Arc<Shared>,
}

impl<S> Layer<S> for AttemptLayer {
    type Service = AttemptService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AttemptService {
            shared: Arc::clone(&self.shared),
            inner,
        }
    }
}

#[derive(Clone)]
pub(crate) struct AttemptService<S> {
    shared: Arc<Shared>,
    inner: S,
}

/// What happened to the attempt.
enum Outcome {
    Completed,
    /// `delay` overrides the contract's backoff.
    Failed {
        kind: &'static str,
        error: String,
        delay: Option<Duration>,
    },
    Fatal {
        kind: &'static str,
        error: String,
    },
    Snoozed(Duration),
    Stopped(StopReason),
}

impl<S> Service<Task<Job>> for AttemptService<S>
where
    S: Service<Task<Job>, Response = (), Error = BoxDynError>,
{
    type Response = Settled;
    type Error = Infallible;
    type Future = Attempt<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The layers below never refuse a job; their readiness errors would be a bug.
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, mut task: Task<Job>) -> Self::Future {
        let started = Instant::now();
        let Job::Claimed(mut job) = std::mem::replace(&mut task.args, Job::Taken) else {
            return Attempt {
                inner: None,
                cancelled: None,
                ready: None,
                ticket: None,
            };
        };
        let shared = &self.shared;
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
        let registered = shared.registry.get(&job.kind);
        let backoff = registered.map_or(zoark_jobs::backoff as fn(i32) -> Duration, |r| r.backoff);
        let waited = job.claimed_at.elapsed();
        let not_started = if !*shared.leased.borrow() {
            // Handed over just before this worker fenced itself: never started, so never run
            // beside the worker that may rescue it.
            Some(Outcome::Stopped(StopReason::LeaseLost))
        } else if waited > shared.config.rescue_after / 2 {
            // Waited in the claim-ahead buffer for half of its deadline's margin (jobs ahead of
            // it took far longer than the queue's pace): back to the queue rather than run
            // against a deadline that has been running since the claim.
            tracing::warn!(
                waited_ms = waited.as_millis() as u64,
                "claimed job waited too long for a slot; giving it back"
            );
            Some(Outcome::Stopped(StopReason::HandBack))
        } else if registered.is_none() {
            // Another version of the worker may know it (a rolling deploy): retried later,
            // discarded only once its attempts are spent.
            Some(Outcome::Failed {
                kind: "unknown_kind",
                error: format!(
                    "no handler for job kind `{}` in this worker (kinds: {})",
                    job.kind,
                    shared.registry.kinds().join(", ")
                ),
                delay: Some(rollout_backoff(job.attempt)),
            })
        } else {
            None
        };
        let Some(registered) = registered.filter(|_| not_started.is_none()) else {
            return Attempt {
                inner: None,
                cancelled: None,
                ready: not_started,
                ticket: Some(Ticket {
                    shared: Arc::clone(shared),
                    started,
                    backoff,
                    job,
                }),
            };
        };
        let timeout = job
            .timeout
            .map_or(registered.timeout, |t| t.min(shared.config.max_timeout));
        task.args = Job::Started(Start {
            args: std::mem::take(&mut job.args),
            ctx: JobContext {
                id: job.id,
                attempt: job.attempt,
                max_attempts: job.max_attempts,
                organization_id: job.organization_id,
                cancelled: token.clone(),
            },
            run: Arc::clone(&registered.run),
            timeout,
        });
        Attempt {
            inner: Some(self.inner.call(task)),
            cancelled: Some(token.cancelled_owned()),
            ready: None,
            ticket: Some(Ticket {
                shared: Arc::clone(shared),
                started,
                backoff,
                job,
            }),
        }
    }
}

/// What the attempt layer keeps of a job while it runs.
struct Ticket {
    shared: Arc<Shared>,
    started: Instant,
    backoff: fn(i32) -> Duration,
    /// The claimed job, its payload handed to the handler.
    job: Claimed,
}

pin_project_lite::pin_project! {
    /// One attempt: the layers below raced against the cancellation token, then settled.
    pub(crate) struct Attempt<F> {
        #[pin]
        inner: Option<F>,
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
        // An outcome decided before the handler started.
        ready: Option<Outcome>,
        ticket: Option<Ticket>,
    }
}

impl<F> Future for Attempt<F>
where
    F: Future<Output = Result<(), BoxDynError>>,
{
    type Output = Result<Settled, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(ticket) = this.ticket.as_ref() else {
            return Poll::Ready(Ok(Settled::default()));
        };
        let outcome = if let Some(outcome) = this.ready.take() {
            outcome
        } else if this
            .cancelled
            .as_mut()
            .as_pin_mut()
            .is_some_and(|c| c.poll(cx).is_ready())
        {
            stopped(ticket)
        } else {
            match this.inner.as_mut().as_pin_mut().map(|f| f.poll(cx)) {
                Some(Poll::Pending) => return Poll::Pending,
                Some(Poll::Ready(result)) => outcome_of(result, ticket.job.attempt),
                None => Outcome::Stopped(StopReason::HandBack),
            }
        };
        // The handler's future is dropped before the outcome is reported: once written, the
        // job may run elsewhere.
        this.inner.set(None);
        this.cancelled.set(None);
        let Some(ticket) = this.ticket.take() else {
            return Poll::Ready(Ok(Settled::default()));
        };
        Poll::Ready(Ok(ticket.settle(outcome)))
    }
}

/// Why the token fired, as this worker recorded it.
fn stopped(ticket: &Ticket) -> Outcome {
    let reason = ticket
        .shared
        .in_flight
        .lock()
        .ok()
        .and_then(|m| m.get(&ticket.job.id).and_then(|f| f.reason))
        .unwrap_or(StopReason::Cancelled);
    match reason {
        // Written fenced: a no-op if the job was rescued meanwhile, otherwise it goes back to
        // the queue as a failed attempt.
        StopReason::LeaseLost => Outcome::Failed {
            kind: "lease_lost",
            error: "this worker lost contact with Postgres and stopped the attempt".into(),
            delay: None,
        },
        reason => Outcome::Stopped(reason),
    }
}

fn outcome_of(result: Result<(), BoxDynError>, attempt: i32) -> Outcome {
    let error = match result {
        Ok(()) => return Outcome::Completed,
        Err(error) => error,
    };
    match error.downcast::<AttemptError>() {
        Ok(error) => match *error {
            // Another version of the worker may decode it: retried like an unknown kind.
            AttemptError::Undecodable(error) => Outcome::Failed {
                kind: "undecodable",
                error,
                delay: Some(rollout_backoff(attempt)),
            },
            AttemptError::Timeout(_) => Outcome::Failed {
                kind: "timeout",
                error: error.to_string(),
                delay: None,
            },
            AttemptError::Panic(message) => Outcome::Failed {
                kind: "panic",
                error: message,
                delay: None,
            },
            AttemptError::Handler(JobError::Retry(e)) => Outcome::Failed {
                kind: "error",
                error: format!("{e:#}"),
                delay: None,
            },
            AttemptError::Handler(JobError::RetryAfter(e, delay)) => Outcome::Failed {
                kind: "error",
                error: format!("{e:#}"),
                delay: Some(delay),
            },
            AttemptError::Handler(JobError::Fatal(e)) => Outcome::Fatal {
                kind: "fatal",
                error: format!("{e:#}"),
            },
            AttemptError::Handler(JobError::Snooze(d)) => Outcome::Snoozed(d),
        },
        // Not ours (apalis's own layers): retried like any error.
        Err(other) => Outcome::Failed {
            kind: "error",
            error: other.to_string(),
            delay: None,
        },
    }
}

impl Ticket {
    fn settle(self, outcome: Outcome) -> Settled {
        let job = self.job;
        let elapsed = self.started.elapsed();
        job.held.queue().record(elapsed);
        let (completion, state) = classify(&job, outcome, self.backoff, elapsed);
        if let Ok(mut in_flight) = self.shared.in_flight.lock() {
            in_flight.remove(&job.id);
        }
        if let Some(completion) = completion {
            // The receiver lives until every job has reported; a send error means the process
            // is already tearing down, and the lease brings the job back.
            self.shared.report(completion);
        }
        // The slot is released once the outcome is on its way, so the claim it lets the
        // fetcher send queues behind the outcome's write.
        let Claimed {
            kind, queue, held, ..
        } = job;
        drop(held);
        Settled {
            state,
            kind,
            queue,
            elapsed,
        }
    }
}

/// The row change an outcome asks for (none when this worker lost the job with its lease), and
/// the `state` label it is counted under.
fn classify(
    job: &Claimed,
    outcome: Outcome,
    backoff: fn(i32) -> Duration,
    elapsed: Duration,
) -> (Option<Completion>, Option<&'static str>) {
    let now = Utc::now();
    let duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
    let error_entry = |kind: &str, error: &str| json!({ "attempt": job.attempt, "at": now, "kind": kind, "error": error, "duration_ms": duration_ms });
    let completion = |state, run_at, error, attempt_delta| Completion {
        id: job.id,
        attempt: job.attempt,
        state,
        run_at,
        error,
        attempt_delta,
    };
    let latency = (job.run_at.signed_duration_since(now))
        .num_milliseconds()
        .abs();
    match outcome {
        Outcome::Completed => {
            tracing::debug!(
                elapsed_ms = elapsed.as_millis() as u64,
                pickup_ms = latency,
                "job completed"
            );
            (
                Some(completion("completed", None, None, 0)),
                Some("completed"),
            )
        }
        Outcome::Failed { kind, error, delay } if job.attempt < job.max_attempts => {
            let delay = delay.unwrap_or_else(|| backoff(job.attempt));
            let run_at =
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
            tracing::warn!(error.kind = kind, error = %error, retry_at = %run_at, "job attempt failed; will retry");
            (
                Some(completion(
                    "retryable",
                    Some(run_at),
                    Some(error_entry(kind, &error)),
                    0,
                )),
                Some("retryable"),
            )
        }
        Outcome::Failed { kind, error, .. } | Outcome::Fatal { kind, error } => {
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
            (
                Some(completion(
                    "discarded",
                    None,
                    Some(error_entry(kind, &error)),
                    0,
                )),
                Some("discarded"),
            )
        }
        Outcome::Snoozed(delay) => {
            let run_at =
                now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
            tracing::info!(run_at = %run_at, "job snoozed");
            (
                Some(completion("scheduled", Some(run_at), None, -1)),
                Some("snoozed"),
            )
        }
        Outcome::Stopped(StopReason::Cancelled) => {
            tracing::info!("running job cancelled");
            (
                Some(completion(
                    "cancelled",
                    None,
                    Some(error_entry("cancelled", "cancelled while running")),
                    0,
                )),
                Some("cancelled"),
            )
        }
        Outcome::Stopped(StopReason::HandBack) => {
            tracing::warn!("job handed back unstarted or at shutdown");
            (
                Some(completion("available", Some(now), None, -1)),
                Some("handed_back"),
            )
        }
        Outcome::Stopped(StopReason::LeaseLost) => (None, None),
    }
}
