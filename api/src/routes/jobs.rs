//! `/api/v1/jobs` and `/api/v1/queues`: a tenant's jobs, their attempts and errors, cancel and
//! retry, and per-queue counts.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use uuid::Uuid;
use zoark_jobs::{
    JobState,
    admin::{self, AdminError, JobFilter, JobRecord, QueueStats},
};

use zoark_core::{
    access::{ManageJobs, ReadJobs},
    db::tenant,
};

use crate::{
    auth::BearerAuth,
    error::ApiError,
    pagination::PageRequest,
    params::{Timestamp, instant},
    routes::ApiTags,
    state::AppState,
};

pub struct JobsApi;

/// A job state (River's vocabulary).
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum JobStateParam {
    Scheduled,
    Available,
    Running,
    Retryable,
    Completed,
    Discarded,
    Cancelled,
}

impl From<JobStateParam> for JobState {
    fn from(s: JobStateParam) -> Self {
        match s {
            JobStateParam::Scheduled => Self::Scheduled,
            JobStateParam::Available => Self::Available,
            JobStateParam::Running => Self::Running,
            JobStateParam::Retryable => Self::Retryable,
            JobStateParam::Completed => Self::Completed,
            JobStateParam::Discarded => Self::Discarded,
            JobStateParam::Cancelled => Self::Cancelled,
        }
    }
}

/// A job with its payload and the error of every failed attempt.
#[derive(Debug, Object)]
#[oai(example)]
pub struct Job {
    pub id: Uuid,
    /// Stable job kind, e.g. `agents.run_scheduled`.
    pub kind: String,
    pub queue: String,
    /// `scheduled`, `available`, `running`, `retryable`, `completed`, `discarded` or `cancelled`.
    pub state: String,
    /// The payload.
    pub args: serde_json::Value,
    /// 0 runs first, 9 last.
    pub priority: i16,
    /// Attempts started so far.
    pub attempt: i32,
    pub max_attempts: i32,
    /// When it may (next) run.
    pub run_at: DateTime<Utc>,
    pub unique_key: Option<String>,
    /// One entry per failed attempt: `{attempt, at, kind, error}`; `kind` is `error`, `fatal`,
    /// `panic`, `timeout`, `rescued`, `lease_lost`, `unknown_kind` or `cancelled`.
    pub errors: serde_json::Value,
    pub attempted_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl poem_openapi::types::Example for Job {
    fn example() -> Self {
        Self {
            id: uuid::Uuid::from_u128(0x0192_5f3a_7c1e_7b2d_9a41_3e6f_0c8d_2b17),
            kind: "webhook.deliver".into(),
            queue: "webhooks".into(),
            state: "retryable".into(),
            args: serde_json::json!({"delivery_id": "0192e0a1-3b4c-7d5e-8f60-718293a4b5c6"}),
            priority: 0,
            attempt: 1,
            max_attempts: 8,
            run_at: chrono::DateTime::from_timestamp(1_795_694_400, 0).unwrap_or_default(),
            unique_key: None,
            errors: serde_json::json!([{"attempt": 1, "at": "2026-11-26T10:00:05Z", "kind": "error", "error": "endpoint answered 503"}]),
            attempted_at: Some(
                chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
            ),
            cancel_requested_at: None,
            finalized_at: None,
            created_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
        }
    }
}

impl From<JobRecord> for Job {
    fn from(j: JobRecord) -> Self {
        Self {
            id: j.id,
            kind: j.kind,
            queue: j.queue,
            state: j.state,
            args: j.args,
            priority: j.priority,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            run_at: j.run_at,
            unique_key: j.unique_key,
            errors: j.errors,
            attempted_at: j.attempted_at,
            cancel_requested_at: j.cancel_requested_at,
            finalized_at: j.finalized_at,
            created_at: j.created_at,
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Object)]
pub struct JobPage {
    pub items: Vec<Job>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Counts per state for one queue.
#[derive(Debug, Object)]
pub struct Queue {
    pub queue: String,
    pub scheduled: i64,
    /// Due and waiting for a worker.
    pub available: i64,
    pub running: i64,
    pub retryable: i64,
    pub completed: i64,
    pub discarded: i64,
    pub cancelled: i64,
    /// Seconds the oldest due job has waited; absent when none waits.
    pub oldest_available_age_secs: Option<f64>,
}

impl From<QueueStats> for Queue {
    fn from(q: QueueStats) -> Self {
        Self {
            queue: q.queue,
            scheduled: q.scheduled,
            available: q.available,
            running: q.running,
            retryable: q.retryable,
            completed: q.completed,
            discarded: q.discarded,
            cancelled: q.cancelled,
            oldest_available_age_secs: q.oldest_available_age_secs,
        }
    }
}

#[derive(Debug, Object)]
pub struct QueueList {
    pub items: Vec<Queue>,
}

fn admin_error(e: AdminError) -> ApiError {
    match e {
        AdminError::NotFound => ApiError::NotFound {
            code: "job_not_found",
            detail: "No such job in this organization.".into(),
        },
        AdminError::WrongState(state, action) => ApiError::Conflict {
            code: "job_state_conflict",
            detail: format!("A {state} job cannot be {action}."),
        },
        AdminError::UniqueKeyHeld => ApiError::Conflict {
            code: "unique_key_held",
            detail: "Another unfinished job holds this job's unique key.".into(),
        },
        AdminError::Database(e) => ApiError::Internal(e.into()),
    }
}

#[OpenApi(tag = "ApiTags::Jobs", prefix_path = "/api/v1")]
impl JobsApi {
    /// List jobs
    ///
    /// The organization's jobs, newest first, filtered by state, kind, queue and creation time;
    /// paginated with `cursor`.
    #[oai(path = "/jobs", method = "get", operation_id = "jobs_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Only jobs in this state.
        #[oai(name = "state")]
        job_state: Query<Option<JobStateParam>>,
        /// Only jobs of this kind.
        kind: Query<Option<String>>,
        /// Only jobs of this queue.
        queue: Query<Option<String>>,
        /// Created at or after (RFC 3339).
        created_after: Query<Option<Timestamp>>,
        /// Created before (RFC 3339).
        created_before: Query<Option<Timestamp>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<JobPage>, ApiError> {
        let granted = auth.grant::<ReadJobs>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let filter = JobFilter {
            state: job_state.0.map(Into::into),
            kind: kind.0,
            queue: queue.0,
            created_after: instant(created_after.0),
            created_before: instant(created_before.0),
            before_id: page.before_id,
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = admin::list(&mut tx, granted.organization_id(), &filter, page.fetch()).await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |j| j.id);
        let items = rows.into_iter().map(Job::from).collect();
        Ok(Json(JobPage { items, next_cursor }))
    }

