//! The dashboard's pages and the actions their forms post, each through the same queries,
//! permissions and audit entries as the `/api/v1` operation that does the same.

use chrono::{Duration as Span, Utc};
use poem::{
    Request, Response,
    web::{Data, Form, Path, Query},
};
use serde::{Deserialize, Serialize};
use sqlx::Postgres;
use uuid::Uuid;
use zoark_core::{
    access::{Granted, ManageJobs, ManageQueues, Permission, ReadJobPayloads, ReadJobs},
    db::tenant,
};
use zoark_jobs::{
    JobState,
    admin::{self, JobFilter, JobRecord, QueueName, QueueStats, Scope},
    counts::{self, Width},
};

use crate::{
    dashboard::{Viewer, charts::Chart, render, see_other, session::CsrfForm},
    error::{ApiError, FieldError},
    pagination::PageRequest,
    routes::jobs::{
        BulkAction, BulkJobFilter, BulkJobs, JobStateParam, admin_error, audit_queue,
        bulk as bulk_jobs, may_search_payloads, queue_name, redact_values,
    },
    state::AppState,
};

/// Rows per page of the jobs list.
const PAGE: i64 = 50;
/// Jobs an args search examines per page (the newest the other filters match, from the
/// cursor on): about 25 ms here, whatever the table's size.
const SEARCH_LIMIT: i64 = 20_000;

/// Which part of the dashboard a page belongs to: the viewer's organization, or (platform
/// operators) the whole installation under `/dashboard/platform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Organization,
    Platform,
}

impl Area {
    fn base(self) -> &'static str {
        match self {
            Self::Organization => "/dashboard",
            Self::Platform => "/dashboard/platform",
        }
    }

    /// The navigation entry of the area's pages.
    fn nav(self, page: &'static str) -> &'static str {
        match self {
            Self::Organization => page,
            Self::Platform => "platform",
        }
    }

    /// Whether the viewer may take the actions that need `P` here: by role in the
    /// organization, as an operator on the platform.
    fn may<P: Permission>(self, viewer: &Viewer) -> bool {
        match self {
            Self::Organization => viewer.may::<P>(),
            Self::Platform => viewer.operator,
        }
    }

    /// What every page of the area puts in its template's context: the viewer, the area's base
    /// path and whether it is the platform's.
    fn frame(self, viewer: &Viewer, page: &'static str) -> minijinja::Value {
        minijinja::context! {
            viewer => viewer.chrome(self.nav(page)),
            base => self.base(),
            platform => self == Self::Platform,
        }
    }
}

/// Whose rows a request reads: the organization's under its tenant transaction, or every
/// organization's (operators only) in a platform transaction.
enum Reach {
    Tenant(Granted<ReadJobs>),
    Installation,
}

impl Reach {
    fn of(viewer: &Viewer, area: Area) -> Result<Self, ApiError> {
        match area {
            Area::Organization => Ok(Self::Tenant(viewer.grant::<ReadJobs>()?)),
            Area::Platform => {
                viewer.require_operator()?;
                Ok(Self::Installation)
            }
        }
    }

    async fn begin(
        &self,
        state: &AppState,
    ) -> Result<sqlx::Transaction<'static, Postgres>, ApiError> {
        Ok(match self {
            Self::Tenant(granted) => tenant::begin(&state.pool, granted).await?,
            Self::Installation => tenant::system(&state.pool).await?,
        })
    }

    /// The organization the rows are limited to (`None`: all of them).
    fn organization_id(&self) -> Option<Uuid> {
        match self {
            Self::Tenant(granted) => Some(granted.organization_id()),
            Self::Installation => None,
        }
    }

    /// The jobs the reach sees, narrowed by an operator's organization filter.
    fn scope(&self, organization: &str) -> Result<Scope, ApiError> {
        match self {
            Self::Tenant(granted) => Ok(Scope::Organization(granted.organization_id())),
            Self::Installation => match organization.trim() {
                "" => Ok(Scope::Installation),
                "platform" => Ok(Scope::Platform),
                id => id
                    .parse()
                    .map(Scope::Organization)
                    .map_err(|_| invalid("org", "`platform` or an organization id")),
            },
        }
    }
}

