//! Agents of an organization (one of each built-in kind, seeded with the organization) and
//! their schedules: cron expressions read in a time zone, which the scheduler turns into agent
//! runs exactly once per tick (`zoark_scheduler::cron::run_agent_schedules`).

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    access::{Granted, ManageAgents},
    agents::AgentKind,
};

/// An agent as stored.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: Uuid,
    pub kind: AgentKind,
    pub name: String,
    pub description: Option<String>,
    pub role: Option<String>,
    pub goal: Option<String>,
    pub instructions: Option<String>,
    pub model: Option<String>,
    pub llm_credential_id: Option<Uuid>,
    pub tools: Vec<String>,
    pub config: Value,
    pub max_steps: i32,
    pub max_tokens: Option<i32>,
    pub enabled: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a create writes and a patch changes (the `Some` ones; `Some(None)` clears).
#[derive(Debug, Clone, Default)]
pub struct AgentFields {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub role: Option<Option<String>>,
    pub goal: Option<String>,
    pub instructions: Option<String>,
    pub model: Option<Option<String>>,
    pub llm_credential_id: Option<Option<Uuid>>,
    pub tools: Option<Vec<String>>,
    pub config: Option<Value>,
    pub max_steps: Option<i32>,
    pub max_tokens: Option<Option<i32>>,
    pub enabled: Option<bool>,
}

