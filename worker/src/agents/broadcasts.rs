//! The built-in broadcast sender: a scheduled broadcast, when its time comes, is sent as a run
//! of this agent (trigger `schedule`, input `{"broadcast_id"}`): one `email` step locks the
//! broadcast and, when it is still `scheduled`, fans it out (a delivery and an `email.send` job
//! per recipient) with a `broadcast_sent` activity entry, all in the step's transaction. A
//! broadcast sent by hand or cancelled meanwhile is left alone, and the run says so. The
//! message is the broadcast's own: this agent asks no LLM.

use serde_json::json;
use zoark_core::{
    agents::ActivityAction,
    db::{agent_runs::Run, broadcasts},
};
use zoark_jobs::email::send_broadcast;

use super::{End, input_id, notify::EffectStep, resume_position};
use crate::{WorkerContext, engine::JobError};

/// Runs the broadcast sender.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<End, JobError> {
    let broadcast_id = match input_id(run, "broadcast_id") {
        Ok(id) => id,
        Err(end) => return Ok(end),
    };
    let position = resume_position(ctx, run).await? + 1;
    let mut step =
        EffectStep::email(ctx, run, position, &json!({"broadcast_id": broadcast_id})).await?;
    let Some(broadcast) = broadcasts::lock(step.conn(), run.organization_id, broadcast_id).await?
    else {
        return Ok(End::Failed(format!(
            "broadcast {broadcast_id} no longer exists"
        )));
    };
    if broadcast.status != "scheduled" {
        // Sent by hand or cancelled meanwhile.
        let status = broadcast.status.clone();
        step.finish(json!({"skipped": status})).await?;
        return Ok(End::Succeeded(json!({
            "broadcast_id": broadcast_id,
            "sent": false,
            "note": format!("the broadcast is {status}, no longer scheduled: nothing sent"),
        })));
    }
    let fanned = send_broadcast(step.conn(), &broadcast)
        .await
        .map_err(anyhow::Error::from)?;
    let summary = format!(
        "\"{}\" sent to {} recipient(s) ({} suppressed)",
        broadcast.subject, fanned.queued, fanned.suppressed
    );
    let context = json!({"broadcast_id": broadcast_id, "queued": fanned.queued,
                         "suppressed": fanned.suppressed});
    step.activity(ActivityAction::BroadcastSent, &summary, &context)
        .await?;
    step.finish(context.clone()).await?;
    Ok(End::Succeeded(json!({
        "broadcast_id": broadcast_id,
        "sent": true,
        "queued": fanned.queued,
        "suppressed": fanned.suppressed,
    })))
}
