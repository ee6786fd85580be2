//! `agents.run_scheduled` (a schedule's tick becomes a run with trigger `schedule`, or a
//! recorded skip while the schedule's previous run is unfinished) and `agents.run` (a run's
//! steps, `crate::agents`).

use anyhow::Context as _;
use serde_json::json;
use zoark_core::{
    agents::{ActivityAction, ActivityStatus, RunStatus, RunTrigger},
    db::{
        agent_runs::{self, Activity, NewRun},
        agents,
    },
};
use zoark_jobs::agents::{RunAgent, RunScheduledAgent};

use crate::{
    WorkerContext,
    agents::{self as steps, End},
    engine::{JobContext, JobError, JobResult, Registry},
};

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let (a, b) = (ctx.clone(), ctx.clone());
    registry
        .register(move |job: RunScheduledAgent, run: JobContext| run_scheduled(a.clone(), job, run))
        .register(move |job: RunAgent, run: JobContext| run_agent(b.clone(), job, run))
}

async fn run_scheduled(ctx: WorkerContext, job: RunScheduledAgent, run: JobContext) -> JobResult {
    let organization_id = run
        .organization_id
        .context("an agent schedule's tick belongs to an organization")
        .map_err(JobError::Fatal)?;
    let mut tx = ctx.pool.begin().await?;
    let def = match agents::schedule_is_enabled(&mut tx, organization_id, job.schedule_id).await? {
        true => agents::for_run(&mut tx, organization_id, job.agent_id).await?,
        false => None,
    };
    let Some(def) = def.filter(|def| def.enabled) else {
        // Disabled or deleted since the tick was due: nothing to run.
        return Ok(());
    };
    if !steps::pending(&mut tx, organization_id, &def).await? {
        // Nothing to do: no run is recorded.
        return Ok(());
    }
    let input = json!({ "tick": job.tick });
    let new = NewRun {
        agent_id: job.agent_id,
        schedule_id: Some(job.schedule_id),
        trigger: RunTrigger::Schedule,
        triggered_by: None,
        max_role: None,
        input: &input,
    };
    if zoark_jobs::agents::start(&mut tx, organization_id, &new)
        .await?
        .is_none()
    {
        let summary = format!(
            "the tick of {} was skipped: the schedule's previous run is unfinished",
            job.tick.to_rfc3339()
        );
        let context = json!({ "schedule_id": job.schedule_id, "tick": job.tick });
        let entry = Activity {
            organization_id,
            agent_id: Some(job.agent_id),
            run_id: None,
            action: ActivityAction::RunSkipped,
            status: ActivityStatus::Success,
            summary: &summary,
            context: &context,
        };
        agent_runs::record_activity(&mut tx, &entry).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn run_agent(ctx: WorkerContext, job: RunAgent, attempt: JobContext) -> JobResult {
    let mut conn = ctx.pool.acquire().await?;
    let Some(run) = agent_runs::claim(&mut conn, job.run_id).await? else {
        // Finished (cancelled while queued) or deleted with its agent.
        return Ok(());
    };
    let def = agents::for_run(&mut conn, run.organization_id, run.agent_id).await?;
    drop(conn);
    let taken = match def {
        None => Ok(End::Failed("the agent was deleted".into())),
        Some(def) if !def.enabled => Ok(End::Failed("the agent is disabled".into())),
        Some(def) => steps::take(&ctx, &run, &def).await,
    };
    let (status, output, error) = match taken {
        Ok(End::Succeeded(output)) => (RunStatus::Succeeded, Some(output), None),
        Ok(End::Failed(error)) => (RunStatus::Failed, None, Some(error)),
        Ok(End::Cancelled) => (
            RunStatus::Cancelled,
            None,
            Some("cancelled on request".to_owned()),
        ),
        Ok(End::OverBudget(error)) => (RunStatus::BudgetExhausted, None, Some(error)),
        Err(e) => {
            // The job's last attempt fails the run with its error (the job keeps it as well).
            if let Some(last) = e.last_error(&attempt) {
                let mut conn = ctx.pool.acquire().await?;
                let error = format!("{last:#}");
                agent_runs::finish(&mut conn, &run, RunStatus::Failed, None, Some(&error)).await?;
            }
            return Err(e);
        }
    };
    let mut conn = ctx.pool.acquire().await?;
    agent_runs::finish(&mut conn, &run, status, output.as_ref(), error.as_deref()).await?;
    Ok(())
}
