//! The built-in task monitor: active tasks without activity for longer than the agent's
//! `config.threshold_hours` (48 by default) get one alert a day, to their assignees and the
//! organization's leads, with a summary of the task's recent history and a suggested next step
//! written by the LLM (structured output), or by a deterministic template when the organization
//! has no LLM (the run's output says which).
//!
//! Each task is two steps: the summary (an `llm_call`, or nothing with the template) and the
//! alert (an `email` step whose emails and `task_stuck_alert` activity entry commit with its
//! result). A resumed run finds the tasks it alerted already excluded (their activity entry)
//! and reuses a summary it stored. The task escalator ([`super::escalator`]) summarizes its
//! tasks the same way.

use serde_json::{Value, json};
use zoark_core::{
    access::Role,
    agents::ActivityAction,
    db::{
        agent_runs::{self, Run, Step},
        agents::Agent,
        memberships::{self, Contact},
        tasks::{self, StuckFilter, StuckTask},
    },
};

use super::{
    End, Llm, Resumed, llm_answer,
    notify::{EffectStep, recipients},
    stored_answer,
};
use crate::{WorkerContext, engine::JobError};

/// Tasks alerted about per run at most.
const MAX_ALERTS: i64 = 50;
/// Idle hours before a task is stuck, unless the agent's `config.threshold_hours` says.
const DEFAULT_THRESHOLD_HOURS: i32 = 48;

/// A task's summary and suggested next step.
pub(crate) struct Summary {
    pub summary: String,
    pub next_step: String,
}

/// Runs the task monitor.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run, def: &Agent) -> Result<End, JobError> {
    let filter = filter(def);
    let threshold = filter.idle_hours;
    let mut conn = ctx.pool.acquire().await?;
    let mut summaries = Summaries::load(ctx, &mut conn, run, def).await?;
    let stuck = tasks::stuck(&mut conn, run.organization_id, filter, MAX_ALERTS).await?;
    let leads = memberships::with_role(&mut conn, run.organization_id, Role::Lead).await?;
    drop(conn);
    let mut alerted = Vec::new();
    for task in &stuck {
        let summary = match summaries.of(ctx, run, def, task).await? {
            Ok(summary) => summary,
            Err(end) => return Ok(end),
        };
        alert(ctx, run, summaries.next_position(), task, &summary, &leads).await?;
        alerted.push(task.id);
    }
    Ok(End::Succeeded(json!({
        "threshold_hours": threshold,
        "alerted_tasks": alerted,
        "summaries": summaries.source(),
        "note": summaries.note(),
    })))
}

fn filter(def: &Agent) -> StuckFilter {
    StuckFilter {
        idle_hours: hours(def, "threshold_hours", DEFAULT_THRESHOLD_HOURS),
        critical_only: false,
        quiet_after: ActivityAction::TaskStuckAlert,
        quiet_hours: 24,
    }
}

/// Whether a tick has anything to do.
///
/// # Errors
/// Database errors.
pub async fn pending(
    conn: &mut sqlx::PgConnection,
    organization_id: uuid::Uuid,
    def: &Agent,
) -> sqlx::Result<bool> {
    Ok(!tasks::stuck(conn, organization_id, filter(def), 1)
        .await?
        .is_empty())
}

/// An hour count from the agent's `config` (1 hour to 30 days), else `default`.
pub(crate) fn hours(def: &Agent, key: &str, default: i32) -> i32 {
    def.config
        .get(key)
        .and_then(Value::as_i64)
        .and_then(|h| i32::try_from(h).ok())
        .filter(|h| (1..=24 * 30).contains(h))
        .unwrap_or(default)
}

/// Task summaries for a run: stored ones reused, new ones asked of the LLM (one step each),
/// or the template without an LLM. Keeps the run's step positions.
pub(crate) struct Summaries {
    llm: Option<Llm>,
    steps: Vec<Step>,
    position: i32,
}

