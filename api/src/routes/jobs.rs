//! `/api/v1/jobs` and `/api/v1/queues`: a tenant's jobs, their attempts and errors, cancel and
//! retry, per-queue counts, and pausing the tenant's jobs in a queue.

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
    admin::{
        self, AdminError, JobFilter, JobRecord, QueueName, QueuePause, QueueStats, Scope, Selection,
    },
};

use zoark_core::{
    access::{ManageJobs, ManageQueues, Permission as _, ReadJobPayloads, ReadJobs, Role},
    db::{
        audit::{self, Entry},
        tenant,
    },
};

use crate::{
    auth::{BearerAuth, client},
    error::ApiError,
    error::FieldError,
    json::JsonBody,
    pagination::PageRequest,
    params::{Timestamp, instant},
    routes::ApiTags,
    state::AppState,
};

pub struct JobsApi;

/// A job state (River's vocabulary).
#[derive(Debug, Clone, Copy, Enum, serde::Serialize, serde::Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
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

impl From<JobState> for JobStateParam {
    fn from(s: JobState) -> Self {
        match s {
            JobState::Scheduled => Self::Scheduled,
            JobState::Available => Self::Available,
            JobState::Running => Self::Running,
            JobState::Retryable => Self::Retryable,
            JobState::Completed => Self::Completed,
            JobState::Discarded => Self::Discarded,
            JobState::Cancelled => Self::Cancelled,
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

impl Job {
    /// The job as `role` sees it: without [`ReadJobPayloads`], every value of its args and the
    /// text of every error is `[redacted]` (their shape, kinds and times stay).
    pub(crate) fn seen_by(record: JobRecord, role: Role) -> Self {
        let mut job = Self::from(record);
        if !role.includes(ReadJobPayloads::MIN_ROLE) {
            job.args = redact_values(job.args);
            job.errors = redact_error_texts(job.errors);
        }
        job
    }
}

/// Every scalar of `value` replaced by `"[redacted]"`; objects keep their keys, arrays their
/// length.
pub(crate) fn redact_values(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, redact_values(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redact_values).collect()),
        Value::Null => Value::Null,
        _ => Value::String(REDACTED.into()),
    }
}

/// `errors` with each entry's `error` text replaced by `"[redacted]"`.
pub(crate) fn redact_error_texts(errors: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match errors {
        Value::Array(entries) => Value::Array(
            entries
                .into_iter()
                .map(|mut entry| {
                    if let Some(text) = entry.get_mut("error") {
                        *text = Value::String(REDACTED.into());
                    }
                    entry
                })
                .collect(),
        ),
        other => other,
    }
}

const REDACTED: &str = "[redacted]";

/// 403 for a search by a value in the payload without [`ReadJobPayloads`].
pub(crate) fn may_search_payloads(role: Role, args_value: Option<&str>) -> Result<(), ApiError> {
    if args_value.is_some() && !role.includes(ReadJobPayloads::MIN_ROLE) {
        return Err(ApiError::Forbidden(format!(
            "searching jobs by a value in their args needs the `{}` permission",
            ReadJobPayloads::NAME
        )));
    }
    Ok(())
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
    /// The organization's jobs in this queue are paused (`POST /queues/{name}/pause`).
    pub paused: bool,
}

/// The queues of an organization (`None`: the installation's, paused for everyone) as the API
/// lists them.
pub(crate) async fn queue_list(
    conn: &mut sqlx::PgConnection,
    organization_id: Option<Uuid>,
) -> Result<Vec<Queue>, ApiError> {
    Ok(admin::queues_and_pauses(conn, organization_id)
        .await?
        .into_iter()
        .map(|(stats, paused)| Queue {
            paused,
            ..Queue::from(stats)
        })
        .collect())
}

impl From<QueueStats> for Queue {
    fn from(q: QueueStats) -> Self {
        Self {
            paused: false,
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

/// Whether the organization's jobs in a queue are paused.
#[derive(Debug, Object)]
#[oai(example)]
pub struct QueuePauseState {
    pub queue: String,
    pub paused: bool,
    /// Since when; absent when not paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// The user who paused it (absent for an API key, or when not paused).
    pub paused_by: Option<Uuid>,
}

impl poem_openapi::types::Example for QueuePauseState {
    fn example() -> Self {
        Self {
            queue: "email".into(),
            paused: true,
            paused_at: "2026-11-30T09:15:00Z".parse().ok(),
            paused_by: "0193a1c2-7e4b-7d10-8a3f-5b2c9d0e1f23".parse().ok(),
        }
    }
}

impl From<QueuePause> for QueuePauseState {
    fn from(p: QueuePause) -> Self {
        Self {
            queue: p.queue,
            paused: true,
            paused_at: Some(p.paused_at),
            paused_by: p.paused_by,
        }
    }
}

/// Which jobs a bulk action takes, as `GET /jobs` filters them.
#[derive(Debug, Clone, Default, Object, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkJobFilter {
    pub state: Option<JobStateParam>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// Only jobs whose args hold this string as a value, at any depth.
    pub args_value: Option<String>,
}

/// `POST /jobs/retry` and `/jobs/cancel`: the jobs given by `ids`, or every job `filter`
/// matches (both: the given jobs the filter matches).
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct BulkJobs {
    /// 1 to 1,000 of the organization's jobs.
    pub ids: Option<Vec<Uuid>>,
    /// `{}` takes every job of the organization the action applies to.
    pub filter: Option<BulkJobFilter>,
    /// Change nothing: answer how many jobs the action would change (for a confirmation).
    pub dry_run: Option<bool>,
}

impl poem_openapi::types::Example for BulkJobs {
    fn example() -> Self {
        Self {
            ids: None,
            filter: Some(BulkJobFilter {
                state: Some(JobStateParam::Discarded),
                queue: Some("email".into()),
                ..BulkJobFilter::default()
            }),
            dry_run: Some(true),
        }
    }
}

/// What a bulk action did, or with `dry_run` would do.
#[derive(Debug, Object, serde::Serialize, serde::Deserialize)]
pub struct BulkJobsResult {
    /// Jobs retried or cancelled (running ones asked to stop).
    pub changed: i64,
    /// Jobs taken but left as they were: a retry whose unique key another unfinished job holds.
    pub skipped: i64,
    /// More jobs match than one request takes (10,000): send it again for the rest.
    pub more: bool,
    pub dry_run: bool,
}

/// The most jobs one bulk request changes.
const BULK_LIMIT: i64 = 10_000;
/// The most ids one bulk request names.
const BULK_IDS: usize = 1_000;

/// What a bulk action does.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BulkAction {
    Retry,
    Cancel,
}

impl BulkAction {
    fn audited_as(self) -> &'static str {
        match self {
            Self::Retry => "jobs.bulk_retried",
            Self::Cancel => "jobs.bulk_cancelled",
        }
    }
}

/// Runs a bulk action for `granted`'s organization: checked, done (or rolled back for a dry
/// run) and audited with its selection and count.
pub(crate) async fn bulk(
    state: &AppState,
    req: &poem::Request,
    granted: &zoark_core::access::Granted<ManageJobs>,
    body: BulkJobs,
    action: BulkAction,
) -> Result<Json<BulkJobsResult>, ApiError> {
    let invalid = |field: &str, message: &str| {
        ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    };
    if body.ids.is_none() && body.filter.is_none() {
        return Err(invalid("filter", "give `ids`, `filter` or both"));
    }
    if let Some(ids) = &body.ids
        && !(1..=BULK_IDS).contains(&ids.len())
    {
        return Err(invalid("ids", "must name 1 to 1,000 jobs"));
    }
    let raw = body.filter.clone().unwrap_or_default();
    for (field, at) in [
        ("filter.created_after", raw.created_after),
        ("filter.created_before", raw.created_before),
    ] {
        if let Some(at) = at {
            Timestamp::new(at).map_err(|m| invalid(field, m))?;
        }
    }
    let filter = JobFilter {
        state: raw.state.map(Into::into),
        kind: raw.kind,
        queue: raw.queue,
        created_after: raw.created_after,
        created_before: raw.created_before,
        before_id: None,
        args_value: raw.args_value,
    };
    let selection = Selection {
        filter: &filter,
        ids: body.ids.as_deref(),
    };
    let dry_run = body.dry_run.unwrap_or(false);
    let organization_id = granted.organization_id();
    let mut tx = tenant::begin(&state.pool, granted).await?;
    let done = match action {
        BulkAction::Retry => {
            admin::bulk_retry(&mut tx, organization_id, selection, BULK_LIMIT).await?
        }
        BulkAction::Cancel => {
            admin::bulk_cancel(&mut tx, organization_id, selection, BULK_LIMIT).await?
        }
    };
    if dry_run {
        tx.rollback().await?;
    } else {
        audit::record_granted(
            &mut tx,
            granted,
            Entry::new(action.audited_as(), &client(req, &state.settings)).with(
                serde_json::json!({
                    "ids": body.ids, "filter": body.filter, "changed": done.changed,
                    "skipped": done.skipped, "more": done.more,
                }),
            ),
        )
        .await?;
        tx.commit().await?;
    }
    Ok(Json(BulkJobsResult {
        changed: done.changed,
        skipped: done.skipped,
        more: done.more,
        dry_run,
    }))
}

/// Records a pause or resume of `queue` in the organization's audit log.
pub(crate) async fn audit_queue(
    tx: &mut sqlx::PgConnection,
    granted: &zoark_core::access::Granted<ManageQueues>,
    req: &poem::Request,
    state: &AppState,
    action: &'static str,
    queue: &QueueName,
) -> Result<(), ApiError> {
    audit::record_granted(
        tx,
        granted,
        Entry::new(action, &client(req, &state.settings))
            .with(serde_json::json!({ "queue": queue.as_str() })),
    )
    .await?;
    Ok(())
}

/// The queue name of a path, or a 422 naming it.
pub(crate) fn queue_name(name: &str) -> Result<QueueName, ApiError> {
    name.parse().map_err(|e: admin::InvalidQueueName| {
        ApiError::Validation(vec![FieldError {
            field: "name".into(),
            message: e.to_string(),
        }])
    })
}

#[derive(Debug, Object)]
pub struct QueueList {
    pub items: Vec<Queue>,
}

pub(crate) fn admin_error(e: AdminError) -> ApiError {
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
    /// paginated with `cursor`. Viewers get the payloads' values and the error texts
    /// `[redacted]`, and a search by `args_value` is refused to them (403).
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
        /// Only jobs whose args hold this string as a value, at any depth (an email address,
        /// an id).
        args_value: Query<Option<String>>,
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
            args_value: args_value.0,
        };
        may_search_payloads(granted.role(), filter.args_value.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = admin::list(
            &mut tx,
            Scope::Organization(granted.organization_id()),
            &filter,
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |j| j.id);
        let items = rows
            .into_iter()
            .map(|j| Job::seen_by(j, granted.role()))
            .collect();
        Ok(Json(JobPage { items, next_cursor }))
    }

