//! The `jobs` table through apalis's backend traits: one kind's jobs (the contract `J`) of one
//! tenant (an organization, or the platform), for tools that speak apalis.
//!
//! | apalis trait | here |
//! |---|---|
//! | `TaskSink` (`push`, `push_bulk`, …) | [`zoark_jobs::enqueue_many`]: the contract's queue, attempts, unique key and checks; a task's `run_at`, `priority`, `max_attempts` and `idempotency_key` (the unique key) are kept. Each flush commits on its own: a job that must commit with a row change is enqueued with [`zoark_jobs::enqueue`] in the caller's transaction instead. |
//! | `FetchById` | the job by its id (a `TaskId::Uuid`), if it is this kind's and this tenant's |
//! | `ListTasks` | a page of this kind's and tenant's jobs, newest first, optionally of one status |
//! | `Vacuum` | deletes this kind's and tenant's finished jobs past their retention (what `maintenance.prune_jobs` does for every kind), or finished before a given age |
//! | `ResumeAbandoned` | the rescue ([`super::rescue`]): the running jobs of workers silent for the rescue window go back to the queue. Workers die whole, so this covers every kind and tenant. |
//!
//! States map to apalis's statuses as: `scheduled` and `retryable` → `Pending`, `available` →
//! `Queued`, `running` → `Running`, `completed` → `Done`, `discarded` → `Failed`, `cancelled` →
//! `Killed`.
//!
//! It is not what the engine's workers poll (as an apalis `Backend` it hands out nothing, and
//! a worker built on it stops at once): they take their jobs from their queue's claim-ahead
//! buffer ([`super::backend::ClaimedJobs`]), filled by a fetcher that holds the lease, keeps
//! tenants fair and knows the queue's pace.