impl AgentFields {
    /// The names of the fields a patch sets, for the audit log.
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("name", self.name.is_some()),
            ("description", self.description.is_some()),
            ("role", self.role.is_some()),
            ("goal", self.goal.is_some()),
            ("instructions", self.instructions.is_some()),
            ("model", self.model.is_some()),
            ("llm_credential_id", self.llm_credential_id.is_some()),
            ("tools", self.tools.is_some()),
            ("config", self.config.is_some()),
            ("max_steps", self.max_steps.is_some()),
            ("max_tokens", self.max_tokens.is_some()),
            ("enabled", self.enabled.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// Fields that are a custom agent's behaviour: a built-in agent's is its code.
pub const CUSTOM_ONLY: [&str; 5] = ["role", "goal", "instructions", "tools", "max_steps"];

/// Records a custom agent created by the proof's user; returns its id.
///
/// # Errors
/// Database errors.
pub async fn insert_custom(
    conn: &mut PgConnection,
    proof: &Granted<ManageAgents>,
    fields: &AgentFields,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO agents (organization_id, kind, name, description, role, goal, instructions, model,
                            llm_credential_id, tools, config, max_steps, max_tokens, enabled, created_by)
        VALUES ($1, 'custom', $2, $3, $4, $5, $6, $7, $8, coalesce($9::text[], '{}'), coalesce($10::jsonb, '{}'),
                coalesce($11, 10), $12, coalesce($13, true), $14)
        RETURNING id
        "#,
        proof.organization_id(),
        fields.name,
        fields.description.clone().flatten(),
        fields.role.clone().flatten(),
        fields.goal,
        fields.instructions,
        fields.model.clone().flatten(),
        fields.llm_credential_id.flatten(),
        fields.tools.as_deref(),
        fields.config,
        fields.max_steps,
        fields.max_tokens.flatten(),
        fields.enabled,
        proof.actor().user_id(),
    )
    .fetch_one(conn)
    .await
}

/// Writes the `Some` fields of an agent; `false` when there is none.
///
/// # Errors
/// Database errors.
pub async fn update(
    conn: &mut PgConnection,
    proof: &Granted<ManageAgents>,
    id: Uuid,
    fields: &AgentFields,
) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        r#"
        UPDATE agents SET
            name = coalesce($3, name),
            description = CASE WHEN $4 THEN $5 ELSE description END,
            role = CASE WHEN $6 THEN $7 ELSE role END,
            goal = coalesce($8, goal),
            instructions = coalesce($9, instructions),
            model = CASE WHEN $10 THEN $11 ELSE model END,
            llm_credential_id = CASE WHEN $12 THEN $13 ELSE llm_credential_id END,
            tools = coalesce($14::text[], tools),
            config = coalesce($15::jsonb, config),
            max_steps = coalesce($16, max_steps),
            max_tokens = CASE WHEN $17 THEN $18 ELSE max_tokens END,
            enabled = coalesce($19, enabled)
        WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
        fields.name,
        fields.description.is_some(),
        fields.description.clone().flatten(),
        fields.role.is_some(),
        fields.role.clone().flatten(),
        fields.goal,
        fields.instructions,
        fields.model.is_some(),
        fields.model.clone().flatten(),
        fields.llm_credential_id.is_some(),
        fields.llm_credential_id.flatten(),
        fields.tools.as_deref(),
        fields.config,
        fields.max_steps,
        fields.max_tokens.is_some(),
        fields.max_tokens.flatten(),
        fields.enabled,
    )
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Deletes a custom agent (with its schedules and runs); `false` when there is no custom agent
/// with this id (built-in agents are disabled, never deleted).
///
/// # Errors
/// Database errors.
pub async fn delete_custom(
    conn: &mut PgConnection,
    proof: &Granted<ManageAgents>,
    id: Uuid,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query!(
        "DELETE FROM agents WHERE organization_id = $1 AND id = $2 AND kind = 'custom'",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Disables the agents `user_id` created: what removing them from the organization does.
///
/// # Errors
/// Database errors.
pub async fn disable_created_by(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
) -> sqlx::Result<u64> {
    Ok(sqlx::query!(
        "UPDATE agents SET enabled = false WHERE organization_id = $1 AND created_by = $2 AND enabled",
        organization_id,
        user_id,
    )
    .execute(conn)
    .await?
    .rows_affected())
}

/// A schedule as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Schedule {
    pub id: Uuid,
    pub agent_id: Uuid,
    pub cron_expression: String,
    pub time_zone: String,
    pub enabled: bool,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A create writes every field; a patch the `Some` ones. `next_run_at` is computed by the
/// caller from the expression and zone it ends up with.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFields {
    pub agent_id: Option<Uuid>,
    pub cron_expression: Option<String>,
    pub time_zone: Option<String>,
    pub enabled: Option<bool>,
}

/// Schedule list filter and page.
#[derive(Debug, Clone, Default)]
pub struct ScheduleFilter {
    pub id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub enabled: Option<bool>,
    pub before_id: Option<Uuid>,
}

/// The organization's agents, newest first.
///
/// # Errors
/// Database errors.
pub async fn list<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    before_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Agent>> {
    query(conn, proof.organization_id(), None, before_id, limit).await
}

async fn query(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Option<Uuid>,
    before_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Agent>> {
    sqlx::query_as!(
        Agent,
        r#"
        SELECT id, kind AS "kind: AgentKind", name, description, role, goal, instructions, model,
               llm_credential_id, tools, config, max_steps, max_tokens, enabled, created_by,
               created_at, updated_at
        FROM agents
        WHERE organization_id = $1 AND ($2::uuid IS NULL OR id = $2)
          AND ($3::uuid IS NULL OR id < $3)
        ORDER BY id DESC
        LIMIT $4
        "#,
        organization_id,
        id,
        before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One agent of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Agent>> {
    Ok(query(conn, proof.organization_id(), Some(id), None, 1)
        .await?
        .pop())
}

/// An agent of the organization, for a run (the worker's read).
///
/// # Errors
/// Database errors.
pub async fn for_run(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Agent>> {
    Ok(query(conn, organization_id, Some(id), None, 1).await?.pop())
}

/// The organization's built-in agent of `kind` (the worker's read).
///
/// # Errors
/// Database errors.
pub async fn builtin(
    conn: &mut PgConnection,
    organization_id: Uuid,
    kind: AgentKind,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        "SELECT id FROM agents WHERE organization_id = $1 AND kind = $2",
        organization_id,
        kind as AgentKind,
    )
    .fetch_optional(conn)
    .await
}

/// Creates a schedule (agent, expression and zone required by the caller); returns its id.
///
/// # Errors
/// Database errors.
pub async fn insert_schedule(
    conn: &mut PgConnection,
    proof: &Granted<ManageAgents>,
    fields: &ScheduleFields,
    next_run_at: Option<DateTime<Utc>>,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO agent_schedules (organization_id, agent_id, cron_expression, time_zone, enabled,
                                     next_run_at, created_by)
        VALUES ($1, $2, $3, $4, coalesce($5, true), $6, $7)
        RETURNING id
        "#,
        proof.organization_id(),
        fields.agent_id,
        fields.cron_expression,
        fields.time_zone,
        fields.enabled,
        next_run_at,
        proof.actor().user_id(),
    )
    .fetch_one(conn)
    .await
}

/// The organization's schedules, newest first.
///
/// # Errors
/// Database errors.
pub async fn list_schedules<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    filter: &ScheduleFilter,
    limit: i64,
) -> sqlx::Result<Vec<Schedule>> {
    sqlx::query_as!(
        Schedule,
        r#"
        SELECT id, agent_id, cron_expression, time_zone, enabled, next_run_at, last_run_at,
               created_by, created_at, updated_at
        FROM agent_schedules
        WHERE organization_id = $1
          AND ($2::uuid IS NULL OR agent_id = $2)
          AND ($3::bool IS NULL OR enabled = $3)
          AND ($4::uuid IS NULL OR id < $4)
          AND ($6::uuid IS NULL OR id = $6)
        ORDER BY id DESC
        LIMIT $5
        "#,
        proof.organization_id(),
        filter.agent_id,
        filter.enabled,
        filter.before_id,
        limit,
        filter.id,
    )
    .fetch_all(conn)
    .await
}

/// One schedule of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get_schedule<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Schedule>> {
    let filter = ScheduleFilter {
        id: Some(id),
        ..ScheduleFilter::default()
    };
    Ok(list_schedules(conn, proof, &filter, 1).await?.pop())
}

/// Locks a schedule row for a read-modify-write; `false` when there is none.
///
/// # Errors
/// Database errors.
pub async fn lock_schedule(
    conn: &mut PgConnection,
    proof: &Granted<ManageAgents>,
    id: Uuid,
) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM agent_schedules WHERE organization_id = $1 AND id = $2 FOR UPDATE",
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// Writes a schedule's expression, zone, enabled flag and next run.
///
/// # Errors
/// Database errors.
pub async fn update_schedule(
    conn: &mut PgConnection,
    proof: &Granted<ManageAgents>,
    schedule: &Schedule,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE agent_schedules
         SET cron_expression = $3, time_zone = $4, enabled = $5, next_run_at = $6
         WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        schedule.id,
        schedule.cron_expression,
        schedule.time_zone,
        schedule.enabled,
        schedule.next_run_at,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a schedule; `false` when there is none.
///
/// # Errors
/// Database errors.
pub async fn delete_schedule(
    conn: &mut PgConnection,
    proof: &Granted<ManageAgents>,
    id: Uuid,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query!(
        "DELETE FROM agent_schedules WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// Whether a schedule exists and is enabled, locked against deletion until the caller's
/// transaction ends (a tick's run must not point at a schedule deleted meanwhile).
///
/// # Errors
/// Database errors.
pub async fn schedule_is_enabled(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT enabled FROM agent_schedules WHERE organization_id = $1 AND id = $2 FOR SHARE",
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await?
    .unwrap_or(false))
}
