//! Agent runs, their steps and the activity feed.
//!
//! The API starts, lists and cancels runs with a proof; the worker's `agents.run` job drives a
//! run on a platform connection: [`claim`] it, rebuild where it stands from [`steps_of`], record
//! each step with [`begin_step`] **before** its effect and [`finish_step`] after it, then
//! [`finish`] the run. A step's idempotency key is `{run}:{position}`: a retried run that finds
//! its next step already recorded (begun, its effect never committed) takes it up again.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};
use uuid::Uuid;

use crate::{
    access::{Granted, Role, RunAgents},
    agents::{ActivityAction, ActivityStatus, RunStatus, RunTrigger, StepKind, StepStatus},
};

/// A run as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub agent_id: Uuid,
    pub schedule_id: Option<Uuid>,
    pub trigger: RunTrigger,
    pub triggered_by: Option<Uuid>,
    pub status: RunStatus,
    pub input: Value,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub tokens_in: i32,
    pub tokens_out: i32,
    pub cost_micros: i64,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// The role of whoever started it: the run never acts above it.
    pub max_role: Option<Role>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// A step as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    pub id: Uuid,
    pub run_id: Uuid,
    pub position: i32,
    pub kind: StepKind,
    pub status: StepStatus,
    pub request: Option<Value>,
    pub response: Option<Value>,
    pub error: Option<String>,
    pub tokens_in: i32,
    pub tokens_out: i32,
    pub cost_micros: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Run list filter and page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub id: Option<Uuid>,
    pub agent_id: Option<Uuid>,
    pub status: Option<RunStatus>,
    pub trigger: Option<RunTrigger>,
    pub before_id: Option<Uuid>,
}

/// A new run.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    pub agent_id: Uuid,
    pub schedule_id: Option<Uuid>,
    pub trigger: RunTrigger,
    pub triggered_by: Option<Uuid>,
    /// The starter's role (none for a schedule's tick: the creator's role alone).
    pub max_role: Option<Role>,
    pub input: &'a Value,
}

impl<'a> NewRun<'a> {
    /// A run of `agent_id` asked for through the API: trigger `manual` for someone signed in
    /// (who is its starter), `api` for an API key; never acting above the caller's role.
    pub fn requested(granted: &Granted<RunAgents>, agent_id: Uuid, input: &'a Value) -> Self {
        let actor = granted.actor();
        Self {
            agent_id,
            schedule_id: None,
            trigger: if actor.user_id().is_some() {
                RunTrigger::Manual
            } else {
                RunTrigger::Api
            },
            triggered_by: actor.user_id(),
            max_role: Some(granted.role()),
            input,
        }
    }
}

/// Records a `queued` run; `None` when it is a schedule's and that schedule's previous run is
/// unfinished (`agent_runs_one_unfinished_per_schedule`).
///
/// # Errors
/// Database errors.
pub async fn insert(
    conn: &mut PgConnection,
    organization_id: Uuid,
    run: &NewRun<'_>,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO agent_runs (organization_id, agent_id, schedule_id, trigger, triggered_by, input,
                                max_role)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        ON CONFLICT (organization_id, schedule_id) WHERE status IN ('queued', 'running') DO NOTHING
        RETURNING id
        "#,
        organization_id,
        run.agent_id,
        run.schedule_id,
        run.trigger as RunTrigger,
        run.triggered_by,
        run.input,
        run.max_role as Option<Role>,
    )
    .fetch_optional(conn)
    .await
}

