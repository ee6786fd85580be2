//! Agent runs: `POST /api/v1/agents/{id}/runs` records a queued run and enqueues its
//! `agents.run` job in one transaction; `GET /api/v1/agent-runs` and `/agent-runs/{id}` (with
//! its steps) show where runs stand; `POST /agent-runs/{id}/cancel` stops one before its next
//! step.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::Example,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use zoark_core::{
    access::{ReadAgents, RunAgents},
    agents::{ActivityAction, ActivityStatus, RunStatus, RunTrigger, StepKind, StepStatus},
    db::{
        agent_runs::{self, ActivityFilter, Filter, NewRun},
        agents, tenant,
    },
};

use crate::{
    auth::BearerAuth,
    error::{ApiError, FieldError},
    etag, idempotency,
    json::JsonBody,
    pagination::PageRequest,
    routes::ApiTags,
    state::AppState,
};

pub struct AgentRunsApi;

/// `POST /agents/{id}/runs`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewAgentRun {
    /// What the run works on, as a JSON object (a custom agent reads it as the user's
    /// message); at most 64 KiB. Default `{}`.
    pub input: Option<Value>,
}

impl Example for NewAgentRun {
    fn example() -> Self {
        Self {
            input: Some(serde_json::json!({"question": "Which tasks of Apollo are stuck?"})),
        }
    }
}

/// One step of a run.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct AgentRunStep {
    pub id: Uuid,
    /// 1, 2, …: the order the steps were taken in.
    pub position: i32,
    pub kind: StepKind,
    pub status: StepStatus,
    /// What the step sent: the chat request of an `llm_call`, the call of a `tool_call`.
    pub request: Option<Value>,
    /// What came back: the LLM's answer, the tool's result.
    pub response: Option<Value>,
    pub error: Option<String>,
    pub tokens_in: i32,
    pub tokens_out: i32,
    /// USD millionths, from the configured price of the model.
    pub cost_micros: i64,
    /// From start to finish, once finished.
    pub duration_ms: Option<i64>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<agent_runs::Step> for AgentRunStep {
    fn from(s: agent_runs::Step) -> Self {
        Self {
            id: s.id,
            position: s.position,
            kind: s.kind,
            status: s.status,
            request: s.request,
            response: s.response,
            error: s.error,
            tokens_in: s.tokens_in,
            tokens_out: s.tokens_out,
            cost_micros: s.cost_micros,
            duration_ms: s.finished_at.map(|f| (f - s.started_at).num_milliseconds()),
            started_at: s.started_at,
            finished_at: s.finished_at,
        }
    }
}

/// A run of an agent.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct AgentRun {
    pub id: Uuid,
    pub agent_id: Uuid,
    /// The schedule whose tick started it (trigger `schedule`).
    pub schedule_id: Option<Uuid>,
    pub trigger: RunTrigger,
    /// Who started it (`manual`).
    pub triggered_by: Option<Uuid>,
    pub status: RunStatus,
    pub input: Value,
    /// The result of a succeeded run.
    pub output: Option<Value>,
    /// Why it failed, was cancelled or ran out of budget.
    pub error: Option<String>,
    pub tokens_in: i32,
    pub tokens_out: i32,
    /// USD millionths.
    pub cost_micros: i64,
    /// When a cancel was asked for (a running run stops before its next step).
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Its steps, in order (`GET /agent-runs/{id}` only).
    #[oai(skip_serializing_if_is_none)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<AgentRunStep>>,
}

impl From<agent_runs::Run> for AgentRun {
    fn from(r: agent_runs::Run) -> Self {
        Self {
            id: r.id,
            agent_id: r.agent_id,
            schedule_id: r.schedule_id,
            trigger: r.trigger,
            triggered_by: r.triggered_by,
            status: r.status,
            input: r.input,
            output: r.output,
            error: r.error,
            tokens_in: r.tokens_in,
            tokens_out: r.tokens_out,
            cost_micros: r.cost_micros,
            cancel_requested_at: r.cancel_requested_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            created_at: r.created_at,
            steps: None,
        }
    }
}

#[derive(Debug, Object)]
pub struct AgentRunList {
    pub items: Vec<AgentRun>,
    pub next_cursor: Option<String>,
}

/// An entry of the activity feed: what an agent noticed and did.
#[derive(Debug, Object)]
pub struct AgentActivity {
    pub id: Uuid,
    pub agent_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub action: ActivityAction,
    pub status: ActivityStatus,
    pub summary: String,
    /// What it is about (a task, a schedule's tick, a run's status).
    pub context: Value,
    pub created_at: DateTime<Utc>,
}

