//! The scheduler's hourly reminder pass ([`SendReminders`]): assignees of tasks due within a
//! day, and team members whose week of work ends, reminded to log their hours.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

/// One pass over every organization: reminds the assignees of open tasks due within 24 hours
/// (once per task, person and due time) and, on each team member's last working day of the
/// week from an hour before their day ends (16:00 without working hours), asks them to
/// complete their timesheet (once per ISO week). Enqueued hourly by the static cron table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SendReminders {}

impl Job for SendReminders {
    const NAME: &'static str = "reminders.send";
    const MAX_ATTEMPTS: i32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(300);

    fn unique_key(&self) -> Option<String> {
        Some("reminders".into())
    }
}
