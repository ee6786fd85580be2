//! `reminders.send`: superseded. Due-task reminders are sent by each organization's team
//! coordinator agent (`crate::agents::coordinator`) and timesheet reminders by its timesheet
//! reminder agent (`crate::agents::timesheets`), each on its own schedule. A job of this kind
//! comes only from a scheduler older than that change, during a rolling deploy: it completes
//! without doing anything (the agents record each reminder in the same `reminders_sent`, so
//! nothing is sent twice and nothing is missed).

use zoark_jobs::reminders::SendReminders;

use crate::{
    WorkerContext,
    engine::{JobContext, Registry},
};

pub fn register(registry: Registry, _: &WorkerContext) -> Registry {
    registry.register(|_: SendReminders, _: JobContext| async {
        tracing::info!(
            "reminders.send is superseded by the team coordinator and timesheet reminder agents"
        );
        Ok(())
    })
}
