//! The innermost service: decodes the payload as the kind's contract and runs its handler; and
//! the panic guard's message (apalis's `CatchPanicLayer`, which guards the handler's call as
//! well as its future).

use std::{
    any::Any,
    task::{Context, Poll},
};

use apalis::{layers::catch_panic::CatchPanicLayer, prelude::Task};
use futures_util::{
    TryFutureExt as _,
    future::{BoxFuture, Either, Ready, ready},
};
use tower_service::Service;

use super::{AttemptError, Job};
use crate::engine::registry::{JobError, JobResult};

/// apalis's panic guard, turning a panic into [`AttemptError::Panic`].
pub(crate) type PanicGuard =
    CatchPanicLayer<fn(&Box<dyn Any + Send>) -> AttemptError, AttemptError>;

pub(crate) fn panic_guard() -> PanicGuard {
    CatchPanicLayer::with_panic_handler(panicked as fn(&Box<dyn Any + Send>) -> AttemptError)
}

fn panicked(panic: &Box<dyn Any + Send>) -> AttemptError {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-string payload".into());
    AttemptError::Panic(format!("the handler panicked: {detail}"))
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RunHandler;

type Handled = Either<
    Ready<Result<(), AttemptError>>,
    futures_util::future::MapErr<BoxFuture<'static, JobResult>, fn(JobError) -> AttemptError>,
>;

impl Service<Task<Job>> for RunHandler {
    type Response = ();
    type Error = AttemptError;
    type Future = Handled;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut task: Task<Job>) -> Self::Future {
        let Job::Started(start) = std::mem::replace(&mut task.args, Job::Taken) else {
            return Either::Left(ready(Err(AttemptError::Undecodable(
                "the engine handed the handler no started attempt".into(),
            ))));
        };
        match (start.run)(start.args, start.ctx) {
            Ok(handler) => {
                Either::Right(handler.map_err(AttemptError::Handler as fn(JobError) -> _))
            }
            Err(error) => Either::Left(ready(Err(AttemptError::Undecodable(error)))),
        }
    }
}
