//! The dashboard's pages beside the jobs: schedules (agent schedules, and the static cron table
//! for operators), agent runs with their steps and the activity feed, broadcasts with their
//! delivery progress, and the audit log; each with the permission its `/api/v1` listing takes.

use std::collections::BTreeMap;

use poem::{
    Response,
    web::{Data, Path, Query},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{ReadAgents, ReadAuditLog, ReadBroadcasts},
    db::{self, tenant},
};

use crate::{
    dashboard::{Viewer, render},
    error::ApiError,
    pagination::PageRequest,
    state::AppState,
};

/// `?before=<id>`: the keyset cursor of every list page.
#[derive(Debug, Default, Deserialize)]
pub struct Cursor {
    #[serde(default)]
    before: String,
}

impl Cursor {
    fn page(&self) -> Result<PageRequest, ApiError> {
        let before = self.before.trim();
        PageRequest::parse(None, (!before.is_empty()).then_some(before))
    }
}

fn not_found(what: &str) -> ApiError {
    ApiError::NotFound {
        code: "not_found",
        detail: format!("No such {what} in this organization."),
    }
}

/// The organization's agents' names, by id.
async fn agent_names(
    conn: &mut sqlx::PgConnection,
    granted: &zoark_core::access::Granted<ReadAgents>,
) -> Result<BTreeMap<Uuid, String>, ApiError> {
    Ok(db::agents::list(conn, granted, None, 1000)
        .await?
        .into_iter()
        .map(|a| (a.id, a.name))
        .collect())
}

/// One entry of the static cron table.
#[derive(Serialize)]
struct CronRow {
    name: &'static str,
    schedule: String,
    last: Option<String>,
    next: Option<String>,
}

/// `GET /dashboard/schedules`: the agent schedules with their last and next runs; operators
/// also see the platform's static cron table.
#[poem::handler]
pub async fn schedules(state: Data<&AppState>, viewer: Viewer) -> Result<Response, ApiError> {
    let granted = viewer.grant::<ReadAgents>()?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let names = agent_names(&mut tx, &granted).await?;
    let filter = db::agents::ScheduleFilter::default();
    let rows = db::agents::list_schedules(&mut tx, &granted, &filter, 200).await?;
    tx.commit().await?;
    let cron = if viewer.operator {
        let table =
            zoark_scheduler::cron::CronTable::platform(state.settings.backup.schedule.as_deref())
                .map_err(|e| ApiError::Internal(e.into()))?;
        let mut conn = tenant::system(&state.pool).await?;
        let last: BTreeMap<String, chrono::DateTime<chrono::Utc>> =
            zoark_scheduler::cron::last_ticks(&mut conn)
                .await?
                .into_iter()
                .collect();
        conn.commit().await?;
        table
            .0
            .iter()
            .map(|entry| CronRow {
                name: entry.name,
                schedule: entry.schedule.source().to_owned(),
                last: last.get(entry.name).map(|t| t.to_rfc3339()),
                next: entry
                    .schedule
                    .upcoming(chrono::Utc)
                    .next()
                    .map(|t| t.to_rfc3339()),
            })
            .collect()
    } else {
        Vec::new()
    };
    render(
        "schedules.html",
        minijinja::context! {
            viewer => viewer.chrome("schedules"),
            schedules => rows,
            agents => names.into_iter().map(|(id, name)| (id.to_string(), name)).collect::<BTreeMap<_, _>>(),
            cron => cron,
        },
    )
}

/// `GET /dashboard/agent-runs`: the runs, newest first, and the latest activity.
#[poem::handler]
pub async fn agent_runs(
    state: Data<&AppState>,
    viewer: Viewer,
    cursor: Query<Cursor>,
) -> Result<Response, ApiError> {
    let granted = viewer.grant::<ReadAgents>()?;
    let page = cursor.page()?;
    let filter = db::agent_runs::Filter {
        before_id: page.before_id,
        ..Default::default()
    };
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let names = agent_names(&mut tx, &granted).await?;
    let rows = db::agent_runs::list(&mut tx, &granted, &filter, page.fetch()).await?;
    let activity = db::agent_runs::activity(
        &mut tx,
        &granted,
        &db::agent_runs::ActivityFilter::default(),
        20,
    )
    .await?;
    tx.commit().await?;
    let (rows, next) = page.page(rows, |r| r.id);
    render(
        "agent_runs.html",
        minijinja::context! {
            viewer => viewer.chrome("agent-runs"),
            runs => rows,
            activity => activity,
            agents => names.into_iter().map(|(id, name)| (id.to_string(), name)).collect::<BTreeMap<_, _>>(),
            next => next,
        },
    )
}

