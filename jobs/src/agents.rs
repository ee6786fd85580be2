//! Agent jobs. The scheduler enqueues one [`RunScheduledAgent`] per due tick of an
//! organization's `agent_schedules` row; the agents issue brings its handler.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Job;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunScheduledAgent {
    pub schedule_id: Uuid,
    pub agent_id: Uuid,
    /// The tick this run stands for, in UTC.
    pub tick: DateTime<Utc>,
}

impl Job for RunScheduledAgent {
    const NAME: &'static str = "agents.run_scheduled";
    const QUEUE: &'static str = "agents";
    const MAX_ATTEMPTS: i32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(600);

    /// One job per schedule and tick, whichever scheduler replica gets there.
    fn unique_key(&self) -> Option<String> {
        Some(format!("{}:{}", self.schedule_id, self.tick.timestamp()))
    }
}
