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
    types::{Example, MaybeUndefined},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use zoark_core::{
    access::{ManageAgents, ReadAgents},
    agents::{AgentKind, Tool},
    db::{
        agents::{self, AgentFields, ScheduleFields},
        audit::{self, Entry},
        llm_credentials, tenant,
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
    routes::{
        ApiTags, NoContent, organization::time_zone, projects::long_text, team_members::text,
    },
    state::AppState,
};

pub struct AgentsApi;

/// An agent of the organization.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct Agent {
    pub id: Uuid,
    pub kind: AgentKind,
    pub name: String,
    pub description: Option<String>,
    /// Who the agent is, for the LLM (custom agents).
    pub role: Option<String>,
    /// What it is for (custom agents).
    pub goal: Option<String>,
    /// How it works (custom agents).
    pub instructions: Option<String>,
    /// The model; the provider's default model when absent.
    pub model: Option<String>,
    /// Its LLM provider; the organization's oldest (or the platform's) when absent.
    pub llm_credential_id: Option<Uuid>,
    /// The Zoark operations it may call (`GET /agent-tools`).
    pub tools: Vec<Tool>,
    /// Settings of its kind; a custom agent's `output_schema` (a JSON Schema) makes its
    /// result structured.
    pub config: Value,
    /// LLM calls a run may make.
    pub max_steps: i32,
    /// Tokens one answer may have.
    pub max_tokens: Option<i32>,
    pub enabled: bool,
    /// Its runs act with this user's role at run time (custom agents).
    pub created_by: Option<Uuid>,
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
            role: a.role,
            goal: a.goal,
            instructions: a.instructions,
            model: a.model,
            llm_credential_id: a.llm_credential_id,
            tools: a.tools.iter().filter_map(|t| Tool::from_id(t)).collect(),
            config: a.config,
            max_steps: a.max_steps,
            max_tokens: a.max_tokens,
            enabled: a.enabled,
            created_by: a.created_by,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// `POST /agents`: a custom agent.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewAgent {
    /// 1 to 200 characters.
    pub name: String,
    pub description: Option<String>,
    /// Who the agent is, e.g. "a careful project coordinator" (at most 2,000 characters).
    pub role: Option<String>,
    /// What it is for (1 to 5,000 characters).
    pub goal: String,
    /// How it works (1 to 50,000 characters).
    pub instructions: String,
    pub model: Option<String>,
    pub llm_credential_id: Option<Uuid>,
    /// Tool ids from `GET /agent-tools` (default none).
    pub tools: Option<Vec<Tool>>,
    /// A JSON object (at most 16 KiB); `output_schema`, a JSON Schema, makes results structured.
    pub config: Option<Value>,
    /// 1 to 100 (default 10).
    pub max_steps: Option<i32>,
    /// 1 to 1,000,000.
    pub max_tokens: Option<i32>,
    /// Default `true`.
    pub enabled: Option<bool>,
}

impl Example for NewAgent {
    fn example() -> Self {
        Self {
            name: "Board keeper".into(),
            description: Some("Keeps the Apollo board tidy.".into()),
            role: Some("a careful project coordinator".into()),
            goal: "Every stuck task of Apollo has a note saying what blocks it.".into(),
            instructions: "Search Apollo's active tasks; for each without activity this week, \
                           log a note asking its assignee what blocks it."
                .into(),
            model: Some("gpt-4o-mini".into()),
            llm_credential_id: None,
            tools: Some(vec![Tool::SearchTasks, Tool::LogWork]),
            config: None,
            max_steps: Some(10),
            max_tokens: None,
            enabled: Some(true),
        }
    }
}

/// `PATCH /agents/{id}`: absent fields stay, `null` clears. Built-in agents take `name`,
/// `description`, `model`, `llm_credential_id`, `config`, `max_tokens` and `enabled`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct AgentPatch {
    pub name: Option<String>,
    #[serde(default)]
    pub description: MaybeUndefined<String>,
    #[serde(default)]
    pub role: MaybeUndefined<String>,
    pub goal: Option<String>,
    pub instructions: Option<String>,
    #[serde(default)]
    pub model: MaybeUndefined<String>,
    #[serde(default)]
    pub llm_credential_id: MaybeUndefined<Uuid>,
    pub tools: Option<Vec<Tool>>,
    pub config: Option<Value>,
    pub max_steps: Option<i32>,
    #[serde(default)]
    pub max_tokens: MaybeUndefined<i32>,
    pub enabled: Option<bool>,
}

impl Example for AgentPatch {
    fn example() -> Self {
        Self {
            name: None,
            description: MaybeUndefined::Undefined,
            role: MaybeUndefined::Undefined,
            goal: None,
            instructions: None,
            model: MaybeUndefined::Value("gpt-4o".into()),
            llm_credential_id: MaybeUndefined::Undefined,
            tools: None,
            config: None,
            max_steps: None,
            max_tokens: MaybeUndefined::Null,
            enabled: Some(false),
        }
    }
}