/// The organization's runs, newest first.
///
/// # Errors
/// Database errors.
pub async fn list<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Run>> {
    sqlx::query_as!(
        Run,
        r#"
        SELECT id, organization_id, agent_id, schedule_id, trigger AS "trigger: RunTrigger",
               triggered_by, status AS "status: RunStatus", input, output, error, tokens_in,
               tokens_out, cost_micros, cancel_requested_at, max_role AS "max_role: Role", started_at,
               finished_at, created_at
        FROM agent_runs
        WHERE organization_id = $1
          AND ($2::uuid IS NULL OR id = $2)
          AND ($3::uuid IS NULL OR agent_id = $3)
          AND ($4::text IS NULL OR status = $4)
          AND ($5::text IS NULL OR trigger = $5)
          AND ($6::uuid IS NULL OR id < $6)
        ORDER BY id DESC
        LIMIT $7
        "#,
        proof.organization_id(),
        filter.id,
        filter.agent_id,
        filter.status as Option<RunStatus>,
        filter.trigger as Option<RunTrigger>,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One run of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Run>> {
    let filter = Filter {
        id: Some(id),
        ..Filter::default()
    };
    Ok(list(conn, proof, &filter, 1).await?.pop())
}

/// A run's steps, in order.
///
/// # Errors
/// Database errors.
pub async fn steps<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    run_id: Uuid,
) -> sqlx::Result<Vec<Step>> {
    steps_of(conn, proof.organization_id(), run_id).await
}

/// A run's steps, in order (the worker's read).
///
/// # Errors
/// Database errors.
pub async fn steps_of(
    conn: &mut PgConnection,
    organization_id: Uuid,
    run_id: Uuid,
) -> sqlx::Result<Vec<Step>> {
    sqlx::query_as!(
        Step,
        r#"
        SELECT id, run_id, position, kind AS "kind: StepKind", status AS "status: StepStatus",
               request, response, error, tokens_in, tokens_out, cost_micros, started_at,
               finished_at
        FROM agent_run_steps
        WHERE organization_id = $1 AND run_id = $2
        ORDER BY position
        "#,
        organization_id,
        run_id,
    )
    .fetch_all(conn)
    .await
}

/// Asks a run to stop: a queued run is cancelled at once, a running one before its next step.
/// Returns the run's status after the request, `None` when there is no such run.
///
/// # Errors
/// Database errors.
pub async fn cancel(
    conn: &mut PgConnection,
    proof: &Granted<RunAgents>,
    id: Uuid,
) -> sqlx::Result<Option<RunStatus>> {
    sqlx::query_scalar!(
        r#"
        UPDATE agent_runs
        SET cancel_requested_at = CASE WHEN status IN ('queued', 'running')
                                       THEN coalesce(cancel_requested_at, now())
                                       ELSE cancel_requested_at END,
            status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
            error = CASE WHEN status = 'queued' THEN 'cancelled before it started' ELSE error END,
            finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END
        WHERE organization_id = $1 AND id = $2
        RETURNING status AS "status: RunStatus"
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Takes up a run for its job: `queued` becomes `running`; a `running` run (a retried or
/// rescued job) is taken up as it stands. `None` when the run is finished or gone.
///
/// # Errors
/// Database errors.
pub async fn claim(conn: &mut PgConnection, run_id: Uuid) -> sqlx::Result<Option<Run>> {
    sqlx::query_as!(
        Run,
        r#"
        UPDATE agent_runs
        SET status = 'running', started_at = coalesce(started_at, now())
        WHERE id = $1 AND status IN ('queued', 'running')
        RETURNING id, organization_id, agent_id, schedule_id, trigger AS "trigger: RunTrigger",
                  triggered_by, status AS "status: RunStatus", input, output, error, tokens_in,
                  tokens_out, cost_micros, cancel_requested_at, max_role AS "max_role: Role",
                  started_at, finished_at, created_at
        "#,
        run_id,
    )
    .fetch_optional(conn)
    .await
}

/// Whether someone asked the run to stop.
///
/// # Errors
/// Database errors.
pub async fn cancel_requested(conn: &mut PgConnection, run_id: Uuid) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT cancel_requested_at IS NOT NULL AS \"requested!\" FROM agent_runs WHERE id = $1",
        run_id,
    )
    .fetch_optional(conn)
    .await?
    .unwrap_or(true))
}

/// Records step `position` of a run as `running` with its request, before its effect; a step
/// already recorded at that position and still `running` (its effect never committed) is
/// taken up again. Returns the step's id.
///
/// # Errors
/// Database errors.
pub async fn begin_step(
    conn: &mut PgConnection,
    run: &Run,
    position: i32,
    kind: StepKind,
    request: &Value,
) -> sqlx::Result<Uuid> {
    match open_step(conn, run, position, kind, request, Check::Nothing).await? {
        Opened::Step(id) => Ok(id),
        // Nothing is checked: neither comes back.
        Opened::Cancelled | Opened::Budgeted => Err(sqlx::Error::RowNotFound),
    }
}

/// An LLM step begun, or refused by the organization's monthly budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begun {
    Step(Uuid),
    /// A cancel was asked for: no step was recorded.
    Cancelled,
    /// The step's estimated cost does not fit: `used` (spent and held by steps under way) of
    /// `budget` USD millionths this month.
    OverBudget {
        budget: i64,
        used: i64,
    },
}

