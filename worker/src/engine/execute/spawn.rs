//! Runs each job on the tokio pool (both cores): apalis's loop polls one task per queue, and a
//! job polled inside it would share that task with every other job of the queue. The layers
//! below are called in apalis's loop (a few steps: the span, the attempt's registration, the
//! payload's decoding), and the attempt they return is spawned. The future apalis keeps is the
//! join handle, so the concurrency limit's permit is held until the job has settled, and a
//! worker shutting down waits for its running jobs.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::task::JoinHandle;
use tower_layer::Layer;
use tower_service::Service;

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SpawnLayer;

impl<S> Layer<S> for SpawnLayer {
    type Service = Spawn<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Spawn { inner }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Spawn<S> {
    inner: S,
}

impl<S, R> Service<R> for Spawn<S>
where
    S: Service<R, Response = (), Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = Infallible;
    type Future = Joined;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        // Calling the layers here rather than in the task spares a clone of the whole stack
        // (apalis's worker context among it) per job.
        Joined(tokio::spawn(self.inner.call(request)))
    }
}

/// A spawned attempt.
pub(crate) struct Joined(JoinHandle<Result<(), Infallible>>);

impl Future for Joined {
    type Output = Result<(), Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(result)) => Poll::Ready(result),
            Poll::Ready(Err(error)) => {
                // Panics are caught below; a join error means the runtime is shutting down,
                // and the lease makes the job run again elsewhere.
                tracing::error!(%error, "a job task did not finish");
                Poll::Ready(Ok(()))
            }
        }
    }
}
