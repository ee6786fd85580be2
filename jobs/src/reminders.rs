//! The former hourly reminder pass ([`SendReminders`]), superseded by the team coordinator and
//! timesheet reminder agents: the kind stays known so that a job enqueued by an older scheduler
//! completes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

/// Superseded: completes without doing anything (the agents send these reminders).
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
