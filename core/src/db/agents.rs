//! Agents of an organization (one of each built-in kind, seeded with the organization) and
//! their schedules: cron expressions read in a time zone, which the scheduler turns into agent
//! runs exactly once per tick (`zoark_scheduler::cron::run_agent_schedules`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageAgents};

/// An agent, without its prompt and tools.
#[derive(Debug, Clone)]
pub struct Agent {
    pub id: Uuid,
    pub kind: String,
    pub name: String,
    pub description: Option<String>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A schedule as stored.
#[derive(Debug, Clone)]
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
    sqlx::query_as!(
        Agent,
        r#"
        SELECT id, kind, name, description, enabled, created_at, updated_at
        FROM agents
        WHERE organization_id = $1 AND ($2::uuid IS NULL OR id < $2)
        ORDER BY id DESC
        LIMIT $3
        "#,
        proof.organization_id(),
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
    sqlx::query_as!(
        Agent,
        "SELECT id, kind, name, description, enabled, created_at, updated_at
         FROM agents WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
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
