//! `/api/v1/agents` (the organization's agents: one of each built-in kind) and
//! `/api/v1/agent-schedules`: cron expressions read in a time zone, validated on input, which
//! the scheduler turns into agent runs exactly once per tick.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::Example,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{ManageAgents, ReadAgents},
    db::{
        agents::{self, ScheduleFields},
        audit::{self, Entry},
        tenant,
    },
    identity::Invalid,
    schedule,
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, FieldError, Fields},
    etag, idempotency,
    json::JsonBody,
    pagination::PageRequest,
    routes::{ApiTags, NoContent, organization::time_zone},
    state::AppState,
};

pub struct AgentsApi;

/// An agent of the organization.
#[derive(Debug, Object, Serialize)]
pub struct Agent {
    pub id: Uuid,
    /// `task_monitor`, `task_escalator`, `approval_nudger`, `timesheet_reminder`,
    /// `team_coordinator`, `document_indexer`, `broadcast_sender` or `custom`.
    pub kind: String,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<agents::Agent> for Agent {
    fn from(a: agents::Agent) -> Self {
        Self {
            id: a.id,
            kind: a.kind,
            name: a.name,
            description: a.description,
            enabled: a.enabled,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct AgentList {
    pub items: Vec<Agent>,
    pub next_cursor: Option<String>,
}

/// `POST /agent-schedules`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewAgentSchedule {
    pub agent_id: Uuid,
    /// Five fields as in crontab: `minute hour day-of-month month day-of-week` (weekdays 0–7,
    /// Sunday 0 or 7, or `MON`–`SUN`).
    pub cron_expression: String,
    /// IANA time zone the expression is read in (default `UTC`).
    pub time_zone: Option<String>,
    /// Default `true`.
    pub enabled: Option<bool>,
}

impl Example for NewAgentSchedule {
    fn example() -> Self {
        Self {
            agent_id: Uuid::nil(),
            cron_expression: "0 9 * * 1-5".into(),
            time_zone: Some("Europe/Paris".into()),
            enabled: Some(true),
        }
    }
}

/// `PATCH /agent-schedules/{id}`: absent fields stay. The next run is recomputed from now.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct AgentSchedulePatch {
    pub cron_expression: Option<String>,
    pub time_zone: Option<String>,
    pub enabled: Option<bool>,
}

impl poem_openapi::types::Example for AgentSchedulePatch {
    fn example() -> Self {
        Self {
            cron_expression: Some("30 8 * * 1-5".into()),
            time_zone: None,
            enabled: Some(true),
        }
    }
}

/// A schedule.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct AgentSchedule {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub cron_expression: String,
    pub time_zone: String,
    pub enabled: bool,
    /// The next tick the scheduler will run (UTC).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last tick it ran.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The next three ticks (none while disabled), for checking the expression.
    pub upcoming: Vec<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<agents::Schedule> for AgentSchedule {
    fn from(s: agents::Schedule) -> Self {
        let upcoming = match (s.enabled, parsed(&s.cron_expression, &s.time_zone)) {
            (true, Some((cron, tz))) => cron
                .after(&Utc::now().with_timezone(&tz))
                .take(3)
                .map(|t| t.with_timezone(&Utc))
                .collect(),
            _ => Vec::new(),
        };
        Self {
            id: s.id,
            agent_id: s.agent_id,
            cron_expression: s.cron_expression,
            time_zone: s.time_zone,
            enabled: s.enabled,
            next_run_at: s.next_run_at.filter(|_| s.enabled),
            last_run_at: s.last_run_at,
            upcoming,
            created_by: s.created_by,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

fn parsed(expression: &str, zone: &str) -> Option<(cron::Schedule, Tz)> {
    Some((schedule::parse(expression).ok()?, zone.parse().ok()?))
}

#[derive(Debug, Object)]
pub struct AgentScheduleList {
    pub items: Vec<AgentSchedule>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum ScheduleCreated {
    /// The schedule.
    #[oai(status = 201)]
    Created(
        Json<AgentSchedule>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

/// A crontab expression of five fields that has a next tick.
fn cron_expression(raw: &str) -> Result<String, Invalid> {
    let expression = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    if expression.split(' ').count() != 5 || expression.len() > 200 {
        return Err(Invalid(
            "must have five fields: minute hour day-of-month month day-of-week".into(),
        ));
    }
    let parsed = schedule::parse(&expression).map_err(|e| Invalid(e.reason))?;
    if parsed.upcoming(Utc).next().is_none() {
        return Err(Invalid("never fires".into()));
    }
    Ok(expression)
}

/// Parses a patch (a create sets every field), checking the expression and zone it ends with.
fn parse(
    cron: Option<String>,
    zone: Option<String>,
    enabled: Option<bool>,
) -> Result<ScheduleFields, ApiError> {
    let mut fields = Fields::default();
    let out = ScheduleFields {
        agent_id: None,
        cron_expression: cron.and_then(|c| fields.take("cron_expression", cron_expression(&c))),
        time_zone: zone.and_then(|z| fields.take("time_zone", time_zone(&z))),
        enabled,
    };
    fields.finish()?;
    Ok(out)
}

/// The next tick after now, in UTC.
fn next_run(expression: &str, zone: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    let (cron, tz) = parsed(expression, zone).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "a stored schedule does not parse: {expression} {zone}"
        ))
    })?;
    Ok(schedule::next_tick(&cron, tz, Utc::now()))
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "agent_schedule_not_found",
        detail: "No agent schedule with this id in the organization.".into(),
    }
}

#[OpenApi(tag = "ApiTags::Agents", prefix_path = "/api/v1")]
impl AgentsApi {
    /// List agents
    ///
    /// The organization's agents, newest first: one of each built-in kind (seeded with the
    /// organization) and custom ones. Needs `agents.read` (member).
    #[oai(path = "/agents", method = "get", operation_id = "agents_list")]
    async fn list_agents(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<AgentList>, ApiError> {
        let granted = auth.grant::<ReadAgents>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = agents::list(&mut tx, &granted, page.before_id, page.fetch()).await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |a| a.id);
        Ok(Json(AgentList {
            items: rows.into_iter().map(Agent::from).collect(),
            next_cursor,
        }))
    }

    /// Get an agent
    ///
    /// With an `ETag`; `If-None-Match` with it answers 304. Needs `agents.read` (member).
    #[oai(path = "/agents/:id", method = "get", operation_id = "agents_get")]
    async fn get_agent(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<Agent>, ApiError> {
        let granted = auth.grant::<ReadAgents>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let agent: Agent = agents::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(|| ApiError::NotFound {
                code: "agent_not_found",
                detail: "No agent with this id in the organization.".into(),
            })?
            .into();
        tx.commit().await?;
        Ok(etag::found(agent, if_none_match.0.as_deref()))
    }

    /// Create an agent schedule
    ///
    /// The expression is read in `time_zone` (daylight saving included); the first run is its
    /// next tick. Each tick runs the agent once, however many scheduler replicas run; ticks
    /// missed while the scheduler was down run once, not once each. `Idempotency-Key` replays
    /// the first response of a retried request. Needs `agents.manage` (manager).
    #[oai(
        path = "/agent-schedules",
        method = "post",
        operation_id = "agent_schedules_create"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewAgentSchedule>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<ScheduleCreated, ApiError> {
        let granted = auth.grant::<ManageAgents>(&state).await?;
        let body = body.0;
        let key = idempotency::Key::parse(
            idempotency_key.0.as_deref(),
            "agent_schedules_create",
            &body,
        )?;
        let organization_id = granted.organization_id();
        let mut fields = parse(
            Some(body.cron_expression.clone()),
            Some(body.time_zone.clone().unwrap_or_else(|| "UTC".into())),
            body.enabled,
        )?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<AgentSchedule>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(ScheduleCreated::Created(Json(replay), Some(true)));
        }
        if agents::get(&mut tx, &granted, body.agent_id)
            .await?
            .is_none()
        {
            return Err(ApiError::Validation(vec![FieldError {
                field: "agent_id".into(),
                message: "no agent with this id in the organization".into(),
            }]));
        }
        fields.agent_id = Some(body.agent_id);
        let (Some(expression), Some(zone)) = (&fields.cron_expression, &fields.time_zone) else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "parsed schedule fields missing"
            )));
        };
        let next = next_run(expression, zone)?;
        let id = agents::insert_schedule(&mut tx, &granted, &fields, next).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("agent_schedule.created", &client(req, &state.settings))
                .on("agent_schedule", id),
        )
        .await?;
        let schedule: AgentSchedule = agents::get_schedule(&mut tx, &granted, id)
            .await?
            .ok_or_else(not_found)?
            .into();
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &schedule).await?;
        }
        tx.commit().await?;
        Ok(ScheduleCreated::Created(Json(schedule), None))
    }

    /// List agent schedules
    ///
    /// Newest first; filter by agent or enabled. Needs `agents.read` (member).
    #[oai(
        path = "/agent-schedules",
        method = "get",
        operation_id = "agent_schedules_list"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Only this agent's schedules.
        agent_id: Query<Option<Uuid>>,
        /// Only enabled (`true`) or disabled (`false`) schedules.
        enabled: Query<Option<bool>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<AgentScheduleList>, ApiError> {
        let granted = auth.grant::<ReadAgents>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = agents::list_schedules(
            &mut tx,
            &granted,
            &agents::ScheduleFilter {
                id: None,
                agent_id: agent_id.0,
                enabled: enabled.0,
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |s| s.id);
        Ok(Json(AgentScheduleList {
            items: rows.into_iter().map(AgentSchedule::from).collect(),
            next_cursor,
        }))
    }

    /// Get an agent schedule
    ///
    /// With its next ticks and an `ETag`; `If-None-Match` with it answers 304 while nothing
    /// changed. Needs `agents.read` (member).
    #[oai(
        path = "/agent-schedules/:id",
        method = "get",
        operation_id = "agent_schedules_get"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<AgentSchedule>, ApiError> {
        let granted = auth.grant::<ReadAgents>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let schedule: AgentSchedule = agents::get_schedule(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        tx.commit().await?;
        Ok(etag::found(schedule, if_none_match.0.as_deref()))
    }

    /// Change an agent schedule
    ///
    /// Absent fields stay. The next run is recomputed from now: re-enabling a schedule does
    /// not run the ticks it missed while disabled. Needs `agents.manage` (manager).
    #[oai(
        path = "/agent-schedules/:id",
        method = "patch",
        operation_id = "agent_schedules_update"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<AgentSchedulePatch>,
    ) -> Result<Json<AgentSchedule>, ApiError> {
        let granted = auth.grant::<ManageAgents>(&state).await?;
        let body = body.0;
        let fields = parse(body.cron_expression, body.time_zone, body.enabled)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !agents::lock_schedule(&mut tx, &granted, id.0).await? {
            return Err(not_found());
        }
        let mut schedule = agents::get_schedule(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        if let Some(expression) = fields.cron_expression {
            schedule.cron_expression = expression;
        }
        if let Some(zone) = fields.time_zone {
            schedule.time_zone = zone;
        }
        if let Some(enabled) = fields.enabled {
            schedule.enabled = enabled;
        }
        schedule.next_run_at = next_run(&schedule.cron_expression, &schedule.time_zone)?;
        agents::update_schedule(&mut tx, &granted, &schedule).await?;
        let schedule = agents::get_schedule(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Json(schedule.into()))
    }

    /// Delete an agent schedule
    ///
    /// Runs already enqueued stay. Needs `agents.manage` (manager). Audited as
    /// `agent_schedule.deleted`.
    #[oai(
        path = "/agent-schedules/:id",
        method = "delete",
        operation_id = "agent_schedules_delete"
    )]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageAgents>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let schedule = agents::get_schedule(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        agents::delete_schedule(&mut tx, &granted, id.0).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("agent_schedule.deleted", &client(req, &state.settings))
                .on("agent_schedule", id.0)
                .with(serde_json::json!({
                    "agent_id": schedule.agent_id,
                    "cron_expression": schedule.cron_expression,
                    "time_zone": schedule.time_zone,
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}