/// One queue's row of the overview and the queues page.
#[derive(Serialize)]
struct QueueRow {
    #[serde(flatten)]
    stats: QueueStats,
    paused: bool,
}

/// The queues (of one organization, or all) with their counts and pauses, by name. For the
/// installation, `paused` means paused for everyone.
async fn queue_rows(
    conn: &mut sqlx::PgConnection,
    organization_id: Option<Uuid>,
) -> Result<Vec<QueueRow>, ApiError> {
    Ok(admin::queues_and_pauses(conn, organization_id)
        .await?
        .into_iter()
        .map(|(stats, paused)| QueueRow { stats, paused })
        .collect())
}

/// `GET /dashboard`: per queue, jobs by state and the age of the oldest waiting job.
#[poem::handler]
pub async fn overview(state: Data<&AppState>, viewer: Viewer) -> Result<Response, ApiError> {
    overview_of(&state, &viewer, Area::Organization).await
}

/// `GET /dashboard/platform`: the installation's queues, and the live workers.
#[poem::handler]
pub async fn platform_overview(
    state: Data<&AppState>,
    viewer: Viewer,
) -> Result<Response, ApiError> {
    overview_of(&state, &viewer, Area::Platform).await
}

async fn overview_of(state: &AppState, viewer: &Viewer, area: Area) -> Result<Response, ApiError> {
    let reach = Reach::of(viewer, area)?;
    let mut tx = reach.begin(state).await?;
    let rows = queue_rows(&mut tx, reach.organization_id()).await?;
    let workers = match area {
        Area::Platform => admin::workers(&mut tx).await?,
        Area::Organization => Vec::new(),
    };
    let mut charts = Vec::new();
    for (caption, width, count) in [
        ("Last hour, per minute", Width::Minute, 60),
        ("Last day, per hour", Width::Hour, 24),
    ] {
        let buckets =
            counts::throughput(&mut tx, reach.organization_id(), None, width, count).await?;
        charts.push(Chart::new(caption, width, &buckets));
    }
    tx.commit().await?;
    render(
        "overview.html",
        minijinja::context! {
            queues => rows,
            workers => workers,
            charts => charts,
            ..area.frame(viewer, "overview")
        },
    )
}

/// `GET /dashboard/queues`: pause and resume (admins), backlog.
#[poem::handler]
pub async fn queues_page(state: Data<&AppState>, viewer: Viewer) -> Result<Response, ApiError> {
    queues_of(&state, &viewer, Area::Organization).await
}

/// `GET /dashboard/platform/queues`: the installation's queues, paused for everyone.
#[poem::handler]
pub async fn platform_queues(state: Data<&AppState>, viewer: Viewer) -> Result<Response, ApiError> {
    queues_of(&state, &viewer, Area::Platform).await
}

async fn queues_of(state: &AppState, viewer: &Viewer, area: Area) -> Result<Response, ApiError> {
    let reach = Reach::of(viewer, area)?;
    let mut tx = reach.begin(state).await?;
    let rows = queue_rows(&mut tx, reach.organization_id()).await?;
    tx.commit().await?;
    let can_pause = area.may::<ManageQueues>(viewer);
    render(
        "queues.html",
        minijinja::context! {
            queues => rows,
            can_pause => can_pause,
            ..area.frame(viewer, "queues")
        },
    )
}

/// `POST /dashboard/queues/{name}/{pause|resume}`, as `POST /api/v1/queues/{name}/pause|resume`.
#[poem::handler]
pub async fn queue_action(
    state: Data<&AppState>,
    req: &Request,
    viewer: Viewer,
    Path((name, action)): Path<(String, String)>,
    form: Form<CsrfForm>,
) -> Result<Response, ApiError> {
    viewer.check_csrf(&state, &form.csrf)?;
    let granted = viewer.grant::<ManageQueues>()?;
    let queue = queue_name(&name)?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let changed = pause_or_resume(
        &mut tx,
        Some(granted.organization_id()),
        &queue,
        &action,
        granted.actor().user_id(),
    )
    .await?;
    if let Some(audited) = changed {
        audit_queue(&mut tx, &granted, req, &state, audited, &queue).await?;
    }
    tx.commit().await?;
    Ok(see_other("/dashboard/queues"))
}