/// What [`open_step`] did.
enum Opened {
    Step(Uuid),
    Cancelled,
    /// An LLM step of an organization with a monthly budget: nothing recorded yet.
    Budgeted,
}

/// What [`open_step`] checks before recording a step.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Records it whatever the run's state.
    Nothing,
    /// Records nothing when a cancel was asked for.
    Cancel,
    /// [`Check::Cancel`], and records nothing when the organization has a monthly budget (an
    /// LLM step must reserve its cost first).
    CancelAndBudget,
}

/// Records step `position` of a run as `running` with its request, in one statement that also
/// reads what `check` asks for; a step already recorded at that position and still `running`
/// is taken up again.
async fn open_step(
    conn: &mut PgConnection,
    run: &Run,
    position: i32,
    kind: StepKind,
    request: &Value,
    check: Check,
) -> sqlx::Result<Opened> {
    let opened = sqlx::query!(
        r#"
        WITH run AS (
            SELECT $7 AND r.cancel_requested_at IS NOT NULL AS cancelled,
                   $8 AND o.llm_monthly_budget_micros IS NOT NULL AS budgeted
            FROM agent_runs r JOIN organizations o ON o.id = r.organization_id
            WHERE r.organization_id = $1 AND r.id = $2
        ), step AS (
            INSERT INTO agent_run_steps
                (organization_id, run_id, position, kind, idempotency_key, request)
            SELECT $1, $2, $3, $4, $6, $5 FROM run WHERE NOT run.cancelled AND NOT run.budgeted
            ON CONFLICT (organization_id, idempotency_key) DO UPDATE
                SET kind = EXCLUDED.kind, request = EXCLUDED.request
                WHERE agent_run_steps.status = 'running'
            RETURNING id
        )
        SELECT run.cancelled AS "cancelled!", run.budgeted AS "budgeted!",
               (SELECT id FROM step) AS id
        FROM run
        "#,
        run.organization_id,
        run.id,
        position,
        kind as StepKind,
        request,
        format!("{}:{position}", run.id),
        check != Check::Nothing,
        check == Check::CancelAndBudget,
    )
    .fetch_optional(conn)
    .await?;
    // A run that is gone has nothing more to do.
    let Some(opened) = opened else {
        return Ok(Opened::Cancelled);
    };
    Ok(match (opened.cancelled, opened.budgeted, opened.id) {
        (true, _, _) => Opened::Cancelled,
        (false, true, _) => Opened::Budgeted,
        (false, false, Some(id)) => Opened::Step(id),
        // The position holds a finished step: the caller's view of the run is stale.
        (false, false, None) => return Err(sqlx::Error::RowNotFound),
    })
}

/// [`begin_step`] unless a cancel was asked for (`None`, nothing recorded), in one statement.
///
/// # Errors
/// Database errors.
pub async fn begin_step_unless_cancelled(
    conn: &mut PgConnection,
    run: &Run,
    position: i32,
    kind: StepKind,
    request: &Value,
) -> sqlx::Result<Option<Uuid>> {
    Ok(
        match open_step(conn, run, position, kind, request, Check::Cancel).await? {
            Opened::Step(id) => Some(id),
            Opened::Cancelled | Opened::Budgeted => None,
        },
    )
}

/// Records LLM step `position` like [`begin_step_unless_cancelled`]. An organization with a
/// monthly budget first has `estimate` USD millionths of it reserved, in a transaction with
/// the step (the month's row lock serializes concurrent runs, so they cannot overspend it
/// together; a step taken up again keeps the reservation it holds). Without a budget it is one
/// statement, and the organization's steps share no row to lock.
///
/// # Errors
/// Database errors.
pub async fn begin_llm_step(
    conn: &mut PgConnection,
    run: &Run,
    position: i32,
    request: &Value,
    estimate: i64,
) -> sqlx::Result<Begun> {
    match open_step(
        conn,
        run,
        position,
        StepKind::LlmCall,
        request,
        Check::CancelAndBudget,
    )
    .await?
    {
        Opened::Step(id) => return Ok(Begun::Step(id)),
        Opened::Cancelled => return Ok(Begun::Cancelled),
        Opened::Budgeted => {}
    }
    let mut tx = conn.begin().await?;
    let begun = reserve_and_begin(&mut tx, run, position, request, estimate).await?;
    tx.commit().await?;
    Ok(begun)
}

