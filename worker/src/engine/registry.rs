//! The job kinds this worker knows: each contract's name mapped to its handler, timeout and
//! backoff. A row whose kind is missing here, or whose payload does not decode, is retried after a
//! backoff long enough for a rolling deploy (another version of the worker may know it) and
//! discarded only once its attempts are spent, every error kept.

use std::{collections::HashMap, future::Future, sync::Arc, time::Duration};

use futures_util::{FutureExt, future::BoxFuture};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zoark_jobs::Job;

/// How a handler's attempt ended, when it did not succeed.
#[derive(Debug)]
pub enum JobError {
    /// Try again after the contract's backoff (or discard when attempts are exhausted).
    Retry(anyhow::Error),
    /// Try again after this delay instead of the contract's backoff (e.g. a delay from the
    /// handler's own settings, or a provider's `Retry-After`); spends an attempt like `Retry`.
    RetryAfter(anyhow::Error, Duration),
    /// Never try again: the job is discarded with this error.
    Fatal(anyhow::Error),
    /// Run again after this long without spending an attempt (e.g. a provider's 429).
    Snooze(Duration),
}

impl<E: Into<anyhow::Error>> From<E> for JobError {
    fn from(error: E) -> Self {
        Self::Retry(error.into())
    }
}

pub type JobResult = Result<(), JobError>;

impl JobError {
    /// The error that ends the job for good when this attempt returns it: a fatal error, or a
    /// retry on the last attempt. `None` for a snooze (it spends no attempt) or a retry with
    /// attempts left. Handlers use it to fail what the job stood for (a document, a run) with
    /// the job.
    pub fn last_error(&self, run: &JobContext) -> Option<&anyhow::Error> {
        match self {
            Self::Fatal(error) => Some(error),
            Self::Retry(error) | Self::RetryAfter(error, _) if run.attempt >= run.max_attempts => {
                Some(error)
            }
            _ => None,
        }
    }
}

/// What a running attempt knows about itself.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub id: Uuid,
    pub attempt: i32,
    /// The attempts this job may use: `attempt == max_attempts` is its last.
    pub max_attempts: i32,
    pub organization_id: Option<Uuid>,
    /// Cancelled when the job is cancelled, the worker hands it back at shutdown, or the worker
    /// lost its lease. Long handlers should check it between steps; the engine also stops
    /// polling the handler's future once it fires.
    pub cancelled: CancellationToken,
}

/// Decodes the payload (an error names the contract and the field), then runs the handler.
pub(crate) type ErasedRun = Arc<
    dyn Fn(serde_json::Value, JobContext) -> Result<BoxFuture<'static, JobResult>, String>
        + Send
        + Sync,
>;

#[derive(Clone)]
pub(crate) struct Registered {
    pub(crate) run: ErasedRun,
    pub(crate) timeout: Duration,
    pub(crate) backoff: fn(i32) -> Duration,
}

/// Job kinds and their handlers.
#[derive(Clone, Default)]
pub struct Registry {
    kinds: HashMap<&'static str, Registered>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for the contract `J`. A payload that does not decode as `J` is
    /// retried like an unknown kind (a newer worker may decode it), never a hot loop.
    #[must_use]
    pub fn register<J, F, Fut>(mut self, handler: F) -> Self
    where
        J: Job,
        F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = JobResult> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let run: ErasedRun = Arc::new(move |args, ctx| {
            let job: J = serde_json::from_value(args)
                .map_err(|e| format!("the payload does not match the {} contract: {e}", J::NAME))?;
            Ok(handler(job, ctx).boxed())
        });
        self.kinds.insert(
            J::NAME,
            Registered {
                run,
                timeout: J::TIMEOUT,
                backoff: J::backoff,
            },
        );
        self
    }

    pub(crate) fn get(&self, kind: &str) -> Option<&Registered> {
        self.kinds.get(kind)
    }

    /// The registered kinds and their timeouts in milliseconds, as the claim takes them.
    pub(crate) fn timeouts_ms(&self) -> (Vec<String>, Vec<i64>) {
        self.kinds
            .iter()
            .map(|(kind, r)| {
                (
                    (*kind).to_owned(),
                    i64::try_from(r.timeout.as_millis()).unwrap_or(i64::MAX),
                )
            })
            .unzip()
    }

    /// The registered kinds, sorted.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds: Vec<_> = self.kinds.keys().copied().collect();
        kinds.sort_unstable();
        kinds
    }
}
