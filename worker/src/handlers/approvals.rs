//! `approvals.nudge_overdue`: reminds the approvers of overdue steps, once per `nudge_every`,
//! and after `escalate_after_nudges` reminders also the holders of `escalate_to_role` (admins
//! when none). The nudge is counted and its emails enqueued in one transaction, so a rerun
//! finds nothing new to send until the next interval.

use anyhow::Context as _;
use sqlx::PgPool;
use zoark_core::{Settings, db::approvals};
use zoark_jobs::approvals::{Item, NudgeOverdue, enqueue_nudges};

use crate::{
    WorkerContext,
    engine::{JobContext, Registry},
};

/// Steps claimed per transaction.
const BATCH: i64 = 50;

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let ctx = ctx.clone();
    registry.register(move |_: NudgeOverdue, _: JobContext| {
        let ctx = ctx.clone();
        async move {
            let nudged = nudge_overdue(&ctx.pool, &ctx.settings).await?;
            tracing::info!(steps = nudged, "approval nudge pass");
            Ok(())
        }
    })
}

/// One pass over every organization's overdue steps; returns how many were nudged.
///
/// # Errors
/// Database or enqueue errors (the batch's transaction is rolled back; the next run retries).
pub async fn nudge_overdue(pool: &PgPool, settings: &Settings) -> anyhow::Result<usize> {
    let key = &settings.encryption_key;
    let public_url = settings.http.public_url.as_str();
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await.context("beginning a nudge batch")?;
        let claimed = approvals::claim_overdue(&mut tx, BATCH)
            .await
            .context("claiming overdue approval steps")?;
        let n = claimed.len();
        for (step, nudge, escalates) in claimed {
            let org = step.organization_id;
            let subject = approvals::subject(&mut tx, org, &step.subject_type, step.subject_id)
                .await
                .context("loading the approval's subject")?;
            let item = Item::new(&step.subject_type, subject, public_url, step.instance_id);
            let since = step
                .pending_since
                .or(step.due_at)
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default();
            let approvers = approvals::approvers(
                &mut tx,
                org,
                approvals::Approvers {
                    role: step.approver_role.as_deref(),
                    user_id: step.approver_user_id,
                    email: step.approver_email.as_deref(),
                },
            )
            .await
            .context("loading the approvers")?;
            // Past the threshold the escalation role hears too (approvers are told once).
            let mut above = Vec::new();
            if escalates {
                above = approvals::role_holders(&mut tx, org, step.escalate_to_role.as_deref())
                    .await
                    .context("loading the escalation role's members")?;
                above.retain(|r| {
                    !approvers
                        .iter()
                        .any(|a| a.email.eq_ignore_ascii_case(&r.email))
                });
            }
            for (recipients, escalated) in [(&approvers, false), (&above, true)] {
                enqueue_nudges(
                    &mut tx,
                    key,
                    org,
                    step.step_id,
                    nudge,
                    &since,
                    &item,
                    recipients,
                    escalated,
                )
                .await
                .context("enqueueing nudges")?;
            }
            tracing::info!(
                org.id = %org,
                approval.step_id = %step.step_id,
                approval.nudge = nudge,
                approval.escalated = escalates,
                "approval step nudged"
            );
        }
        tx.commit().await.context("committing a nudge batch")?;
        total += n;
        if i64::try_from(n).unwrap_or(i64::MAX) < BATCH {
            return Ok(total);
        }
    }
}
