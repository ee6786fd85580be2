//! The dashboard's pages and the actions their forms post, each through the same queries,
//! permissions and audit entries as the `/api/v1` operation that does the same.

use chrono::{Duration as Span, Utc};
use poem::{
    Request, Response,
    web::{Data, Form, Path, Query},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{ManageJobs, ManageQueues, ReadJobs},
    db::tenant,
};
use zoark_jobs::{
    JobState,
    admin::{self, JobFilter, JobRecord, QueueStats},
};

use crate::{
    dashboard::{Viewer, render, see_other, session::CsrfForm},
    error::{ApiError, FieldError},
    routes::jobs::{
        BulkAction, BulkJobFilter, BulkJobs, JobStateParam, admin_error, audit_queue,
        bulk as bulk_jobs, queue_name,
    },
    state::AppState,
};

/// Rows per page of the jobs list.
const PAGE: i64 = 50;

/// One queue's row of the overview and the queues page.
#[derive(Serialize)]
struct QueueRow {
    #[serde(flatten)]
    stats: QueueStats,
    paused: bool,
}

/// The organization's queues with their counts and pauses, by name.
async fn queue_rows(
    conn: &mut sqlx::PgConnection,
    organization_id: Uuid,
) -> Result<Vec<QueueRow>, ApiError> {
    let mut rows: Vec<QueueRow> = admin::queues(conn, Some(organization_id))
        .await?
        .into_iter()
        .map(|stats| QueueRow {
            stats,
            paused: false,
        })
        .collect();
    for pause in admin::queue_pauses(conn, Some(organization_id)).await? {
        match rows.iter_mut().find(|q| q.stats.queue == pause.queue) {
            Some(row) => row.paused = true,
            None => rows.push(QueueRow {
                stats: QueueStats::empty(pause.queue),
                paused: true,
            }),
        }
    }
    rows.sort_by(|a, b| a.stats.queue.cmp(&b.stats.queue));
    Ok(rows)
}

/// `GET /dashboard`: per queue, jobs by state and the age of the oldest waiting job.
#[poem::handler]
pub async fn overview(state: Data<&AppState>, viewer: Viewer) -> Result<Response, ApiError> {
    let granted = viewer.grant::<ReadJobs>()?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let rows = queue_rows(&mut tx, granted.organization_id()).await?;
    tx.commit().await?;
    render(
        "overview.html",
        minijinja::context! { viewer => viewer.chrome("overview"), queues => rows },
    )
}

/// `GET /dashboard/queues`: pause and resume (admins), backlog.
#[poem::handler]
pub async fn queues_page(state: Data<&AppState>, viewer: Viewer) -> Result<Response, ApiError> {
    let granted = viewer.grant::<ReadJobs>()?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let rows = queue_rows(&mut tx, granted.organization_id()).await?;
    tx.commit().await?;
    render(
        "queues.html",
        minijinja::context! {
            viewer => viewer.chrome("queues"),
            queues => rows,
            can_pause => viewer.may::<ManageQueues>(),
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
    let organization_id = Some(granted.organization_id());
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let changed = match action.as_str() {
        "pause" => {
            admin::pause_queue(&mut tx, organization_id, &queue, granted.actor().user_id())
                .await?
                .1
        }
        "resume" => admin::resume_queue(&mut tx, organization_id, &queue).await?,
        _ => return Err(not_found()),
    };
    if changed {
        let audited = if action == "pause" {
            "queue.paused"
        } else {
            "queue.resumed"
        };
        audit_queue(&mut tx, &granted, req, &state, audited, &queue).await?;
    }
    tx.commit().await?;
    Ok(see_other("/dashboard/queues"))
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
        [&self.state, &self.queue, &self.kind, &self.q, &self.since]
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
    let query = query.0;
    let granted = viewer.grant::<ReadJobs>()?;
    if let Ok(id) = query.q.trim().parse::<Uuid>() {
        return Ok(see_other(&format!("/dashboard/jobs/{id}")));
    }
    let mut filter = query.filter()?;
    filter.before_id = given(&query.before)
        .map(|b| b.parse().map_err(|_| invalid("before", "not a job id")))
        .transpose()?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let mut rows = admin::list(&mut tx, granted.organization_id(), &filter, PAGE + 1).await?;
    let queue_names: Vec<String> = queue_rows(&mut tx, granted.organization_id())
        .await?
        .into_iter()
        .map(|q| q.stats.queue)
        .collect();
    tx.commit().await?;
    let more = rows.len() > usize::try_from(PAGE).unwrap_or(0);
    rows.truncate(usize::try_from(PAGE).unwrap_or(0));
    let next = more
        .then(|| rows.last().map(|r| query.with_before(Some(r.id))))
        .flatten();
    let first = filter.before_id.map(|_| query.with_before(None));
    let rows: Vec<JobRow> = rows.into_iter().map(JobRow::from).collect();
    render(
        "jobs.html",
        minijinja::context! {
            viewer => viewer.chrome("jobs"),
            jobs => rows,
            query => &query,
            filtered => query.is_filtered(),
            next => next,
            first => first,
            states => JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
            queues => queue_names,
            can_manage => viewer.may::<ManageJobs>(),
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
#[derive(Serialize, Deserialize)]
struct Attempt {
    attempt: Option<i64>,
    at: Option<String>,
    kind: Option<String>,
    error: Option<String>,
}

/// `GET /dashboard/jobs/{id}`: args (secrets redacted), attempts with their errors, timeline,
/// and the actions the viewer's role allows.
#[poem::handler]
pub async fn job(
    state: Data<&AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let granted = viewer.grant::<ReadJobs>()?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let job = admin::get(&mut tx, granted.organization_id(), id)
        .await
        .map_err(admin_error)?;
    tx.commit().await?;
    let attempts: Vec<Attempt> = serde_json::from_value(job.errors.clone()).unwrap_or_default();
    let args = serde_json::to_string_pretty(&redacted(job.args.clone()))
        .map_err(|e| ApiError::Internal(e.into()))?;
    let state_now: Option<JobState> = job.state.parse().ok();
    let can_manage = viewer.may::<ManageJobs>();
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
            viewer => viewer.chrome("jobs"),
            job => minijinja::context! {
                id => job.id,
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
    let organization_id = Some(granted.organization_id());
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let done = match action.as_str() {
        "retry" | "run-now" => admin::retry(&mut tx, organization_id, id).await,
        "cancel" => admin::cancel(&mut tx, organization_id, id).await,
        _ => return Err(not_found()),
    };
    done.map_err(admin_error)?;
    tx.commit().await?;
    Ok(see_other(&format!("/dashboard/jobs/{id}")))
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

/// `POST /dashboard/jobs/bulk`: first a confirmation page with the count (a dry run), then the
/// action over the whole filter, as `POST /api/v1/jobs/retry` and `/cancel`.
#[poem::handler]
pub async fn bulk(
    state: Data<&AppState>,
    req: &Request,
    viewer: Viewer,
    form: Form<BulkForm>,
) -> Result<Response, ApiError> {
    let form = form.0;
    viewer.check_csrf(&state, &form.csrf)?;
    let granted = viewer.grant::<ManageJobs>()?;
    let filter = form.query.filter()?;
    let body = BulkJobs {
        ids: None,
        filter: Some(BulkJobFilter {
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
            viewer => viewer.chrome("jobs"),
            action => form.action,
            result => minijinja::context! {
                changed => result.changed,
                skipped => result.skipped,
                more => result.more,
                dry_run => result.dry_run,
            },
            query => &form.query,
            back => format!("/dashboard/jobs?{}", form.query.with_before(None)),
        },
    )
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
