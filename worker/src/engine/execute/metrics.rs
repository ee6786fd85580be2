//! `zoark_jobs_total{kind,queue,state}` and `zoark_job_duration_seconds{kind}`, once per settled
//! attempt (nothing for an attempt this worker lost with its lease: its outcome is a peer's).
//! apalis's `PrometheusLayer` labels by the Rust type of the task, the same for every job here,
//! and by `Ok`/`Err`, which says nothing once the engine has classified the outcome.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tower_layer::Layer;
use tower_service::Service;

use super::Settled;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MetricsLayer;

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Metrics<S> {
    inner: S,
}

impl<S, R> Service<R> for Metrics<S>
where
    S: Service<R, Response = Settled, Error = Infallible>,
{
    type Response = ();
    type Error = Infallible;
    type Future = Recorded<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        Recorded {
            inner: self.inner.call(request),
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct Recorded<F> {
        #[pin]
        inner: F,
    }
}

impl<F> Future for Recorded<F>
where
    F: Future<Output = Result<Settled, Infallible>>,
{
    type Output = Result<(), Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Ok(settled) = ready!(self.project().inner.poll(cx));
        if let Some(state) = settled.state {
            // The label strings are the job's own, moved here: one copy of the kind per job.
            metrics::counter!(
                "zoark_jobs_total",
                "kind" => settled.kind.clone(),
                "queue" => settled.queue,
                "state" => state
            )
            .increment(1);
            metrics::histogram!("zoark_job_duration_seconds", "kind" => settled.kind)
                .record(settled.elapsed.as_secs_f64());
        }
        Poll::Ready(Ok(()))
    }
}
