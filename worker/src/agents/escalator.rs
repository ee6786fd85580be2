//! The built-in task escalator: active tasks whose health is `critical` and that have had no
//! activity for longer than the agent's `config.threshold_hours` (48 by default) are escalated
//! one organization role up per run — leads, then managers, then admins — once per level, at
//! most once per `config.every_hours` (24 by default). A level nobody holds is passed over.
//!
//! Each escalation is the task monitor's summary (an LLM step, or the template) and one `email`
//! step whose emails and `task_escalated` activity entry (its `context.level` is the level
//! reached) commit with its result: the next run starts from that level.

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{
    access::Role,
    agents::ActivityAction,
    db::{
        agent_runs::Run,
        agents::Agent,
        memberships::{self, Contact},
        tasks::{self, StuckFilter, StuckTask},
    },
};

use super::{
    End,
    monitor::{Summaries, Summary, hours, idle_days, task_url},
    notify::{EffectStep, recipients},
};
use crate::{WorkerContext, engine::JobError};

/// Tasks escalated per run at most.
const MAX_ESCALATIONS: i64 = 50;

/// The escalation ladder, lowest first.
const LADDER: [Role; 3] = [Role::Lead, Role::Manager, Role::Admin];

/// The levels above `reached` (all of them when the task was never escalated).
fn above(reached: Option<Role>) -> &'static [Role] {
    let from = reached
        .and_then(|r| LADDER.iter().position(|l| *l == r))
        .map_or(0, |i| i + 1);
    LADDER.get(from..).unwrap_or(&[])
}

/// The tasks to escalate now, each with its next level and that level's holders.
async fn due(
    conn: &mut PgConnection,
    organization_id: Uuid,
    def: &Agent,
    limit: i64,
) -> sqlx::Result<Vec<(StuckTask, Role, Vec<Contact>)>> {
    let filter = StuckFilter {
        idle_hours: hours(def, "threshold_hours", 48),
        critical_only: true,
        quiet_after: ActivityAction::TaskEscalated,
        quiet_hours: hours(def, "every_hours", 24),
    };
    let stuck = tasks::stuck(conn, organization_id, filter, limit).await?;
    if stuck.is_empty() {
        return Ok(Vec::new());
    }
    let mut holders = Vec::with_capacity(LADDER.len());
    for role in LADDER {
        holders.push((
            role,
            memberships::with_role(conn, organization_id, role).await?,
        ));
    }
    Ok(stuck
        .into_iter()
        .filter_map(|task| {
            let (level, people) = above(task.escalated_to).iter().find_map(|level| {
                holders
                    .iter()
                    .find(|(role, people)| role == level && !people.is_empty())
                    .map(|(role, people)| (*role, people.clone()))
            })?;
            Some((task, level, people))
        })
        .collect())
}

/// Whether a tick has anything to do.
///
/// # Errors
/// Database errors.
pub async fn pending(
    conn: &mut PgConnection,
    organization_id: Uuid,
    def: &Agent,
) -> sqlx::Result<bool> {
    Ok(!due(conn, organization_id, def, MAX_ESCALATIONS)
        .await?
        .is_empty())
}

/// Runs the task escalator.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run, def: &Agent) -> Result<End, JobError> {
    let mut conn = ctx.pool.acquire().await?;
    let mut summaries = Summaries::load(ctx, &mut conn, run, def).await?;
    let due = due(&mut conn, run.organization_id, def, MAX_ESCALATIONS).await?;
    drop(conn);
    let mut escalated = Vec::new();
    for (task, level, to) in &due {
        let (task, level) = (task, *level);
        let summary = match summaries.of(ctx, run, def, task).await? {
            Ok(summary) => summary,
            Err(end) => return Ok(end),
        };
        escalate(
            ctx,
            run,
            summaries.next_position(),
            task,
            &summary,
            level,
            to,
        )
        .await?;
        escalated.push(json!({"task_id": task.id, "level": level.as_str()}));
    }
    Ok(End::Succeeded(json!({
        "threshold_hours": hours(def, "threshold_hours", 48),
        "escalated": escalated,
        "summaries": summaries.source(),
        "note": summaries.note(),
    })))
}

async fn escalate(
    ctx: &WorkerContext,
    run: &Run,
    position: i32,
    task: &StuckTask,
    summary: &Summary,
    level: Role,
    holders: &[Contact],
) -> Result<(), JobError> {
    let to = recipients(holders.iter().cloned());
    let emails: Vec<&str> = to.iter().map(|c| c.email.as_str()).collect();
    let request = json!({"task_id": task.id, "level": level.as_str(), "to": emails});
    let mut step = EffectStep::email(ctx, run, position, &request).await?;
    let body = format!(
        "\"{}\" in {} is critical and has had no activity for {} days; it is escalated to the \
         organization's {}s.\n\n{}\n\nSuggested next step: {}",
        task.title,
        task.project_name,
        idle_days(task),
        level.as_str(),
        summary.summary,
        summary.next_step
    );
    let title = format!("Escalated: {}", task.title);
    step.remind(&to, &title, &body, &task_url(ctx, task))
        .await?;
    let context = json!({"task_id": task.id, "level": level.as_str(), "recipients": emails.len()});
    let entry = format!("\"{}\" escalated to the {}s", task.title, level.as_str());
    step.activity(ActivityAction::TaskEscalated, &entry, &context)
        .await?;
    step.finish(json!({"emails": emails.len(), "level": level.as_str(),
                       "summary": summary.summary}))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ladder_climbs_one_level_past_the_one_reached_and_ends_at_admins() {
        assert_eq!(above(None), &LADDER);
        assert_eq!(above(Some(Role::Lead)), &[Role::Manager, Role::Admin]);
        assert_eq!(above(Some(Role::Manager)), &[Role::Admin]);
        assert!(above(Some(Role::Admin)).is_empty());
        // A level off the ladder (never recorded) starts it over.
        assert_eq!(above(Some(Role::Member)), &LADDER);
    }
}
