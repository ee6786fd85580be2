//! The built-in task monitor: active tasks without activity for longer than the agent's
//! `config.threshold_hours` (48 by default) get one alert a day, to their assignees and the
//! organization's leads, with a summary of the task's recent history and a suggested next step
//! written by the LLM (structured output), or by a deterministic template when the organization
//! has no LLM (the run's output says which).
//!
//! Each task is two steps: the summary (an `llm_call`, or nothing with the template) and the
//! alert (an `email` step whose emails and `task_stuck_alert` activity entry commit with its
//! result). A resumed run finds the tasks it alerted already excluded (their activity entry)
//! and reuses a summary it stored.

use serde_json::{Value, json};
use zoark_core::{
    access::Role,
    agents::{ActivityAction, ActivityStatus, StepKind, StepStatus},
    db::{
        agent_runs::{self, Activity, Run, StepResult},
        agents::Agent,
        memberships::{self, Contact},
        tasks::{self, StuckTask},
    },
};
use zoark_jobs::{
    Opts,
    email::{SystemTemplate, enqueue_system},
};

use super::{Asked, End, Llm, estimate, llm_for, llm_step};
use crate::{WorkerContext, engine::JobError};

/// Tasks alerted about per run at most.
const MAX_ALERTS: i64 = 50;
/// Idle hours before a task is stuck, unless the agent's `config.threshold_hours` says.
const DEFAULT_THRESHOLD_HOURS: i32 = 48;

/// A task's summary and suggested next step.
struct Summary {
    summary: String,
    next_step: String,
}

/// Runs the task monitor.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run, def: &Agent) -> Result<End, JobError> {
    let threshold = def
        .config
        .get("threshold_hours")
        .and_then(Value::as_i64)
        .and_then(|h| i32::try_from(h).ok())
        .filter(|h| (1..=24 * 30).contains(h))
        .unwrap_or(DEFAULT_THRESHOLD_HOURS);
    let mut conn = ctx.pool.acquire().await?;
    let steps = agent_runs::steps_of(&mut conn, run.organization_id, run.id).await?;
    let llm = llm_for(ctx, &mut conn, run.organization_id, def).await?;
    let stuck = tasks::stuck(&mut conn, run.organization_id, threshold, MAX_ALERTS).await?;
    let leads = memberships::with_role(&mut conn, run.organization_id, Role::Lead).await?;
    drop(conn);
    let mut position = steps
        .iter()
        .filter(|s| s.status != StepStatus::Running)
        .map(|s| s.position)
        .max()
        .unwrap_or(0);
    let mut alerted = Vec::new();
    for task in &stuck {
        let mut conn = ctx.pool.acquire().await?;
        if agent_runs::cancel_requested(&mut conn, run.id).await? {
            return Ok(End::Cancelled);
        }
        drop(conn);
        let summary = match &llm {
            None => template(task),
            Some(llm) => match stored(&steps, task) {
                Some(summary) => summary,
                None => {
                    position += 1;
                    match summarize(ctx, run, def, llm, position, task).await? {
                        Ok(summary) => summary,
                        Err(end) => return Ok(end),
                    }
                }
            },
        };
        position += 1;
        alert(ctx, run, position, task, &summary, &leads).await?;
        alerted.push(task.id);
    }
    Ok(End::Succeeded(json!({
        "threshold_hours": threshold,
        "alerted_tasks": alerted,
        "summaries": if llm.is_some() { "llm" } else { "template" },
        "note": if llm.is_some() { Value::Null } else {
            json!("no LLM provider: summaries are a deterministic template")
        },
    })))
}

/// The summary a finished step of this run wrote for `task`, if any.
fn stored(steps: &[agent_runs::Step], task: &StuckTask) -> Option<Summary> {
    let id = task.id.to_string();
    steps
        .iter()
        .filter(|s| s.kind == StepKind::LlmCall && s.status == StepStatus::Succeeded)
        .find(|s| {
            s.request
                .as_ref()
                .and_then(|r| r.pointer("/metadata/task_id"))
                .and_then(Value::as_str)
                == Some(id.as_str())
        })
        .and_then(|s| parse(s.response.as_ref()?.get("message")?))
}

fn parse(message: &Value) -> Option<Summary> {
    let content: Value = serde_json::from_str(message.get("content")?.as_str()?).ok()?;
    Some(Summary {
        summary: content.get("summary")?.as_str()?.to_owned(),
        next_step: content.get("next_step")?.as_str()?.to_owned(),
    })
}

