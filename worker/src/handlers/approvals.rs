//! `approvals.nudge_overdue`: superseded. Overdue approvals are nudged by each organization's
//! approval nudger agent (`crate::agents::nudger`) on its own schedule. A job of this kind comes
//! only from a scheduler older than that change, during a rolling deploy: it completes without
//! doing anything (the agents' runs nudge, counting on the same `last_nudged_at`, so nothing is
//! sent twice and nothing is missed).

use zoark_jobs::approvals::NudgeOverdue;

use crate::{
    WorkerContext,
    engine::{JobContext, Registry},
};

pub fn register(registry: Registry, _: &WorkerContext) -> Registry {
    registry.register(|_: NudgeOverdue, _: JobContext| async {
        tracing::info!("approvals.nudge_overdue is superseded by the approval nudger agent");
        Ok(())
    })
}