    /// Get a job
    ///
    /// One job with its payload, attempts and the error of each failed attempt.
    #[oai(path = "/jobs/:id", method = "get", operation_id = "jobs_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<Job>, ApiError> {
        let granted = auth.grant::<ReadJobs>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let job = admin::get(&mut tx, granted.organization_id(), id.0)
            .await
            .map_err(admin_error)?;
        tx.commit().await?;
        Ok(Json(job.into()))
    }

    /// Retry a job
    ///
    /// Makes a discarded, cancelled, completed, retryable or scheduled job available now (with
    /// one more attempt if it had used them all). 409 `job_state_conflict` for a running or
    /// available job. Requires `jobs.manage` (lead or above).
    #[oai(path = "/jobs/:id/retry", method = "post", operation_id = "jobs_retry")]
    async fn retry(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<Job>, ApiError> {
        let granted = auth.grant::<ManageJobs>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let job = admin::retry(&mut tx, Some(granted.organization_id()), id.0)
            .await
            .map_err(admin_error)?;
        tx.commit().await?;
        Ok(Json(job.into()))
    }

    /// Cancel a job
    ///
    /// A job that has not started is cancelled at once; a running one is asked to stop and ends
    /// `cancelled` when its handler does (its state stays `running` until then, with
    /// `cancel_requested_at` set). 409 `job_state_conflict` for a finished job. Requires the
    /// `jobs.manage` (lead or above).
    #[oai(
        path = "/jobs/:id/cancel",
        method = "post",
        operation_id = "jobs_cancel"
    )]
    async fn cancel(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<Job>, ApiError> {
        let granted = auth.grant::<ManageJobs>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let job = admin::cancel(&mut tx, Some(granted.organization_id()), id.0)
            .await
            .map_err(admin_error)?;
        tx.commit().await?;
        Ok(Json(job.into()))
    }

    /// Queue statistics
    ///
    /// For each queue with jobs of the organization: counts per state and the age of the
    /// oldest job waiting for a worker.
    #[oai(path = "/queues", method = "get", operation_id = "queues_list")]
    async fn queues(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<QueueList>, ApiError> {
        let granted = auth.grant::<ReadJobs>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let items = admin::queues(&mut tx, Some(granted.organization_id()))
            .await?
            .into_iter()
            .map(Queue::from)
            .collect();
        tx.commit().await?;
        Ok(Json(QueueList { items }))
    }
}