fn idle_days(task: &StuckTask) -> i64 {
    (chrono::Utc::now() - task.last_activity_at).num_days()
}

/// The deterministic summary, without an LLM.
fn template(task: &StuckTask) -> Summary {
    Summary {
        summary: format!(
            "No activity for {} days (last on {}); health: {}.",
            idle_days(task),
            task.last_activity_at.format("%Y-%m-%d"),
            task.health_status
        ),
        next_step: "Ask the assignees what blocks it, or move it back to the backlog.".into(),
    }
}

/// Asks the LLM for the task's summary; `Err(end)` when the run must end (a refusal, the
/// budget).
async fn summarize(
    ctx: &WorkerContext,
    run: &Run,
    def: &Agent,
    llm: &Llm,
    position: i32,
    task: &StuckTask,
) -> Result<Result<Summary, End>, JobError> {
    let facts = json!({
        "title": task.title, "project": task.project_name, "health": task.health_status,
        "idle_days": idle_days(task), "assignees": task.assignee_names,
        "recent_history": task.recent,
    });
    let request = json!({
        "model": llm.model,
        "metadata": {"task_id": task.id.to_string()},
        "messages": [
            {"role": "system", "content": "You watch a team's task board. Summarize the task's \
              recent history in at most two sentences and suggest one concrete next step."},
            {"role": "user", "content": facts.to_string()},
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "task_summary", "strict": true,
            "schema": {"type": "object", "additionalProperties": false,
                       "required": ["summary", "next_step"],
                       "properties": {"summary": {"type": "string"}, "next_step": {"type": "string"}}}}},
    });
    let reserve = estimate(ctx, def, &llm.model, &request);
    Ok(
        match llm_step(ctx, run, llm, position, request, reserve).await? {
            Asked::Answer(message) => parse(&message).map_or_else(
                || {
                    Err(End::Failed(
                        "the LLM's summary is not the JSON asked for".into(),
                    ))
                },
                Ok,
            ),
            Asked::Refused(reason) => Err(End::Failed(reason)),
            Asked::OverBudget(reason) => Err(End::OverBudget(reason)),
        },
    )
}

/// The alert as one step: the emails and the activity entry commit with the step's result.
async fn alert(
    ctx: &WorkerContext,
    run: &Run,
    position: i32,
    task: &StuckTask,
    summary: &Summary,
    leads: &[Contact],
) -> Result<(), JobError> {
    let mut to: Vec<Contact> = task
        .assignee_names
        .iter()
        .zip(&task.assignee_emails)
        .map(|(name, email)| Contact {
            name: name.clone(),
            email: email.clone(),
        })
        .chain(leads.iter().cloned())
        .collect();
    to.sort_by(|a, b| a.email.cmp(&b.email));
    to.dedup_by(|a, b| a.email == b.email);
    let emails: Vec<&str> = to.iter().map(|c| c.email.as_str()).collect();
    let request = json!({"task_id": task.id, "to": emails});
    let mut tx = ctx.pool.begin().await?;
    let step = agent_runs::begin_step(&mut tx, run, position, StepKind::Email, &request).await?;
    let mut url = ctx.settings.http.public_url.clone();
    url.set_path(&format!("/tasks/{}", task.id));
    let body = format!(
        "\"{}\" in {} has had no activity for {} days.\n\n{}\n\nSuggested next step: {}",
        task.title,
        task.project_name,
        idle_days(task),
        summary.summary,
        summary.next_step
    );
    for contact in &to {
        let params = json!({
            "recipient_name": contact.name,
            "title": format!("Stuck: {}", task.title),
            "body": body,
            "url": url.as_str(),
        });
        enqueue_system(
            &mut tx,
            &ctx.settings.encryption_key,
            &contact.email,
            SystemTemplate::Reminder,
            &params,
            Opts::organization(run.organization_id),
        )
        .await
        .map_err(anyhow::Error::from)?;
    }
    let context = json!({"task_id": task.id, "recipients": emails.len()});
    agent_runs::record_activity(
        &mut tx,
        &Activity {
            organization_id: run.organization_id,
            agent_id: Some(run.agent_id),
            run_id: Some(run.id),
            action: ActivityAction::TaskStuckAlert,
            status: ActivityStatus::Success,
            summary: &format!("\"{}\": {}", task.title, summary.summary),
            context: &context,
        },
    )
    .await?;
    agent_runs::finish_step(
        &mut tx,
        run,
        step,
        &StepResult::succeeded(json!({"emails": emails.len(), "summary": summary.summary,
                                      "next_step": summary.next_step})),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