/// `POST /dashboard/platform/queues/{name}/{pause|resume}`: an operator pauses (or resumes) a
/// queue for every organization and the platform.
#[poem::handler]
pub async fn platform_queue_action(
    state: Data<&AppState>,
    viewer: Viewer,
    Path((name, action)): Path<(String, String)>,
    form: Form<CsrfForm>,
) -> Result<Response, ApiError> {
    viewer.check_csrf(&state, &form.csrf)?;
    viewer.require_operator()?;
    let queue = queue_name(&name)?;
    let mut tx = tenant::system(&state.pool).await?;
    if pause_or_resume(&mut tx, None, &queue, &action, viewer.user_id())
        .await?
        .is_some()
    {
        tracing::info!(queue = queue.as_str(), %action, operator = %viewer.email, "queue paused or resumed for everyone");
    }
    tx.commit().await?;
    Ok(see_other("/dashboard/platform/queues"))
}

/// Pauses or resumes; the audit action when it changed something.
async fn pause_or_resume(
    conn: &mut sqlx::PgConnection,
    organization_id: Option<Uuid>,
    queue: &QueueName,
    action: &str,
    user_id: Option<Uuid>,
) -> Result<Option<&'static str>, ApiError> {
    Ok(match action {
        "pause" => admin::pause_queue(conn, organization_id, queue, user_id)
            .await?
            .1
            .then_some("queue.paused"),
        "resume" => admin::resume_queue(conn, organization_id, queue)
            .await?
            .then_some("queue.resumed"),
        _ => return Err(not_found()),
    })
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "not_found",
        detail: "There is nothing here.".into(),
    }
}

/// The jobs list's filters, as the query string (and the bulk form's hidden fields) carry them.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct JobsQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    queue: String,
    #[serde(default)]
    kind: String,
    /// A job id (opens it) or a value in the args.
    #[serde(default)]
    q: String,
    /// Created within: `1h`, `24h`, `7d`.
    #[serde(default)]
    since: String,
    /// The page cursor: jobs older than this id.
    #[serde(default)]
    before: String,
    /// Operators: `platform`, or an organization id (empty: every job).
    #[serde(default)]
    org: String,
}

fn given(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::InvalidParameter(FieldError {
        field: field.into(),
        message: message.into(),
    })
}

impl JobsQuery {
    fn state(&self) -> Result<Option<JobState>, ApiError> {
        given(&self.state)
            .map(|s| s.parse().map_err(|_| invalid("state", "not a job state")))
            .transpose()
    }

    fn since(&self) -> Result<Option<chrono::DateTime<Utc>>, ApiError> {
        let span = match self.since.as_str() {
            "" => return Ok(None),
            "1h" => Span::hours(1),
            "24h" => Span::hours(24),
            "7d" => Span::days(7),
            _ => return Err(invalid("since", "one of 1h, 24h, 7d")),
        };
        Ok(Some(Utc::now() - span))
    }

    /// The filter, without the cursor.
    fn filter(&self) -> Result<JobFilter, ApiError> {
        Ok(JobFilter {
            state: self.state()?,
            kind: given(&self.kind),
            queue: given(&self.queue),
            created_after: self.since()?,
            created_before: None,
            before_id: None,
            args_value: given(&self.q),
        })
    }

    fn is_filtered(&self) -> bool {
        [
            &self.state,
            &self.queue,
            &self.kind,
            &self.q,
            &self.since,
            &self.org,
        ]
        .iter()
        .any(|v| !v.trim().is_empty())
    }

    /// The query string of these filters with another cursor.
    fn with_before(&self, before: Option<Uuid>) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("state", &self.state),
            ("queue", &self.queue),
            ("kind", &self.kind),
            ("q", &self.q),
            ("since", &self.since),
            ("org", &self.org),
        ] {
            if !value.trim().is_empty() {
                query.append_pair(name, value.trim());
            }
        }
        if let Some(before) = before {
            query.append_pair("before", &before.to_string());
        }
        query.finish()
    }
}