/// The budgeted half of [`begin_llm_step`], in its transaction.
async fn reserve_and_begin(
    conn: &mut PgConnection,
    run: &Run,
    position: i32,
    request: &Value,
    estimate: i64,
) -> sqlx::Result<Begun> {
    let key = format!("{}:{position}", run.id);
    let held = sqlx::query_scalar!(
        "SELECT id FROM agent_run_steps
         WHERE organization_id = $1 AND idempotency_key = $2 AND status = 'running' FOR UPDATE",
        run.organization_id,
        key,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if held.is_none() {
        // The month's row starts from what the month's LLM steps cost so far (a budget set
        // mid-month counts them).
        sqlx::query!(
            r#"
            INSERT INTO llm_budget_months (organization_id, month, spent_micros)
            SELECT $1, date_trunc('month', now() AT TIME ZONE 'UTC')::date,
                   coalesce(sum(cost_micros), 0)::bigint
            FROM usage_records
            WHERE organization_id = $1 AND metric IN ('llm_tokens_in', 'llm_tokens_out')
              AND occurred_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
            ON CONFLICT DO NOTHING
            "#,
            run.organization_id,
        )
        .execute(&mut *conn)
        .await?;
        let refused = sqlx::query!(
            r#"
            WITH month AS (
                SELECT m.organization_id, m.month, m.spent_micros + m.reserved_micros AS used,
                       o.llm_monthly_budget_micros AS budget
                FROM llm_budget_months m JOIN organizations o ON o.id = m.organization_id
                WHERE m.organization_id = $1
                  AND m.month = date_trunc('month', now() AT TIME ZONE 'UTC')::date
                FOR UPDATE OF m
            ), reserved AS (
                UPDATE llm_budget_months m SET reserved_micros = m.reserved_micros + $2
                FROM month
                WHERE m.organization_id = month.organization_id AND m.month = month.month
                  AND (month.budget IS NULL OR month.used + $2 <= month.budget)
                RETURNING m.organization_id
            )
            SELECT month.budget AS "budget!", month.used AS "used!"
            FROM month WHERE NOT EXISTS (SELECT 1 FROM reserved)
            "#,
            run.organization_id,
            estimate,
        )
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(refused) = refused {
            return Ok(Begun::OverBudget {
                budget: refused.budget,
                used: refused.used,
            });
        }
    }
    let id = begin_step(conn, run, position, StepKind::LlmCall, request).await?;
    if held.is_none() {
        sqlx::query!(
            "UPDATE agent_run_steps SET reserved_micros = $3 WHERE organization_id = $1 AND id = $2",
            run.organization_id,
            id,
            estimate,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(Begun::Step(id))
}

/// A step's result.
#[derive(Debug, Clone)]
pub struct StepResult {
    pub status: StepStatus,
    pub response: Option<Value>,
    pub error: Option<String>,
    pub tokens_in: i32,
    pub tokens_out: i32,
    pub cost_micros: i64,
    /// An LLM step's cost of its input and its output tokens, metered for billing as two
    /// `usage_records` (keyed by the step, so a retried write counts once) with the result.
    pub metered: Option<(i64, i64)>,
}

impl StepResult {
    /// A step that succeeded with `response` and cost nothing.
    pub fn succeeded(response: Value) -> Self {
        Self {
            status: StepStatus::Succeeded,
            response: Some(response),
            error: None,
            tokens_in: 0,
            tokens_out: 0,
            cost_micros: 0,
            metered: None,
        }
    }

    /// A step that failed with `error`.
    pub fn failed(error: String) -> Self {
        Self {
            status: StepStatus::Failed,
            response: None,
            error: Some(error),
            tokens_in: 0,
            tokens_out: 0,
            cost_micros: 0,
            metered: None,
        }
    }
}

/// Writes a `running` step's result and adds its tokens and cost to the run's. `false` when the
/// step was finished already.
///
/// # Errors
/// Database errors.
pub async fn finish_step(
    conn: &mut PgConnection,
    run: &Run,
    step_id: Uuid,
    result: &StepResult,
) -> sqlx::Result<bool> {
    let finished = sqlx::query!(
        r#"
        WITH held AS (
            SELECT id, reserved_micros, started_at FROM agent_run_steps
            WHERE organization_id = $1 AND id = $2 AND status = 'running'
            FOR UPDATE
        ), step AS (
            UPDATE agent_run_steps s
            SET status = $3, response = $4, error = $5, tokens_in = $6, tokens_out = $7,
                cost_micros = $8, reserved_micros = 0, finished_at = clock_timestamp()
            FROM held
            WHERE s.organization_id = $1 AND s.id = held.id
            RETURNING s.run_id, held.reserved_micros, held.started_at
        ), budget AS (
            -- The reservation released, the cost spent, in the month it was reserved in.
            UPDATE llm_budget_months m
            SET reserved_micros = greatest(m.reserved_micros - step.reserved_micros, 0),
                spent_micros = m.spent_micros + $8
            FROM step
            WHERE m.organization_id = $1
              AND m.month = date_trunc('month', step.started_at AT TIME ZONE 'UTC')::date
        ), usage AS (
            INSERT INTO usage_records
                (organization_id, metric, quantity, idempotency_key, cost_micros)
            SELECT $1, u.metric, u.quantity, $2::uuid::text || u.suffix, u.cost
            FROM step, (VALUES ('llm_tokens_in', $6, ':in', $10::bigint),
                               ('llm_tokens_out', $7, ':out', $11::bigint))
                       AS u (metric, quantity, suffix, cost)
            WHERE $9
            ON CONFLICT (organization_id, idempotency_key) DO NOTHING
        )
        UPDATE agent_runs r
        SET tokens_in = r.tokens_in + $6, tokens_out = r.tokens_out + $7,
            cost_micros = r.cost_micros + $8
        FROM step
        WHERE r.organization_id = $1 AND r.id = step.run_id
        "#,
        run.organization_id,
        step_id,
        result.status as StepStatus,
        result.response,
        result.error,
        result.tokens_in,
        result.tokens_out,
        result.cost_micros,
        result.metered.is_some(),
        result.metered.map_or(0, |m| m.0),
        result.metered.map_or(0, |m| m.1),
    )
    .execute(conn)
    .await?;
    Ok(finished.rows_affected() > 0)
}

/// Ends an unfinished run with `status` (one of the finished ones), its output or error, and
/// adds a `run_finished` entry to the activity feed. `false` when it had ended already.
///
/// # Errors
/// Database errors.
pub async fn finish(
    conn: &mut PgConnection,
    run: &Run,
    status: RunStatus,
    output: Option<&Value>,
    error: Option<&str>,
) -> sqlx::Result<bool> {
    let finished = sqlx::query!(
        r#"
        UPDATE agent_runs SET status = $3, output = $4, error = $5, finished_at = now()
        WHERE organization_id = $1 AND id = $2 AND status IN ('queued', 'running')
        "#,
        run.organization_id,
        run.id,
        status as RunStatus,
        output,
        error,
    )
    .execute(&mut *conn)
    .await?;
    if finished.rows_affected() == 0 {
        return Ok(false);
    }
    // A step begun and never finished (its effect never committed) ends with the run, and
    // gives back what it held of the budget.
    sqlx::query!(
        r#"
        WITH held AS (
            -- One at most: a run takes one step at a time.
            SELECT id, reserved_micros, started_at FROM agent_run_steps
            WHERE organization_id = $1 AND run_id = $2 AND status = 'running'
            FOR UPDATE
        ), step AS (
            UPDATE agent_run_steps s
            SET status = 'failed', error = coalesce($3, 'the run ended first'), finished_at = now(),
                reserved_micros = 0
            FROM held
            WHERE s.organization_id = $1 AND s.id = held.id
            RETURNING held.reserved_micros AS held, held.started_at
        )
        UPDATE llm_budget_months m
        SET reserved_micros = greatest(m.reserved_micros - step.held, 0)
        FROM step
        WHERE m.organization_id = $1
          AND m.month = date_trunc('month', step.started_at AT TIME ZONE 'UTC')::date
        "#,
        run.organization_id,
        run.id,
        error,
    )
    .execute(&mut *conn)
    .await?;
    let (activity_status, summary) = match status {
        RunStatus::Succeeded => (ActivityStatus::Success, "run succeeded".to_owned()),
        other => (
            ActivityStatus::Failed,
            format!("run {}: {}", other.as_str(), error.unwrap_or("")),
        ),
    };
    let action = if status == RunStatus::BudgetExhausted {
        ActivityAction::BudgetExhausted
    } else {
        ActivityAction::RunFinished
    };
    record_activity(
        conn,
        &Activity {
            organization_id: run.organization_id,
            agent_id: Some(run.agent_id),
            run_id: Some(run.id),
            action,
            status: activity_status,
            summary: &summary,
            context: &serde_json::json!({ "run_status": status }),
        },
    )
    .await?;
    Ok(true)
}

/// An entry of the activity feed.
#[derive(Debug, Clone)]
pub struct Activity<'a> {
    pub organization_id: Uuid,
    pub agent_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub action: ActivityAction,
    pub status: ActivityStatus,
    pub summary: &'a str,
    pub context: &'a Value,
}

/// The most of a summary kept (the column's limit).
const SUMMARY_CHARS: usize = 2000;

/// Adds an entry to the activity feed (its summary cut to 2,000 characters).
///
/// # Errors
/// Database errors.
pub async fn record_activity(conn: &mut PgConnection, entry: &Activity<'_>) -> sqlx::Result<()> {
    let summary: String = entry.summary.chars().take(SUMMARY_CHARS).collect();
    sqlx::query!(
        r#"
        INSERT INTO agent_activity (organization_id, agent_id, run_id, action, status, summary, context)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        "#,
        entry.organization_id,
        entry.agent_id,
        entry.run_id,
        entry.action as ActivityAction,
        entry.status as ActivityStatus,
        summary,
        entry.context,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The role a run acts with: its agent's creator's role in the organization now, never more
/// than the role of the member who started it. `None` when the creator (or the starter) is no
/// longer a member.
///
/// # Errors
/// Database errors.
pub async fn acting_role(
    conn: &mut PgConnection,
    organization_id: Uuid,
    creator: Uuid,
    starter: Option<Uuid>,
) -> sqlx::Result<Option<crate::access::Role>> {
    let roles = sqlx::query!(
        "SELECT user_id, role FROM memberships WHERE organization_id = $1 AND user_id = ANY($2)",
        organization_id,
        &[Some(creator), starter]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>(),
    )
    .fetch_all(conn)
    .await?;
    let role_of = |user: Uuid| {
        roles
            .iter()
            .find(|r| r.user_id == user)
            .and_then(|r| r.role.parse::<crate::access::Role>().ok())
    };
    let Some(role) = role_of(creator) else {
        return Ok(None);
    };
    match starter {
        None => Ok(Some(role)),
        Some(starter) => Ok(role_of(starter).map(|s| role.lesser(s))),
    }
}

/// Deletes runs finished before `now - retention` (their steps with them), activity entries
/// and raw inbound messages older than that; returns how many runs and entries.
///
/// # Errors
/// Database errors.
pub async fn prune(
    conn: &mut PgConnection,
    retention: std::time::Duration,
) -> sqlx::Result<(u64, u64)> {
    let seconds = f64::from(u32::try_from(retention.as_secs()).unwrap_or(u32::MAX));
    let runs = sqlx::query!(
        "DELETE FROM agent_runs WHERE finished_at < now() - make_interval(secs => $1)",
        seconds,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let activity = sqlx::query!(
        "DELETE FROM agent_activity WHERE created_at < now() - make_interval(secs => $1)",
        seconds,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    // Raw inbound messages go with their runs' retention.
    sqlx::query!(
        "DELETE FROM inbound_emails WHERE received_at < now() - make_interval(secs => $1)",
        seconds,
    )
    .execute(conn)
    .await?;
    Ok((runs, activity))
}

/// An entry of the activity feed as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActivityEntry {
    pub id: Uuid,
    pub agent_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub action: ActivityAction,
    pub status: ActivityStatus,
    pub summary: String,
    pub context: Value,
    pub created_at: DateTime<Utc>,
}

/// Activity feed filter and page.
#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    pub agent_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub action: Option<ActivityAction>,
    pub status: Option<ActivityStatus>,
    pub before_id: Option<Uuid>,
}

/// The organization's activity feed, newest first.
///
/// # Errors
/// Database errors.
pub async fn activity<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    filter: &ActivityFilter,
    limit: i64,
) -> sqlx::Result<Vec<ActivityEntry>> {
    sqlx::query_as!(
        ActivityEntry,
        r#"
        SELECT id, agent_id, run_id, action AS "action: ActivityAction",
               status AS "status: ActivityStatus", summary, context, created_at
        FROM agent_activity
        WHERE organization_id = $1
          AND ($2::uuid IS NULL OR agent_id = $2)
          AND ($3::uuid IS NULL OR run_id = $3)
          AND ($4::text IS NULL OR action = $4)
          AND ($5::text IS NULL OR status = $5)
          AND ($6::uuid IS NULL OR id < $6)
        ORDER BY id DESC
        LIMIT $7
        "#,
        proof.organization_id(),
        filter.agent_id,
        filter.run_id,
        filter.action as Option<ActivityAction>,
        filter.status as Option<ActivityStatus>,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}