impl Summaries {
    pub(crate) async fn load(
        ctx: &WorkerContext,
        conn: &mut sqlx::PgConnection,
        run: &Run,
        def: &Agent,
    ) -> Result<Self, JobError> {
        let Resumed {
            llm,
            steps,
            position,
        } = Resumed::load(ctx, conn, run, def).await?;
        Ok(Self {
            llm,
            steps,
            position,
        })
    }

    /// The position of the run's next step.
    pub(crate) fn next_position(&mut self) -> i32 {
        self.position += 1;
        self.position
    }

    /// `task`'s summary; `Err(end)` when the run must end (cancelled, a refusal, the budget).
    pub(crate) async fn of(
        &mut self,
        ctx: &WorkerContext,
        run: &Run,
        def: &Agent,
        task: &StuckTask,
    ) -> Result<Result<Summary, End>, JobError> {
        let mut conn = ctx.pool.acquire().await?;
        if agent_runs::cancel_requested(&mut conn, run.id).await? {
            return Ok(Err(End::Cancelled));
        }
        drop(conn);
        let Some(llm) = &self.llm else {
            return Ok(Ok(template(task)));
        };
        if let Some(summary) = stored(&self.steps, task) {
            return Ok(Ok(summary));
        }
        self.position += 1;
        summarize(ctx, run, def, llm, self.position, task).await
    }

    /// `llm` or `template`, for the run's output.
    pub(crate) fn source(&self) -> &'static str {
        if self.llm.is_some() {
            "llm"
        } else {
            "template"
        }
    }

    /// What the run's output says about the source.
    pub(crate) fn note(&self) -> Value {
        if self.llm.is_some() {
            Value::Null
        } else {
            json!("no LLM provider: summaries are a deterministic template")
        }
    }
}

/// The summary a finished step of this run wrote for `task`, if any.
fn stored(steps: &[Step], task: &StuckTask) -> Option<Summary> {
    parse(stored_answer(steps, "task_id", &task.id.to_string())?)
}

fn parse(message: &Value) -> Option<Summary> {
    let content: Value = serde_json::from_str(message.get("content")?.as_str()?).ok()?;
    Some(Summary {
        summary: content.get("summary")?.as_str()?.to_owned(),
        next_step: content.get("next_step")?.as_str()?.to_owned(),
    })
}

pub(crate) fn idle_days(task: &StuckTask) -> i64 {
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
    Ok(llm_answer(ctx, run, def, llm, position, request)
        .await?
        .and_then(|message| {
            parse(&message)
                .ok_or_else(|| End::Failed("the LLM's summary is not the JSON asked for".into()))
        }))
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
    let assignees = task
        .assignee_names
        .iter()
        .zip(&task.assignee_emails)
        .map(|(name, email)| Contact {
            name: name.clone(),
            email: email.clone(),
        });
    let to = recipients(assignees.chain(leads.iter().cloned()));
    let emails: Vec<&str> = to.iter().map(|c| c.email.as_str()).collect();
    let mut step = EffectStep::email(
        ctx,
        run,
        position,
        &json!({"task_id": task.id, "to": emails}),
    )
    .await?;
    let body = format!(
        "\"{}\" in {} has had no activity for {} days.\n\n{}\n\nSuggested next step: {}",
        task.title,
        task.project_name,
        idle_days(task),
        summary.summary,
        summary.next_step
    );
    let title = format!("Stuck: {}", task.title);
    step.remind(&to, &title, &body, &task_url(ctx, task))
        .await?;
    let context = json!({"task_id": task.id, "recipients": emails.len()});
    let entry = format!("\"{}\": {}", task.title, summary.summary);
    step.activity(ActivityAction::TaskStuckAlert, &entry, &context)
        .await?;
    step.finish(json!({"emails": emails.len(), "summary": summary.summary,
                       "next_step": summary.next_step}))
        .await
}

/// The task's page in the web app.
pub(crate) fn task_url(ctx: &WorkerContext, task: &StuckTask) -> String {
    let mut url = ctx.settings.http.public_url.clone();
    url.set_path(&format!("/tasks/{}", task.id));
    url.to_string()
}