/// One row of the jobs list.
#[derive(Serialize)]
struct JobRow {
    id: Uuid,
    organization_id: Option<Uuid>,
    kind: String,
    queue: String,
    state: String,
    attempt: i32,
    max_attempts: i32,
    created_at: String,
    run_at: String,
}

fn when(at: chrono::DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

impl From<JobRecord> for JobRow {
    fn from(j: JobRecord) -> Self {
        Self {
            id: j.id,
            organization_id: j.organization_id,
            kind: j.kind,
            queue: j.queue,
            state: j.state,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            created_at: when(j.created_at),
            run_at: when(j.run_at),
        }
    }
}

/// `GET /dashboard/jobs`: filters, newest first, keyset pages; a job id in the search box opens
/// the job.
#[poem::handler]
pub async fn jobs_page(
    state: Data<&AppState>,
    viewer: Viewer,
    query: Query<JobsQuery>,
) -> Result<Response, ApiError> {
    jobs_of(&state, &viewer, query.0, Area::Organization).await
}

/// `GET /dashboard/platform/jobs`: every job of the installation, filtered by organization too.
#[poem::handler]
pub async fn platform_jobs(
    state: Data<&AppState>,
    viewer: Viewer,
    query: Query<JobsQuery>,
) -> Result<Response, ApiError> {
    jobs_of(&state, &viewer, query.0, Area::Platform).await
}

async fn jobs_of(
    state: &AppState,
    viewer: &Viewer,
    query: JobsQuery,
    area: Area,
) -> Result<Response, ApiError> {
    let reach = Reach::of(viewer, area)?;
    if let Ok(id) = query.q.trim().parse::<Uuid>() {
        return Ok(see_other(&format!("{}/jobs/{id}", area.base())));
    }
    let scope = reach.scope(&query.org)?;
    let mut filter = query.filter()?;
    if area == Area::Organization {
        may_search_payloads(viewer.principal.role(), filter.args_value.as_deref())?;
    }
    let page = PageRequest::parse(Some(PAGE), given(&query.before).as_deref())?;
    filter.before_id = page.before_id;
    let mut tx = reach.begin(state).await?;
    let listed =
        admin::list_within(&mut tx, scope, &filter, page.fetch(), Some(SEARCH_LIMIT)).await?;
    let queue_names: Vec<String> = counts::by_queue(&mut tx, reach.organization_id())
        .await?
        .into_iter()
        .map(|(queue, _)| queue)
        .collect();
    tx.commit().await?;
    let (rows, next) = page.page(listed.jobs, |r| r.id);
    // An args search that stopped at its limit goes on from where it stopped.
    let searched_to = next.is_none().then_some(listed.searched_to).flatten();
    let next = match (next, searched_to) {
        (Some(_), _) => Some(query.with_before(rows.last().map(|r| r.id))),
        (None, Some(id)) => Some(query.with_before(Some(id))),
        (None, None) => None,
    };
    let first = filter.before_id.map(|_| query.with_before(None));
    let rows: Vec<JobRow> = rows.into_iter().map(JobRow::from).collect();
    render(
        "jobs.html",
        minijinja::context! {
            jobs => rows,
            query => &query,
            filtered => query.is_filtered(),
            next => next,
            first => first,
            searched => searched_to.is_some(),
            search_limit => SEARCH_LIMIT,
            states => JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            queues => queue_names,
            can_bulk => area == Area::Organization && viewer.may::<ManageJobs>(),
            ..area.frame(viewer, "jobs")
        },
    )
}

/// Keys whose values the job page never shows.
const SECRET_KEYS: &[&str] = &[
    "password",
    "secret",
    "token",
    "api_key",
    "authorization",
    "credential",
    "private_key",
];

/// The args with the value of every key that names a secret replaced.
fn redacted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| {
                    let lower = key.to_ascii_lowercase();
                    if SECRET_KEYS.iter().any(|s| lower.contains(s)) {
                        (key, Value::String("[redacted]".into()))
                    } else {
                        (key, redacted(value))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(redacted).collect()),
        other => other,
    }
}

