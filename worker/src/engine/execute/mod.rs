//! One attempt of one job, as tower layers on its queue's apalis worker. From the outside in:
//!
//! | layer | whose | what it does |
//! |---|---|---|
//! | `concurrency(slots)` | apalis (tower's limit), on the builder | takes a job from the claim-ahead buffer only when a slot is free |
//! | apalis's lifecycle | apalis, always | counts the worker's running tasks, for its shutdown |
//! | [`spawn::SpawnLayer`] | ours | calls the layers below in apalis's loop (the span, the attempt's registration, the payload's decoding) and spawns the attempt they return on the tokio pool; apalis keeps the join handle |
//! | `TraceLayer` with [`span::job_span`] | apalis | the `job` span: `job.id`, `job.kind`, `job.queue`, `job.attempt`, `org.id` |
//! | [`metrics::MetricsLayer`] | ours | `zoark_jobs_total{kind,queue,state}`, `zoark_job_duration_seconds{kind}` |
//! | [`attempt::AttemptLayer`] | ours | the lease: registers the attempt in `in_flight` with its cancellation token, does not start a job handed over after the worker fenced itself or one that waited too long in the buffer, races the attempt against its token, classifies the outcome (and logs a discard at ERROR, which Sentry receives) and reports it to the completer |
//! | [`timeout::TimeoutLayer`] | ours | the job's own timeout, or its kind's |
//! | `CatchPanicLayer` | apalis | a panic, in the handler's call or its future, becomes a `panic` error with its message |
//! | [`handler::RunHandler`] | ours | decodes the payload and runs the registered handler |
//!
//! The layers below the attempt layer speak in [`AttemptError`]; the attempt layer turns every
//! result into a [`Settled`] attempt, so apalis sees no service errors: retries, snoozes and
//! discards are the engine's, written to the `jobs` row by the completer.

pub(crate) mod attempt;
pub(crate) mod handler;
pub(crate) mod metrics;
pub(crate) mod span;
pub(crate) mod spawn;
pub(crate) mod timeout;

use std::{sync::Arc, time::Duration};

use tower_layer::Layer as _;

use super::{
    Claimed, Shared,
    registry::{ErasedRun, JobContext, JobError},
};

/// The service each queue's apalis worker is built with: the layers of the table above, around
/// the handler. They are composed here rather than added with `WorkerBuilder::layer`, because
/// apalis puts its own lifecycle layer (which counts the worker's tasks for its shutdown)
/// between the builder's layers and this service: inside the spawned attempt it would wake
/// the worker's loop from the job's thread once more per job; outside, as here, it is polled
/// in the loop, with the join handle.
pub(crate) fn service(
    shared: Arc<Shared>,
) -> spawn::Spawn<
    impl tower_service::Service<
        apalis::prelude::Task<Job>,
        Response = (),
        Error = std::convert::Infallible,
        Future: Send + 'static,
    >,
> {
    spawn::SpawnLayer.layer(span::layer().layer(
        metrics::MetricsLayer.layer(
            attempt::AttemptLayer { shared }.layer(
                timeout::TimeoutLayer.layer(handler::panic_guard().layer(handler::RunHandler)),
            ),
        ),
    ))
}

/// What apalis hands each layer: the claimed job, until the attempt layer starts it.
pub(crate) enum Job {
    /// As the fetcher claimed it.
    Claimed(Claimed),
    /// Started by the attempt layer: what the handler needs.
    Started(Start),
    /// Taken by the layer that consumed it.
    Taken,
}

/// An attempt the attempt layer started.
pub(crate) struct Start {
    pub(crate) args: serde_json::Value,
    pub(crate) ctx: JobContext,
    pub(crate) run: ErasedRun,
    pub(crate) timeout: Duration,
}

/// How an attempt failed below the attempt layer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// The payload does not decode as the kind's contract.
    #[error("{0}")]
    Undecodable(String),
    #[error("the attempt exceeded its timeout of {0:?}")]
    Timeout(Duration),
    /// The full message, `the handler panicked: …`.
    #[error("{0}")]
    Panic(String),
    /// The handler's own result.
    #[error("the handler returned {0:?}")]
    Handler(JobError),
}

/// An attempt as the attempt layer settled it, for the metrics layer.
#[derive(Debug, Default)]
pub(crate) struct Settled {
    /// The `state` label; `None` when nothing is recorded (this worker lost its lease).
    pub(crate) state: Option<&'static str>,
    pub(crate) kind: String,
    pub(crate) queue: String,
    pub(crate) elapsed: Duration,
}

/// The wait before retrying a job this worker cannot run (unknown kind, payload it cannot
/// decode): long enough for a rolling deploy to bring the worker that can, at least
/// [`ROLLOUT_BACKOFF`] and never less than the usual backoff.
pub(crate) fn rollout_backoff(attempt: i32) -> Duration {
    zoark_jobs::backoff(attempt).max(ROLLOUT_BACKOFF)
}

/// See [`rollout_backoff`].
pub(crate) const ROLLOUT_BACKOFF: Duration = Duration::from_secs(300);
