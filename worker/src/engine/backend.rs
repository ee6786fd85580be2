//! The apalis side: a [`Backend`] fed by this process's fetcher through a channel, and the
//! tower service apalis calls for each claimed job. apalis drives the loop (poll the backend,
//! call the service); the claim, the outcome and the lease are ours, in Postgres.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use apalis::prelude::{Backend, Task, WorkerContext as ApalisWorker};
use apalis_core::{
    backend::{BackendConfig, finalize::Ephemeral},
    task::task_id::RandomId,
};
use futures_util::{FutureExt, future::BoxFuture};
use tokio::sync::mpsc;
use tower_layer::Identity;

use super::{Claimed, Shared, execute};

/// Claimed jobs of one queue, in claim order.
pub(crate) struct ClaimedJobs {
    pub(crate) rx: mpsc::Receiver<Claimed>,
    pub(crate) shared: Arc<Shared>,
}

impl Drop for ClaimedJobs {
    /// Jobs claimed but never started go straight back to the queue, their attempt unspent.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(job) = self.rx.try_recv() {
            super::wake::give_back(&self.shared, job.id, job.attempt);
        }
    }
}

impl Backend for ClaimedJobs {
    type Task = Task<Claimed>;
    type Error = Infallible;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &ApalisWorker,
    ) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &ApalisWorker,
    ) -> Poll<Option<Result<Self::Task, Infallible>>> {
        // `None` once the fetcher has stopped (shutdown): the apalis worker then finishes.
        self.rx
            .poll_recv(cx)
            .map(|job| job.map(|job| Ok(Task::new(job))))
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &ApalisWorker,
    ) -> Poll<Result<(), Infallible>> {
        self.rx.close();
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for ClaimedJobs {
    type Args = Claimed;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _: &mut ApalisWorker) -> Self::Layer {
        Identity::new()
    }
}

/// Runs each job on the tokio pool (both cores), so apalis's loop only hands work out.
#[derive(Clone)]
pub(crate) struct RunJob {
    pub(crate) shared: Arc<Shared>,
}

impl tower_service::Service<Task<Claimed>> for RunJob {
    type Response = ();
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, task: Task<Claimed>) -> Self::Future {
        let handle = tokio::spawn(execute::run(Arc::clone(&self.shared), task.args));
        async move {
            // A panic is caught inside `execute::run`; a join error here means the runtime is
            // shutting down, and the lease makes the job run again elsewhere.
            if let Err(error) = handle.await {
                tracing::error!(%error, "a job task did not finish");
            }
            Ok(())
        }
        .boxed()
    }
}