/// One failed attempt, as the job page lists it.
/// A failed attempt as `errors` records it.
#[derive(Debug, Deserialize)]
struct FailedAttempt {
    attempt: Option<i64>,
    at: Option<chrono::DateTime<Utc>>,
    kind: Option<String>,
    error: Option<String>,
    /// Recorded since 2026-12-04; older entries have none.
    duration_ms: Option<i64>,
}

/// One attempt on the job page: every failed one from `errors`, then the last one when it did
/// not fail (running, completed, or cancelled).
#[derive(Debug, Serialize)]
struct Attempt {
    attempt: Option<i64>,
    started: Option<String>,
    ended: Option<String>,
    duration: Option<String>,
    outcome: String,
    error: Option<String>,
}

fn seconds(ms: i64) -> String {
    format!("{:.3} s", ms as f64 / 1000.0)
}

fn attempts(job: &JobRecord) -> Vec<Attempt> {
    let failed: Vec<FailedAttempt> = serde_json::from_value(job.errors.clone()).unwrap_or_default();
    let last_failed = failed
        .iter()
        .any(|f| f.attempt == Some(i64::from(job.attempt)));
    let mut rows: Vec<Attempt> = failed
        .into_iter()
        .map(|f| Attempt {
            attempt: f.attempt,
            started: f
                .at
                .zip(f.duration_ms)
                .map(|(at, ms)| when(at - Span::milliseconds(ms))),
            ended: f.at.map(when),
            duration: f.duration_ms.map(seconds),
            outcome: f.kind.unwrap_or_default(),
            error: f.error,
        })
        .collect();
    if job.attempt > 0
        && !last_failed
        && let Some(started) = job.attempted_at
    {
        let running = job.state == JobState::Running.as_str();
        let ended = job.finalized_at;
        rows.push(Attempt {
            attempt: Some(i64::from(job.attempt)),
            started: Some(when(started)),
            ended: ended.map(when),
            duration: match (running, ended) {
                (true, _) => Some(format!(
                    "{} so far",
                    seconds((Utc::now() - started).num_milliseconds())
                )),
                (false, Some(ended)) => Some(seconds((ended - started).num_milliseconds())),
                (false, None) => None,
            },
            outcome: job.state.clone(),
            error: None,
        });
    }
    rows
}

/// `GET /dashboard/jobs/{id}`: args (secrets redacted), attempts with their errors, timeline,
/// and the actions the viewer's role allows.
#[poem::handler]
pub async fn job_page(
    state: Data<&AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    job_of(&state, &viewer, id, Area::Organization).await
}

/// `GET /dashboard/platform/jobs/{id}`: any job of the installation.
#[poem::handler]
pub async fn platform_job_page(
    state: Data<&AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    job_of(&state, &viewer, id, Area::Platform).await
}

async fn job_of(
    state: &AppState,
    viewer: &Viewer,
    id: Uuid,
    area: Area,
) -> Result<Response, ApiError> {
    let reach = Reach::of(viewer, area)?;
    let mut tx = reach.begin(state).await?;
    let job = admin::get(&mut tx, reach.scope("")?, id)
        .await
        .map_err(admin_error)?;
    tx.commit().await?;
    // Viewers see neither the payload's values nor the error texts (recipients, provider
    // replies), as in the API; operators see everything.
    let payloads = area == Area::Platform || viewer.may::<ReadJobPayloads>();
    let mut attempts = attempts(&job);
    let args = if payloads {
        redacted(job.args.clone())
    } else {
        for attempt in &mut attempts {
            attempt.error = attempt.error.as_ref().map(|_| "[redacted]".to_owned());
        }
        redact_values(job.args.clone())
    };
    let args = serde_json::to_string_pretty(&args).map_err(|e| ApiError::Internal(e.into()))?;
    let state_now: Option<JobState> = job.state.parse().ok();
    let can_manage = area.may::<ManageJobs>(viewer);
    let finished = state_now.is_some_and(|s| {
        matches!(
            s,
            JobState::Completed | JobState::Discarded | JobState::Cancelled
        )
    });
    let waiting = state_now.is_some_and(|s| {
        matches!(
            s,
            JobState::Scheduled | JobState::Retryable | JobState::Available
        )
    });
    render(
        "job.html",
        minijinja::context! {
            job => minijinja::context! {
                id => job.id,
                organization_id => job.organization_id,
                kind => job.kind,
                queue => job.queue,
                state => job.state,
                priority => job.priority,
                attempt => job.attempt,
                max_attempts => job.max_attempts,
                unique_key => job.unique_key,
                created_at => when(job.created_at),
                run_at => when(job.run_at),
                attempted_at => job.attempted_at.map(when),
                finalized_at => job.finalized_at.map(when),
                cancel_requested_at => job.cancel_requested_at.map(when),
                duration => job.attempted_at.zip(job.finalized_at).map(|(a, f)| {
                    format!("{:.3} s", (f - a).num_milliseconds() as f64 / 1000.0)
                }),
            },
            args => args,
            attempts => attempts,
            can_retry => can_manage && (finished || state_now == Some(JobState::Retryable)),
            can_run_now => can_manage && state_now.is_some_and(|s| {
                matches!(s, JobState::Scheduled | JobState::Retryable)
            }),
            can_cancel => can_manage && (waiting || state_now == Some(JobState::Running)),
            ..area.frame(viewer, "jobs")
        },
    )
}

