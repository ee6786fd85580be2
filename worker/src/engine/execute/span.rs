//! The `job` span, made by apalis's `TraceLayer`: everything an attempt logs carries the job.
//! apalis's default span names a task id and attempt of its own; ours keeps the field names
//! the logs and Sentry are searched by.

use apalis::{layers::tracing::TraceLayer, prelude::Task};
use tracing::Span;

use super::Job;

/// apalis's trace layer with the job span and no per-job events of its own (the attempt layer
/// logs what happened, once).
pub(crate) type JobTraceLayer = TraceLayer<fn(&Task<Job>) -> Span, fn(&Task<Job>, &Span), (), ()>;

pub(crate) fn layer() -> JobTraceLayer {
    TraceLayer::new()
        .make_span_with(job_span as fn(&Task<Job>) -> Span)
        .on_request(quiet as fn(&Task<Job>, &Span))
        .on_response(())
        .on_failure(())
}

pub(crate) fn job_span(task: &Task<Job>) -> Span {
    match &task.args {
        Job::Claimed(job) => tracing::info_span!(
            "job",
            job.id = %job.id,
            job.kind = %job.kind,
            job.queue = %job.queue,
            job.attempt = job.attempt,
            org.id = job.organization_id.map(|o| o.to_string()),
        ),
        Job::Started(_) | Job::Taken => Span::none(),
    }
}

fn quiet(_: &Task<Job>, _: &Span) {}
