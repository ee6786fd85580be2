//! The attempt's timeout: the job's own (`Opts::timeout`, capped by the configuration) or its
//! kind's `TIMEOUT`, set per attempt by the attempt layer. tower's `TimeoutLayer` has one
//! duration for every request, and its error would not say which timeout was exceeded.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use apalis::prelude::{BoxDynError, Task};
use tower_layer::Layer;
use tower_service::Service;

use super::{AttemptError, Job};

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TimeoutLayer;

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeLimit { inner }
    }
}

/// Not named `Timeout`: apalis warns when a service of that name sits inside its `Trace` (a
/// timeout would escape the span's record). Here it sits inside on purpose: the attempt layer,
/// inside the span too, turns it into the attempt's outcome and logs it.
#[derive(Debug, Clone)]
pub(crate) struct TimeLimit<S> {
    inner: S,
}

impl<S> Service<Task<Job>> for TimeLimit<S>
where
    S: Service<Task<Job>, Response = ()>,
    S::Error: Into<BoxDynError>,
{
    type Response = ();
    type Error = BoxDynError;
    type Future = TimedOut<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Job>) -> Self::Future {
        let limit = match &task.args {
            Job::Started(start) => start.timeout,
            Job::Claimed(_) | Job::Taken => Duration::MAX,
        };
        TimedOut {
            inner: tokio::time::timeout(limit, self.inner.call(task)),
            limit,
        }
    }
}

pin_project_lite::pin_project! {
    pub(crate) struct TimedOut<F> {
        #[pin]
        inner: tokio::time::Timeout<F>,
        limit: Duration,
    }
}

impl<F, E> Future for TimedOut<F>
where
    F: Future<Output = Result<(), E>>,
    E: Into<BoxDynError>,
{
    type Output = Result<(), BoxDynError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(result) => result.map_err(Into::into),
            Err(_) => Err(Box::new(AttemptError::Timeout(*this.limit))),
        })
    }
}