use std::{
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use apalis_core::{
    backend::{
        Backend, BackendConfig, FetchById, Filter, ListTasks, ResumeAbandoned, Vacuum,
        WireFormatBackend, codec::Codec, finalize::Durable,
    },
    task::{Task, builder::TaskBuilder, status::Status, task_id::TaskId},
    worker::context::WorkerContext,
};
use chrono::{DateTime, TimeZone as _, Utc};
use futures_util::{FutureExt as _, Sink, future::BoxFuture};
use serde_json::Value;
use sqlx::PgPool;
use tower_layer::Identity;
use uuid::Uuid;
use zoark_core::settings::JobRetention;
use zoark_jobs::{EnqueueError, Job, NewJob, Opts, Priority};

/// Rows one vacuum statement deletes at most, so that it never holds long locks.
const VACUUM_BATCH: i64 = 10_000;

/// One kind's jobs of one tenant, as an apalis backend.
pub struct Jobs<J> {
    pool: PgPool,
    organization_id: Option<Uuid>,
    retention: JobRetention,
    rescue_after: Duration,
    codec: JsonCodec,
    /// Tasks started and not yet flushed.
    pending: Vec<NewJob>,
    flushing: Option<BoxFuture<'static, Result<(), JobsError>>>,
    _contract: PhantomData<fn() -> J>,
}

impl<J> std::fmt::Debug for Jobs<J> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("kind", &std::any::type_name::<J>())
            .field("organization_id", &self.organization_id)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<J: Job> Jobs<J> {
    /// The platform's jobs of kind `J` (no organization).
    pub fn platform(pool: PgPool) -> Self {
        Self::new(pool, None)
    }

    /// The organization's jobs of kind `J`.
    pub fn organization(pool: PgPool, organization_id: Uuid) -> Self {
        Self::new(pool, Some(organization_id))
    }

    fn new(pool: PgPool, organization_id: Option<Uuid>) -> Self {
        Self {
            pool,
            organization_id,
            // The settings' defaults (`ZOARK_JOBS_RETENTION_HOURS`,
            // `ZOARK_JOBS_DISCARDED_RETENTION_DAYS`, `ZOARK_WORKER_RESCUE_AFTER_SECS`).
            retention: JobRetention {
                finished: Duration::from_secs(24 * 3600),
                discarded: Duration::from_secs(7 * 86_400),
            },
            rescue_after: Duration::from_secs(20),
            codec: JsonCodec,
            pending: Vec::new(),
            flushing: None,
            _contract: PhantomData,
        }
    }

    /// How long finished jobs are kept before [`Vacuum::vacuum`] deletes them.
    #[must_use]
    pub fn retention(mut self, retention: JobRetention) -> Self {
        self.retention = retention;
        self
    }

    /// How long a worker may be silent before [`ResumeAbandoned`] rescues its jobs.
    #[must_use]
    pub fn rescue_after(mut self, rescue_after: Duration) -> Self {
        self.rescue_after = rescue_after;
        self
    }

    /// A pushed task as the enqueue takes it: the contract applied, the task's options kept.
    fn new_job(&self, task: Task<Value>) -> Result<NewJob, JobsError> {
        let (args, ctx) = task.take();
        let job: J = serde_json::from_value(args).map_err(|e| JobsError::Payload(J::NAME, e))?;
        let mut opts = match self.organization_id {
            Some(organization_id) => Opts::organization(organization_id),
            None => Opts::platform(),
        };
        if let Some(at) = ctx.run_at() {
            let at = i64::try_from(at)
                .ok()
                .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
                .ok_or(JobsError::RunAt(at))?;
            opts = opts.run_at(at);
        }
        if let Some(priority) = ctx.priority() {
            let priority = u8::try_from(priority)
                .map_err(|_| EnqueueError::Priority(u8::MAX))
                .and_then(Priority::new)?;
            opts = opts.priority(priority);
        }
        if let Some(max) = ctx.max_attempts() {
            opts = opts.max_attempts(i32::try_from(max).unwrap_or(i32::MAX));
        }
        if let Some(key) = ctx.idempotency_key() {
            opts = opts.unique_key(key);
        }
        Ok(NewJob::new(&job, opts)?)
    }

    /// Drives the write in progress, if any.
    fn poll_flushing(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobsError>> {
        let Some(flushing) = self.flushing.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let result = ready!(flushing.as_mut().poll(cx));
        self.flushing = None;
        Poll::Ready(result)
    }
}

/// Why a backend call failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("the payload does not match the {0} contract: {1}")]
    Payload(&'static str, serde_json::Error),
    #[error("a run_at of {0} s since the epoch is out of range")]
    RunAt(u64),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Payloads are JSON, as stored in `jobs.args`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonCodec;

impl<J: Job> Codec<J> for JsonCodec {
    type Error = serde_json::Error;
    type Compact = Value;

    fn encode(&self, job: &J) -> Result<Value, serde_json::Error> {
        serde_json::to_value(job)
    }

    fn decode(&self, value: &Value) -> Result<J, serde_json::Error> {
        J::deserialize(value)
    }
}

impl<J: Job> Backend for Jobs<J> {
    type Task = Task<Value>;
    type Error = JobsError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), JobsError>> {
        Poll::Ready(Ok(()))
    }

    /// Nothing: the engine's workers claim through their fetchers (see the module header).
    fn poll_next(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<Value>, JobsError>>> {
        Poll::Ready(None)
    }

    fn poll_close(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), JobsError>> {
        Poll::Ready(Ok(()))
    }
}

impl<J: Job> BackendConfig for Jobs<J> {
    type Args = J;
    type Id = Uuid;
    type Kind = Durable;
    type Config = ();
    type Layer = Identity;

    fn config(&self) -> &() {
        &()
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Identity {
        Identity::new()
    }
}

impl<J: Job> WireFormatBackend for Jobs<J> {
    type Codec = JsonCodec;
    type Compact = Value;

    fn codec(&self) -> &JsonCodec {
        &self.codec
    }
}

/// What `TaskSink` writes through: tasks are collected by `start_send` and enqueued in one
/// statement per flush.
impl<J: Job> Sink<Task<Value>> for Jobs<J> {
    type Error = JobsError;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), JobsError>> {
        self.get_mut().poll_flushing(cx)
    }

    fn start_send(self: Pin<&mut Self>, task: Task<Value>) -> Result<(), JobsError> {
        let this = self.get_mut();
        let job = this.new_job(task)?;
        this.pending.push(job);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), JobsError>> {
        let this = self.get_mut();
        ready!(this.poll_flushing(cx))?;
        if this.pending.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let jobs = std::mem::take(&mut this.pending);
        let pool = this.pool.clone();
        this.flushing = Some(
            async move {
                let mut conn = pool.acquire().await?;
                zoark_jobs::enqueue_many(&mut conn, jobs).await?;
                Ok(())
            }
            .boxed(),
        );
        this.poll_flushing(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), JobsError>> {
        self.poll_flush(cx)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    queue: String,
    state: String,
    args: Value,
    priority: i16,
    attempt: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    unique_key: Option<String>,
    attempted_at: Option<DateTime<Utc>>,
    finalized_at: Option<DateTime<Utc>>,
    worker_id: Option<Uuid>,
}

fn epoch(at: DateTime<Utc>) -> u64 {
    u64::try_from(at.timestamp()).unwrap_or(0)
}

fn status(state: &str) -> Status {
    match state {
        "available" => Status::Queued,
        "running" => Status::Running,
        "completed" => Status::Done,
        "discarded" => Status::Failed,
        "cancelled" => Status::Killed,
        // scheduled, retryable
        _ => Status::Pending,
    }
}

/// The states a status filter covers.
fn states(status: &Status) -> &'static [&'static str] {
    match status {
        Status::Pending => &["scheduled", "retryable"],
        Status::Queued => &["available"],
        Status::Running => &["running"],
        Status::Done => &["completed"],
        Status::Failed => &["discarded"],
        Status::Killed => &["cancelled"],
        _ => &[],
    }
}

impl From<Row> for Task<Value> {
    fn from(row: Row) -> Self {
        let mut task = TaskBuilder::new(row.args)
            .task_id(TaskId::Uuid(row.id))
            .attempt(usize::try_from(row.attempt).unwrap_or(0))
            .status(status(&row.state))
            .max_attempts(usize::try_from(row.max_attempts).unwrap_or(0))
            .priority(usize::try_from(row.priority).unwrap_or(0))
            .queue(row.queue.into())
            .run_at_timestamp(epoch(row.run_at))
            .done_at(row.finalized_at.map(epoch))
            .lock_at(
                row.attempted_at
                    .filter(|_| row.worker_id.is_some())
                    .map(epoch),
            )
            .lock_by(row.worker_id.map(|w| w.to_string()));
        if let Some(key) = row.unique_key {
            task = task.idempotency_key(key);
        }
        task.build()
    }
}

impl<J: Job> FetchById for Jobs<J> {
    fn fetch_by_id(
        &mut self,
        task_id: &TaskId,
    ) -> impl Future<Output = Result<Option<Task<Value>>, JobsError>> + Send {
        let pool = self.pool.clone();
        let organization_id = self.organization_id;
        let id = match task_id {
            TaskId::Uuid(id) => Some(*id),
            TaskId::String(id) => id.parse().ok(),
            _ => None,
        };
        async move {
            let Some(id) = id else {
                return Ok(None);
            };
            let row: Option<Row> = sqlx::query_as(
                "SELECT id, queue, state, args, priority, attempt, max_attempts, run_at, unique_key,
                        attempted_at, finalized_at, worker_id
                 FROM jobs
                 WHERE id = $1 AND kind = $2 AND organization_id IS NOT DISTINCT FROM $3",
            )
            .bind(id)
            .bind(J::NAME)
            .bind(organization_id)
            .fetch_optional(&pool)
            .await?;
            Ok(row.map(Task::from))
        }
    }
}

impl<J: Job> ListTasks for Jobs<J> {
    fn list_tasks(
        &self,
        filter: &Filter,
    ) -> impl Future<Output = Result<Vec<Task<Value>>, JobsError>> + Send {
        let pool = self.pool.clone();
        let organization_id = self.organization_id;
        let limit = i64::from(filter.page_size.unwrap_or(10));
        let offset = i64::from(filter.page.max(1) - 1) * limit;
        let states: Option<Vec<&'static str>> = filter.status.as_ref().map(|s| states(s).to_vec());
        async move {
            let rows: Vec<Row> = sqlx::query_as(
                "SELECT id, queue, state, args, priority, attempt, max_attempts, run_at, unique_key,
                        attempted_at, finalized_at, worker_id
                 FROM jobs
                 WHERE kind = $1 AND organization_id IS NOT DISTINCT FROM $2
                   AND ($3::text[] IS NULL OR state = ANY($3))
                 ORDER BY id DESC
                 LIMIT $4 OFFSET $5",
            )
            .bind(J::NAME)
            .bind(organization_id)
            .bind(states)
            .bind(limit)
            .bind(offset)
            .fetch_all(&pool)
            .await?;
            Ok(rows.into_iter().map(Task::from).collect())
        }
    }
}

/// Deletes kind `kind`'s finished jobs of one tenant: completed and cancelled ones finished
/// before `finished` ago, discarded ones before `discarded` ago; a batch at a time.
async fn prune(
    pool: PgPool,
    kind: &'static str,
    organization_id: Option<Uuid>,
    finished: Duration,
    discarded: Duration,
) -> Result<usize, JobsError> {
    let mut total = 0usize;
    loop {
        let mut conn = pool.acquire().await?;
        let scope = zoark_jobs::admin::PruneScope {
            kind: Some(kind),
            tenant: Some(organization_id),
        };
        let deleted =
            zoark_jobs::admin::prune_finished(&mut conn, scope, finished, discarded, VACUUM_BATCH)
                .await?;
        total = total.saturating_add(usize::try_from(deleted).unwrap_or(usize::MAX));
        if deleted < VACUUM_BATCH.unsigned_abs() {
            return Ok(total);
        }
    }
}

impl<J: Job> Vacuum for Jobs<J> {
    /// Deletes finished jobs past their retention; returns how many.
    fn vacuum(&mut self) -> impl Future<Output = Result<usize, JobsError>> + Send {
        prune(
            self.pool.clone(),
            J::NAME,
            self.organization_id,
            self.retention.finished,
            self.retention.discarded,
        )
    }

    /// Deletes jobs that finished, whatever their state, more than `age` ago.
    fn vacuum_before(
        &mut self,
        age: Duration,
    ) -> impl Future<Output = Result<usize, JobsError>> + Send {
        prune(self.pool.clone(), J::NAME, self.organization_id, age, age)
    }
}

impl<J: Job> ResumeAbandoned for Jobs<J> {
    /// Rescues the running jobs of workers silent for the rescue window; returns how many.
    fn resume_abandoned(&mut self) -> impl Future<Output = Result<usize, JobsError>> + Send {
        let pool = self.pool.clone();
        let rescue_after = self.rescue_after;
        async move {
            let rescued = super::rescue(&pool, rescue_after).await?;
            Ok(usize::try_from(rescued).unwrap_or(0))
        }
    }
}