impl From<agent_runs::ActivityEntry> for AgentActivity {
    fn from(a: agent_runs::ActivityEntry) -> Self {
        Self {
            id: a.id,
            agent_id: a.agent_id,
            run_id: a.run_id,
            action: a.action,
            status: a.status,
            summary: a.summary,
            context: a.context,
            created_at: a.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct AgentActivityList {
    pub items: Vec<AgentActivity>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum RunCreated {
    /// The queued run.
    #[oai(status = 201)]
    Created(
        Json<AgentRun>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

/// The largest run input, serialized.
const MAX_INPUT_BYTES: usize = 64 * 1024;

fn input(raw: Option<Value>) -> Result<Value, ApiError> {
    let value = raw.unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    let invalid = |message: &str| {
        ApiError::Validation(vec![FieldError {
            field: "input".into(),
            message: message.into(),
        }])
    };
    if !value.is_object() {
        return Err(invalid("must be a JSON object"));
    }
    if value.to_string().len() > MAX_INPUT_BYTES {
        return Err(invalid("must be at most 64 KiB"));
    }
    Ok(value)
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "agent_run_not_found",
        detail: "No agent run with this id in the organization.".into(),
    }
}

#[OpenApi(tag = "ApiTags::Agents", prefix_path = "/api/v1")]
impl AgentRunsApi {
    /// Start an agent run
    ///
    /// Records a queued run and enqueues its job in one transaction; a worker of the `agents`
    /// queue takes its steps. The run acts with the agent's creator's role at run time, never
    /// more than the caller's. `Idempotency-Key` replays the first response of a retried
    /// request. Needs `agents.run` (member).
    #[oai(
        path = "/agents/:id/runs",
        method = "post",
        operation_id = "agent_runs_create"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<NewAgentRun>,
        /// Makes a retried start safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<RunCreated, ApiError> {
        let granted = auth.grant::<RunAgents>(&state).await?;
        let body = body.0;
        let key =
            idempotency::Key::parse(idempotency_key.0.as_deref(), "agent_runs_create", &body)?;
        let input = input(body.input)?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<AgentRun>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(RunCreated::Created(Json(replay), Some(true)));
        }
        let agent =
            agents::get(&mut tx, &granted, id.0)
                .await?
                .ok_or_else(|| ApiError::NotFound {
                    code: "agent_not_found",
                    detail: "No agent with this id in the organization.".into(),
                })?;
        if !agent.enabled {
            return Err(ApiError::Conflict {
                code: "agent_disabled",
                detail: "The agent is disabled: enable it before starting a run.".into(),
            });
        }
        let new = NewRun::requested(&granted, agent.id, &input);
        let run_id = zoark_jobs::agents::start(&mut tx, organization_id, &new)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a manual run was not recorded")))?;
        let run: AgentRun = agent_runs::get(&mut tx, &granted, run_id)
            .await?
            .ok_or_else(not_found)?
            .into();
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &run).await?;
        }
        tx.commit().await?;
        Ok(RunCreated::Created(Json(run), None))
    }

    /// List agent runs
    ///
    /// Newest first; filter by agent, status and trigger. Needs `agents.read` (member).
    #[oai(path = "/agent-runs", method = "get", operation_id = "agent_runs_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Only this agent's runs.
        agent_id: Query<Option<Uuid>>,
        /// Only runs in this status.
        status: Query<Option<RunStatus>>,
        /// Only runs started this way.
        trigger: Query<Option<RunTrigger>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<AgentRunList>, ApiError> {
        let granted = auth.grant::<ReadAgents>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let filter = Filter {
            id: None,
            agent_id: agent_id.0,
            status: status.0,
            trigger: trigger.0,
            before_id: page.before_id,
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = agent_runs::list(&mut tx, &granted, &filter, page.fetch()).await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |r| r.id);
        Ok(Json(AgentRunList {
            items: rows.into_iter().map(AgentRun::from).collect(),
            next_cursor,
        }))
    }

    /// Get an agent run
    ///
    /// With its steps (request, response, tokens, cost and duration of each) and an `ETag`;
    /// `If-None-Match` with it answers 304 while nothing changed. Needs `agents.read` (member).
    #[oai(
        path = "/agent-runs/:id",
        method = "get",
        operation_id = "agent_runs_get"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<AgentRun>, ApiError> {
        let granted = auth.grant::<ReadAgents>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let mut run: AgentRun = agent_runs::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        let steps = agent_runs::steps(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        run.steps = Some(steps.into_iter().map(AgentRunStep::from).collect());
        Ok(etag::found(run, if_none_match.0.as_deref()))
    }

    /// Cancel an agent run
    ///
    /// A queued run is cancelled at once; a running one stops before its next step (its
    /// `cancel_requested_at` is set meanwhile): a step under way finishes, and nothing it did
    /// is undone. Cancelling a cancelled run changes nothing; a run that ended otherwise
    /// answers 409. Needs `agents.run` (member).
    #[oai(
        path = "/agent-runs/:id/cancel",
        method = "post",
        operation_id = "agent_runs_cancel"
    )]
    async fn cancel(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<AgentRun>, ApiError> {
        let granted = auth.grant::<RunAgents>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let status = agent_runs::cancel(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        if !matches!(status, RunStatus::Running | RunStatus::Cancelled) {
            return Err(ApiError::Conflict {
                code: "agent_run_finished",
                detail: format!("The run has ended ({}).", status.as_str()),
            });
        }
        let run: AgentRun = agent_runs::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        tx.commit().await?;
        Ok(Json(run))
    }

    /// List agent activity
    ///
    /// The activity feed, newest first: what agents noticed and did, skipped ticks, finished
    /// runs, budget stops. Filter by agent, run, action and status. Live on `GET /events` as
    /// `agent_run` and `agent_step` messages. Needs `agents.read` (member).
    #[oai(
        path = "/agent-activity",
        method = "get",
        operation_id = "agent_activity_list"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn activity(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Only this agent's entries.
        agent_id: Query<Option<Uuid>>,
        /// Only this run's entries.
        run_id: Query<Option<Uuid>>,
        /// Only entries of this action.
        action: Query<Option<ActivityAction>>,
        /// Only entries with this outcome.
        status: Query<Option<ActivityStatus>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<AgentActivityList>, ApiError> {
        let granted = auth.grant::<ReadAgents>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let filter = ActivityFilter {
            agent_id: agent_id.0,
            run_id: run_id.0,
            action: action.0,
            status: status.0,
            before_id: page.before_id,
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = agent_runs::activity(&mut tx, &granted, &filter, page.fetch()).await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |a| a.id);
        Ok(Json(AgentActivityList {
            items: rows.into_iter().map(AgentActivity::from).collect(),
            next_cursor,
        }))
    }
}
