//! Built-in agents in tests: one tick of an organization's seeded schedule, as the scheduler
//! enqueues it, drained through a real worker.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;
use uuid::Uuid;

use crate::TestApp;

/// The run a tick recorded.
#[derive(Debug, Clone)]
pub struct TickRun {
    pub id: Uuid,
    pub status: String,
    pub output: Option<Value>,
    pub error: Option<String>,
}

/// Enqueues one tick of the schedule of the organization's built-in agent of `kind` (an
/// `agents.run_scheduled` job, as the scheduler does), drains the jobs and returns the run the
/// tick recorded: `None` when it recorded none (nothing to do, or disabled).
///
/// # Errors
/// Database errors, no such schedule, or jobs left undrained.
pub async fn tick(
    app: &TestApp,
    organization_id: Uuid,
    kind: &str,
) -> anyhow::Result<Option<TickRun>> {
    let (schedule_id, agent_id): (Uuid, Uuid) = sqlx::query_as(
        "SELECT s.id, a.id FROM agent_schedules s JOIN agents a ON a.id = s.agent_id
         WHERE a.organization_id = $1 AND a.kind = $2 ORDER BY s.created_at LIMIT 1",
    )
    .bind(organization_id)
    .bind(kind)
    .fetch_optional(&app.pool)
    .await?
    .with_context(|| format!("the {kind} agent has no schedule"))?;
    let before: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_runs WHERE agent_id = $1")
        .bind(agent_id)
        .fetch_one(&app.pool)
        .await?;
    let job = zoark_jobs::agents::RunScheduledAgent {
        schedule_id,
        agent_id,
        tick: chrono::Utc::now(),
    };
    let mut conn = app.pool.acquire().await?;
    zoark_jobs::enqueue(
        &mut conn,
        &job,
        zoark_jobs::Opts::organization(organization_id),
    )
    .await?;
    drop(conn);
    app.drain_jobs(Duration::from_secs(60)).await?;
    let runs: Vec<(Uuid, String, Option<Value>, Option<String>)> = sqlx::query_as(
        "SELECT id, status, output, error FROM agent_runs WHERE agent_id = $1
         ORDER BY created_at, id OFFSET $2",
    )
    .bind(agent_id)
    .bind(before)
    .fetch_all(&app.pool)
    .await?;
    anyhow::ensure!(runs.len() <= 1, "one tick recorded {} runs", runs.len());
    Ok(runs
        .into_iter()
        .next()
        .map(|(id, status, output, error)| TickRun {
            id,
            status,
            output,
            error,
        }))
}