/// `GET /dashboard/agent-runs/{id}`: a run with every step's request, response, tokens and time.
#[poem::handler]
pub async fn agent_run(
    state: Data<&AppState>,
    viewer: Viewer,
    Path(id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let granted = viewer.grant::<ReadAgents>()?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let run = db::agent_runs::get(&mut tx, &granted, id)
        .await?
        .ok_or_else(|| not_found("agent run"))?;
    let steps = db::agent_runs::steps(&mut tx, &granted, id).await?;
    let names = agent_names(&mut tx, &granted).await?;
    tx.commit().await?;
    let pretty = |v: &Option<serde_json::Value>| {
        v.as_ref()
            .map(|v| serde_json::to_string_pretty(v).unwrap_or_default())
    };
    let steps: Vec<_> = steps
        .iter()
        .map(|s| {
            minijinja::context! {
                position => s.position,
                kind => s.kind,
                status => s.status,
                error => s.error,
                tokens_in => s.tokens_in,
                tokens_out => s.tokens_out,
                cost_micros => s.cost_micros,
                started_at => s.started_at.to_rfc3339(),
                duration_ms => s.finished_at.map(|f| (f - s.started_at).num_milliseconds()),
                request => pretty(&s.request),
                response => pretty(&s.response),
            }
        })
        .collect();
    render(
        "agent_run.html",
        minijinja::context! {
            viewer => viewer.chrome("agent-runs"),
            agent => names.get(&run.agent_id),
            run => run,
            steps => steps,
        },
    )
}

/// `GET /dashboard/broadcasts`: broadcasts with their deliveries counted by status.
#[poem::handler]
pub async fn broadcasts(
    state: Data<&AppState>,
    viewer: Viewer,
    cursor: Query<Cursor>,
) -> Result<Response, ApiError> {
    let granted = viewer.grant::<ReadBroadcasts>()?;
    let page = cursor.page()?;
    let filter = db::broadcasts::Filter {
        before_id: page.before_id,
        ..Default::default()
    };
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let rows = db::broadcasts::list(&mut tx, &granted, &filter, page.fetch()).await?;
    let (rows, next) = page.page(rows, |b| b.id);
    let ids: Vec<Uuid> = rows.iter().map(|b| b.id).collect();
    let counts = db::broadcasts::counts(&mut tx, granted.organization_id(), &ids).await?;
    tx.commit().await?;
    let mut progress: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for (id, status, count) in counts {
        progress
            .entry(id.to_string())
            .or_default()
            .insert(status, count);
    }
    render(
        "broadcasts.html",
        minijinja::context! {
            viewer => viewer.chrome("broadcasts"),
            broadcasts => rows,
            progress => progress,
            next => next,
        },
    )
}

/// `GET /dashboard/audit-log`: the organization's audit log, newest first (admins).
#[poem::handler]
pub async fn audit_log(
    state: Data<&AppState>,
    viewer: Viewer,
    cursor: Query<Cursor>,
) -> Result<Response, ApiError> {
    let granted = viewer.grant::<ReadAuditLog>()?;
    let page = cursor.page()?;
    let filter = db::audit::Filter {
        before_id: page.before_id,
        ..Default::default()
    };
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    let rows = db::audit::list(&mut tx, &granted, &filter, page.fetch()).await?;
    tx.commit().await?;
    let (rows, next) = page.page(rows, |r| r.id);
    render(
        "audit_log.html",
        minijinja::context! {
            viewer => viewer.chrome("audit-log"),
            entries => rows,
            next => next,
        },
    )
}