    /// Get a job
    ///
    /// One job with its payload, attempts and the error of each failed attempt (for viewers,
    /// the payload's values and the error texts are `[redacted]`).
    #[oai(path = "/jobs/:id", method = "get", operation_id = "jobs_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<Job>, ApiError> {
        let granted = auth.grant::<ReadJobs>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let job = admin::get(
            &mut tx,
            Scope::Organization(granted.organization_id()),
            id.0,
        )
        .await
        .map_err(admin_error)?;
        tx.commit().await?;
        Ok(Json(Job::seen_by(job, granted.role())))
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

    /// Retry jobs in bulk
    ///
    /// Retries, as `POST /jobs/{id}/retry` does, the jobs `ids` names and/or `filter` matches,
    /// oldest first, at most 10,000 per request (`more` says to send it again); a job whose
    /// unique key another unfinished job holds is skipped. `dry_run` counts without changing
    /// anything. Audited as `jobs.bulk_retried` with the selection and the count. Requires
    /// `jobs.manage` (lead or above).
    #[oai(
        path = "/jobs/retry",
        method = "post",
        operation_id = "jobs_bulk_retry"
    )]
    async fn bulk_retry(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &poem::Request,
        body: JsonBody<BulkJobs>,
    ) -> Result<Json<BulkJobsResult>, ApiError> {
        let granted = auth.grant::<ManageJobs>(&state).await?;
        bulk(&state, req, &granted, body.0, BulkAction::Retry).await
    }

    /// Cancel jobs in bulk
    ///
    /// Cancels, as `POST /jobs/{id}/cancel` does, the unfinished jobs `ids` names and/or
    /// `filter` matches, oldest first, at most 10,000 per request (`more` says to send it
    /// again): waiting ones at once, running ones asked to stop. `dry_run` counts without
    /// changing anything. Audited as `jobs.bulk_cancelled` with the selection and the count.
    /// Requires `jobs.manage` (lead or above).
    #[oai(
        path = "/jobs/cancel",
        method = "post",
        operation_id = "jobs_bulk_cancel"
    )]
    async fn bulk_cancel(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &poem::Request,
        body: JsonBody<BulkJobs>,
    ) -> Result<Json<BulkJobsResult>, ApiError> {
        let granted = auth.grant::<ManageJobs>(&state).await?;
        bulk(&state, req, &granted, body.0, BulkAction::Cancel).await
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
        let items = queue_list(&mut tx, Some(granted.organization_id())).await?;
        tx.commit().await?;
        Ok(Json(QueueList { items }))
    }

    /// Pause a queue
    ///
    /// Workers claim none of the organization's jobs in this queue until it is resumed; running
    /// jobs finish, new jobs wait. Idempotent: pausing a paused queue returns the pause in place.
    /// Audited when it pauses. Requires `queues.manage` (admin).
    #[oai(
        path = "/queues/:name/pause",
        method = "post",
        operation_id = "queues_pause"
    )]
    async fn pause(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &poem::Request,
        name: Path<String>,
    ) -> Result<Json<QueuePauseState>, ApiError> {
        let granted = auth.grant::<ManageQueues>(&state).await?;
        let queue = queue_name(&name.0)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let (pause, paused_now) = admin::pause_queue(
            &mut tx,
            Some(granted.organization_id()),
            &queue,
            granted.actor().user_id(),
        )
        .await?;
        if paused_now {
            audit_queue(&mut tx, &granted, req, &state, "queue.paused", &queue).await?;
        }
        tx.commit().await?;
        Ok(Json(pause.into()))
    }

    /// Resume a queue
    ///
    /// Workers claim the organization's jobs in this queue again, at once. Idempotent: resuming
    /// a queue that is not paused changes nothing. Audited when it resumes. Requires `queues.manage` (admin).
    #[oai(
        path = "/queues/:name/resume",
        method = "post",
        operation_id = "queues_resume"
    )]
    async fn resume(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &poem::Request,
        name: Path<String>,
    ) -> Result<Json<QueuePauseState>, ApiError> {
        let granted = auth.grant::<ManageQueues>(&state).await?;
        let queue = queue_name(&name.0)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let resumed = admin::resume_queue(&mut tx, Some(granted.organization_id()), &queue).await?;
        if resumed {
            audit_queue(&mut tx, &granted, req, &state, "queue.resumed", &queue).await?;
        }
        tx.commit().await?;
        Ok(Json(QueuePauseState {
            queue: queue.to_string(),
            paused: false,
            paused_at: None,
            paused_by: None,
        }))
    }
}