/// A tool a custom agent may be given.
#[derive(Debug, Object)]
pub struct AgentTool {
    pub id: Tool,
    /// What the LLM is told it does.
    pub description: String,
    /// The permission it needs: a run whose role lacks it is refused the tool.
    pub permission: String,
    /// Its arguments, as a JSON Schema.
    pub parameters: Value,
}

#[derive(Debug, Object)]
pub struct AgentToolList {
    pub items: Vec<AgentTool>,
}

#[derive(ApiResponse)]
pub enum AgentCreated {
    /// The agent.
    #[oai(status = 201)]
    Created(
        Json<Agent>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

/// The most of an agent's `config`, serialized.
const MAX_CONFIG_BYTES: usize = 16 * 1024;

fn config(raw: Value) -> Result<Value, Invalid> {
    if !raw.is_object() || raw.to_string().len() > MAX_CONFIG_BYTES {
        return Err(Invalid("must be a JSON object of at most 16 KiB".into()));
    }
    if raw.get("output_schema").is_some_and(|s| !s.is_object()) {
        return Err(Invalid(
            "`output_schema` must be a JSON Schema object".into(),
        ));
    }
    Ok(raw)
}

fn within(min: i32, max: i32) -> impl Fn(i32) -> Result<i32, Invalid> {
    move |n| {
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(Invalid(format!("must be between {min} and {max}")))
        }
    }
}

/// Parses an agent patch (a create sets the required fields).
fn parse_agent(body: AgentPatch) -> Result<AgentFields, ApiError> {
    let mut fields = Fields::default();
    let nullable = |fields: &mut Fields, name: &str, v: MaybeUndefined<String>, max: usize| match v
    {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => fields.take(name, long_text(max)(&v)).map(Some),
    };
    let out = AgentFields {
        name: body.name.and_then(|v| fields.take("name", text(200)(&v))),
        description: nullable(&mut fields, "description", body.description, 5_000),
        role: nullable(&mut fields, "role", body.role, 2_000),
        goal: body
            .goal
            .and_then(|v| fields.take("goal", text_block(5_000)(&v))),
        instructions: body
            .instructions
            .and_then(|v| fields.take("instructions", text_block(50_000)(&v))),
        model: match body.model {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(v) => fields.take("model", text(200)(&v)).map(Some),
        },
        llm_credential_id: body.llm_credential_id.into(),
        tools: body
            .tools
            .map(|t| t.into_iter().map(|t| t.id().to_owned()).collect()),
        config: body.config.and_then(|v| fields.take("config", config(v))),
        max_steps: body
            .max_steps
            .and_then(|v| fields.take("max_steps", within(1, 100)(v))),
        max_tokens: match body.max_tokens {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Value(v) => {
                fields.take("max_tokens", within(1, 1_000_000)(v)).map(Some)
            }
        },
        enabled: body.enabled,
    };
    fields.finish()?;
    Ok(out)
}

/// Text of 1 to `max` characters, trimmed (lines allowed).
fn text_block(max: usize) -> impl Fn(&str) -> Result<String, Invalid> {
    move |raw: &str| {
        let v = raw.trim();
        if v.is_empty() || v.chars().count() > max || v.contains('\0') {
            Err(Invalid(format!("must be 1 to {max} characters")))
        } else {
            Ok(v.to_owned())
        }
    }
}

fn agent_not_found() -> ApiError {
    ApiError::NotFound {
        code: "agent_not_found",
        detail: "No agent with this id in the organization.".into(),
    }
}

/// Refuses a credential of another organization (or none) before the foreign key does.
async fn check_credential(
    tx: &mut sqlx::PgConnection,
    organization_id: Uuid,
    fields: &AgentFields,
) -> Result<(), ApiError> {
    if let Some(Some(id)) = fields.llm_credential_id
        && llm_credentials::for_calling(tx, organization_id, Some(id))
            .await?
            .is_none()
    {
        return Err(ApiError::Validation(vec![FieldError {
            field: "llm_credential_id".into(),
            message: "no LLM provider with this id in the organization".into(),
        }]));
    }
    Ok(())
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
            .ok_or_else(agent_not_found)?
            .into();
        tx.commit().await?;
        Ok(etag::found(agent, if_none_match.0.as_deref()))
    }