/// `POST /dashboard/jobs/{id}/{retry|run-now|cancel}`, as `POST /api/v1/jobs/{id}/retry` (run
/// now is a retry of a job still waiting) and `/cancel`.
#[poem::handler]
pub async fn job_action(
    state: Data<&AppState>,
    viewer: Viewer,
    Path((id, action)): Path<(Uuid, String)>,
    form: Form<CsrfForm>,
) -> Result<Response, ApiError> {
    viewer.check_csrf(&state, &form.csrf)?;
    let granted = viewer.grant::<ManageJobs>()?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    act_on_job(&mut tx, Some(granted.organization_id()), id, &action).await?;
    tx.commit().await?;
    Ok(see_other(&format!("/dashboard/jobs/{id}")))
}

/// `GET /dashboard/platform/backups`: the platform's backups (operators).
#[poem::handler]
pub async fn platform_backups(
    state: Data<&AppState>,
    viewer: Viewer,
) -> Result<Response, ApiError> {
    viewer.require_operator()?;
    let mut tx = tenant::system(&state.pool).await?;
    let backups = zoark_core::db::backups::recent(&mut tx, 100).await?;
    tx.commit().await?;
    let rows: Vec<minijinja::Value> = backups
        .into_iter()
        .map(|b| {
            minijinja::context! {
                id => b.id,
                kind => b.kind,
                status => b.status,
                destination => b.destination,
                storage_key => b.storage_key,
                size => b.size_bytes.map(|n| format!("{:.1} MiB", n as f64 / 1_048_576.0)),
                sha256 => b.sha256.map(hex::encode),
                encrypted => b.encrypted,
                error => b.error,
                started_at => when(b.started_at),
                took => b.finished_at.map(|f| format!("{:.1} s", (f - b.started_at).num_milliseconds() as f64 / 1000.0)),
            }
        })
        .collect();
    render(
        "backups.html",
        minijinja::context! {
            backups => rows,
            ..Area::Platform.frame(&viewer, "platform")
        },
    )
}

/// `POST /dashboard/platform/jobs/{id}/{retry|run-now|cancel}`: an operator acts on any job.
#[poem::handler]
pub async fn platform_job_action(
    state: Data<&AppState>,
    viewer: Viewer,
    Path((id, action)): Path<(Uuid, String)>,
    form: Form<CsrfForm>,
) -> Result<Response, ApiError> {
    viewer.check_csrf(&state, &form.csrf)?;
    viewer.require_operator()?;
    let mut tx = tenant::system(&state.pool).await?;
    let job = admin::get(&mut tx, Scope::Installation, id)
        .await
        .map_err(admin_error)?;
    act_on_job(&mut tx, job.organization_id, id, &action).await?;
    tx.commit().await?;
    tracing::info!(job = %id, %action, operator = %viewer.email, "operator acted on a job");
    Ok(see_other(&format!("/dashboard/platform/jobs/{id}")))
}

