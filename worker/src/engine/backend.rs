//! The apalis backend each queue's worker polls: the queue's claim-ahead buffer, fed by its
//! fetcher through a channel. apalis drives the loop (poll the backend, call the layers of
//! [`super::execute`]); the claim, the outcome and the lease are ours, in Postgres.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use apalis::prelude::{Backend, Task, WorkerContext as ApalisWorker};
use apalis_core::{
    backend::{BackendConfig, finalize::Ephemeral},
    task::task_id::RandomId,
};
use tokio::sync::mpsc;
use tower_layer::Identity;

use super::{Claimed, Shared, execute::Job};

/// The claimed jobs of one queue waiting for a slot, in claim order: filled by the queue's
/// fetcher, emptied by its apalis worker, and given back to the queue at shutdown.
pub(crate) struct Buffer {
    rx: Mutex<mpsc::Receiver<Claimed>>,
}

impl Buffer {
    pub(crate) fn new(rx: mpsc::Receiver<Claimed>) -> Self {
        Self { rx: Mutex::new(rx) }
    }

    /// Closes the buffer and returns every job in it to the queue, attempts unspent; the apalis
    /// worker then sees its end. Returns how many.
    pub(crate) fn give_back(&self, shared: &Shared) -> usize {
        let Ok(mut rx) = self.rx.lock() else {
            return 0;
        };
        rx.close();
        let mut given = 0;
        while let Ok(job) = rx.try_recv() {
            super::wake::give_back(shared, job.id, job.attempt);
            given += 1;
        }
        given
    }
}

/// The apalis backend of one queue: its buffer.
pub(crate) struct ClaimedJobs {
    pub(crate) buffer: Arc<Buffer>,
    pub(crate) shared: Arc<Shared>,
}

impl Drop for ClaimedJobs {
    /// Jobs claimed but never started go straight back to the queue, their attempt unspent.
    fn drop(&mut self) {
        self.buffer.give_back(&self.shared);
    }
}

impl Backend for ClaimedJobs {
    type Task = Task<Job>;
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
        // `None` once the fetcher has stopped or the buffer was given back (shutdown): the
        // apalis worker then finishes.
        match self.buffer.rx.lock() {
            Ok(mut rx) => rx
                .poll_recv(cx)
                .map(|job| job.map(|job| Ok(Task::new(Job::Claimed(job))))),
            Err(_) => Poll::Ready(None),
        }
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &ApalisWorker,
    ) -> Poll<Result<(), Infallible>> {
        if let Ok(mut rx) = self.buffer.rx.lock() {
            rx.close();
        }
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for ClaimedJobs {
    type Args = Job;
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
