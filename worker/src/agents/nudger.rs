//! The built-in approval nudger: the organization's overdue approval steps remind their
//! approvers once per `nudge_every`, and after `escalate_after_nudges` reminders also the
//! holders of `escalate_to_role` (admins when none). Each batch of steps is one `email` step:
//! the nudges are counted, their emails enqueued and an `approval_nudge` activity entry written
//! per approval step in the step's transaction, so a resumed run or the next tick finds nothing
//! new until the next interval. The emails are the approval nudge template (no LLM).

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{
    agents::ActivityAction,
    db::{agent_runs::Run, approvals},
};
use zoark_jobs::approvals::{Item, enqueue_nudges};

use super::{End, notify::EffectStep, resume_position};
use crate::{WorkerContext, engine::JobError};

/// Approval steps claimed per `email` step.
const BATCH: i64 = 50;
/// Batches per run at most (the next tick takes the rest).
const MAX_BATCHES: usize = 20;

/// Whether a tick has anything to do.
///
/// # Errors
/// Database errors.
pub async fn pending(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<bool> {
    approvals::overdue_exists(conn, organization_id).await
}

/// Runs the approval nudger.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<End, JobError> {
    let mut position = resume_position(ctx, run).await?;
    let mut nudged = 0;
    let mut emails = 0;
    for _ in 0..MAX_BATCHES {
        position += 1;
        let (steps, sent, done) = batch(ctx, run, position).await?;
        nudged += steps;
        emails += sent;
        if done {
            break;
        }
    }
    Ok(End::Succeeded(json!({
        "approval_steps_nudged": nudged,
        "emails": emails,
        "note": "nudges use the approval nudge template; this agent asks no LLM",
    })))
}

/// One batch: (approval steps nudged, emails, whether it was the last).
async fn batch(
    ctx: &WorkerContext,
    run: &Run,
    position: i32,
) -> Result<(usize, usize, bool), JobError> {
    let org = run.organization_id;
    let key = &ctx.settings.encryption_key;
    let public_url = ctx.settings.http.public_url.as_str();
    let mut step = EffectStep::email(ctx, run, position, &json!({"claim_overdue": BATCH})).await?;
    let claimed = approvals::claim_overdue(step.conn(), org, BATCH).await?;
    let n = claimed.len();
    let mut emails = 0;
    let mut ids = Vec::with_capacity(n);
    for (overdue, nudge, escalates) in claimed {
        let conn = step.conn();
        let subject =
            approvals::subject(conn, org, &overdue.subject_type, overdue.subject_id).await?;
        let item = Item::new(
            &overdue.subject_type,
            subject,
            public_url,
            overdue.instance_id,
        );
        let since = overdue
            .pending_since
            .or(overdue.due_at)
            .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        let approvers = approvals::approvers(
            conn,
            org,
            approvals::Approvers {
                role: overdue.approver_role.as_deref(),
                user_id: overdue.approver_user_id,
                email: overdue.approver_email.as_deref(),
            },
        )
        .await?;
        // Past the threshold the escalation role hears too (approvers are told once).
        let mut above = Vec::new();
        if escalates {
            above = approvals::role_holders(conn, org, overdue.escalate_to_role.as_deref()).await?;
            above.retain(|r| {
                !approvers
                    .iter()
                    .any(|a| a.email.eq_ignore_ascii_case(&r.email))
            });
        }
        for (recipients, escalated) in [(&approvers, false), (&above, true)] {
            enqueue_nudges(
                step.conn(),
                key,
                org,
                overdue.step_id,
                nudge,
                &since,
                &item,
                recipients,
                escalated,
            )
            .await
            .map_err(anyhow::Error::from)?;
        }
        emails += approvers.len() + above.len();
        let summary = format!(
            "nudge {nudge} on \"{}\" to {} approver(s){}",
            item.title,
            approvers.len(),
            if above.is_empty() {
                String::new()
            } else {
                format!(", escalated to {} more", above.len())
            }
        );
        let context = json!({"approval_step_id": overdue.step_id, "instance_id": overdue.instance_id,
                             "nudge": nudge, "escalated": escalates});
        step.activity(ActivityAction::ApprovalNudge, &summary, &context)
            .await?;
        ids.push(overdue.step_id);
    }
    if n == 0 {
        // Nothing left: the empty step rolls back.
        return Ok((0, 0, true));
    }
    step.finish(json!({"approval_steps": ids, "emails": emails}))
        .await?;
    Ok((n, emails, i64::try_from(n).unwrap_or(i64::MAX) < BATCH))
}