/// Retries (`retry`, `run-now`) or cancels job `id` of `organization_id` (`None`: a platform
/// job).
async fn act_on_job(
    conn: &mut sqlx::PgConnection,
    organization_id: Option<Uuid>,
    id: Uuid,
    action: &str,
) -> Result<(), ApiError> {
    let done = match action {
        "retry" | "run-now" => admin::retry(conn, organization_id, id).await,
        "cancel" => admin::cancel(conn, organization_id, id).await,
        _ => return Err(not_found()),
    };
    done.map(drop).map_err(admin_error)
}

/// The bulk form: the filters of the list, the action, and whether the count was confirmed.
#[derive(Deserialize)]
pub struct BulkForm {
    #[serde(default)]
    csrf: String,
    action: BulkAction,
    #[serde(default)]
    confirmed: bool,
    #[serde(flatten)]
    query: JobsQuery,
}

/// Jobs a bulk form may select one by one (a page's worth, and then some).
const MAX_SELECTED: usize = 500;

/// `POST /dashboard/jobs/bulk`: first a confirmation page with the count (a dry run), then the
/// action, as `POST /api/v1/jobs/retry` and `/cancel`: over the jobs ticked in the list (`id`
/// fields), or when none is, over everything the filter matches.
#[poem::handler]
pub async fn bulk(
    state: Data<&AppState>,
    req: &Request,
    viewer: Viewer,
    body: String,
) -> Result<Response, ApiError> {
    let form: BulkForm = serde_urlencoded::from_str(&body).map_err(|e| ApiError::Refused {
        code: "invalid_form",
        detail: format!("the bulk form could not be read: {e}"),
    })?;
    viewer.check_csrf(&state, &form.csrf)?;
    let granted = viewer.grant::<ManageJobs>()?;
    let selected = selected_ids(&body)?;
    let filter = form.query.filter()?;
    let body = BulkJobs {
        ids: (!selected.is_empty()).then(|| selected.clone()),
        filter: selected.is_empty().then(|| BulkJobFilter {
            state: filter.state.map(JobStateParam::from),
            kind: filter.kind,
            queue: filter.queue,
            created_after: filter.created_after,
            created_before: None,
            args_value: filter.args_value,
        }),
        dry_run: Some(!form.confirmed),
    };
    let result = bulk_jobs(&state, req, &granted, body, form.action).await?.0;
    render(
        "bulk.html",
        minijinja::context! {
            action => form.action,
            result => minijinja::context! {
                changed => result.changed,
                skipped => result.skipped,
                more => result.more,
                dry_run => result.dry_run,
            },
            query => &form.query,
            selected => selected,
            back => format!("/dashboard/jobs?{}", form.query.with_before(None)),
            ..Area::Organization.frame(&viewer, "jobs")
        },
    )
}

/// The `id` fields of a bulk form: the jobs ticked in the list.
fn selected_ids(body: &str) -> Result<Vec<Uuid>, ApiError> {
    let ids = url::form_urlencoded::parse(body.as_bytes())
        .filter(|(key, _)| key == "id")
        .map(|(_, value)| value.parse::<Uuid>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            ApiError::InvalidParameter(FieldError {
                field: "id".into(),
                message: "not a job id".into(),
            })
        })?;
    if ids.len() > MAX_SELECTED {
        return Err(ApiError::InvalidParameter(FieldError {
            field: "id".into(),
            message: format!("select at most {MAX_SELECTED} jobs, or act on the whole filter"),
        }));
    }
    Ok(ids)
}

/// `GET /dashboard/brand.css`: the organization's color (a `#rrggbb` value, never anything
/// else) as a CSS variable, since the CSP allows no inline style.
#[poem::handler]
pub async fn brand_css(viewer: Viewer) -> Response {
    Response::builder()
        .content_type("text/css; charset=utf-8")
        .header(poem::http::header::CACHE_CONTROL, "private, max-age=60")
        .body(format!(
            ":root {{ --brand: {}; }}\n",
            viewer.branding.color()
        ))
}