    /// Create a custom agent
    ///
    /// Instructions, a goal and tools from `GET /agent-tools`; its runs act with the creator's
    /// role at run time (a creator removed from the organization leaves it disabled).
    /// `Idempotency-Key` replays the first response of a retried request. Needs
    /// `agents.manage` (manager). Audited as `agent.created`.
    #[oai(path = "/agents", method = "post", operation_id = "agents_create")]
    async fn create_agent(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewAgent>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<AgentCreated, ApiError> {
        let granted = auth.grant::<ManageAgents>(&state).await?;
        let body = body.0;
        let key = idempotency::Key::parse(idempotency_key.0.as_deref(), "agents_create", &body)?;
        let optional = MaybeUndefined::from_opt_undefined;
        let fields = parse_agent(AgentPatch {
            name: Some(body.name.clone()),
            description: optional(body.description.clone()),
            role: optional(body.role.clone()),
            goal: Some(body.goal.clone()),
            instructions: Some(body.instructions.clone()),
            model: optional(body.model.clone()),
            llm_credential_id: MaybeUndefined::from_opt_undefined(body.llm_credential_id),
            tools: body.tools.clone(),
            config: body.config.clone(),
            max_steps: body.max_steps,
            max_tokens: MaybeUndefined::from_opt_undefined(body.max_tokens),
            enabled: body.enabled,
        })?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<Agent>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(AgentCreated::Created(Json(replay), Some(true)));
        }
        check_credential(&mut tx, organization_id, &fields).await?;
        let id = agents::insert_custom(&mut tx, &granted, &fields).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("agent.created", &client(req, &state.settings)).on("agent", id),
        )
        .await?;
        let agent: Agent = agents::get(&mut tx, &granted, id)
            .await?
            .ok_or_else(agent_not_found)?
            .into();
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &agent).await?;
        }
        tx.commit().await?;
        Ok(AgentCreated::Created(Json(agent), None))
    }

    /// Change an agent
    ///
    /// Absent fields stay, `null` clears. A built-in agent's instructions and tools are its
    /// code: it takes `name`, `description`, `model`, `llm_credential_id`, `config`,
    /// `max_tokens` and `enabled` only. Needs `agents.manage` (manager). Audited as
    /// `agent.updated` with the changed field names.
    #[oai(path = "/agents/:id", method = "patch", operation_id = "agents_update")]
    async fn update_agent(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
        body: JsonBody<AgentPatch>,
    ) -> Result<Json<Agent>, ApiError> {
        let granted = auth.grant::<ManageAgents>(&state).await?;
        let fields = parse_agent(body.0)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let agent = agents::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(agent_not_found)?;
        let names = fields.names();
        if agent.kind != AgentKind::Custom {
            let refused: Vec<FieldError> = names
                .iter()
                .filter(|name| agents::CUSTOM_ONLY.contains(name))
                .map(|name| FieldError {
                    field: (*name).into(),
                    message: "a built-in agent's behaviour is its code".into(),
                })
                .collect();
            if !refused.is_empty() {
                return Err(ApiError::Validation(refused));
            }
        }
        check_credential(&mut tx, granted.organization_id(), &fields).await?;
        agents::update(&mut tx, &granted, id.0, &fields).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("agent.updated", &client(req, &state.settings))
                .on("agent", id.0)
                .with(serde_json::json!({ "fields": names })),
        )
        .await?;
        let agent: Agent = agents::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(agent_not_found)?
            .into();
        tx.commit().await?;
        Ok(Json(agent))
    }

    /// Delete a custom agent
    ///
    /// With its schedules, runs and their steps. Built-in agents are disabled, not deleted
    /// (409). Needs `agents.manage` (manager). Audited as `agent.deleted`.
    #[oai(
        path = "/agents/:id",
        method = "delete",
        operation_id = "agents_delete"
    )]
    async fn delete_agent(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageAgents>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let agent = agents::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(agent_not_found)?;
        if agent.kind != AgentKind::Custom {
            return Err(ApiError::Conflict {
                code: "agent_built_in",
                detail: "Built-in agents cannot be deleted; disable it with PATCH enabled=false."
                    .into(),
            });
        }
        agents::delete_custom(&mut tx, &granted, id.0).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("agent.deleted", &client(req, &state.settings))
                .on("agent", id.0)
                .with(serde_json::json!({ "name": agent.name })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// List agent tools
    ///
    /// The Zoark operations a custom agent may be given, with the permission each needs and
    /// its arguments. Needs `agents.read` (member).
    #[oai(
        path = "/agent-tools",
        method = "get",
        operation_id = "agent_tools_list"
    )]
    async fn list_tools(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<AgentToolList>, ApiError> {
        auth.grant::<ReadAgents>(&state).await?;
        Ok(Json(AgentToolList {
            items: Tool::ALL
                .into_iter()
                .map(|tool| AgentTool {
                    id: tool,
                    description: tool.description().into(),
                    permission: tool.permission().0.into(),
                    parameters: tool.parameters(),
                })
                .collect(),
        }))
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
