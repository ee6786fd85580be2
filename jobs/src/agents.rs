//! Agent jobs. The scheduler enqueues one [`RunScheduledAgent`] per due tick of an
//! organization's `agent_schedules` row, whose handler records a run with trigger `schedule`
//! (or the skipped tick); [`start`] records a run and enqueues its [`RunAgent`] in the caller's
//! transaction (the API's `POST /agents/{id}/runs`, a schedule's tick).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::db::agent_runs::{self, NewRun};

use crate::{EnqueueError, Job, Opts, enqueue};

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

/// Takes one run's steps until it ends. Durable: every step is recorded before its effect and a
/// retried or rescued job resumes at the first unfinished step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunAgent {
    pub run_id: Uuid,
}

impl Job for RunAgent {
    const NAME: &'static str = "agents.run";
    const QUEUE: &'static str = "agents";
    const MAX_ATTEMPTS: i32 = 10;
    /// Many LLM calls of up to a minute each; a run cut by the timeout resumes where it stood.
    const TIMEOUT: Duration = Duration::from_secs(15 * 60);

    fn unique_key(&self) -> Option<String> {
        Some(self.run_id.to_string())
    }

    /// A provider that is down for a while: 30 s, 1 min, 2 min, … up to 30 min.
    fn backoff(attempt: i32) -> Duration {
        let exponent = u32::try_from(attempt.clamp(1, 7) - 1).unwrap_or(0);
        Duration::from_secs(30 * 2u64.pow(exponent)).min(Duration::from_secs(30 * 60))
    }
}

/// Records a queued run of `organization_id`'s agent and enqueues its [`RunAgent`], in the
/// caller's transaction. `None` when it is a schedule's run and that schedule's previous run
/// is unfinished: nothing is recorded.
///
/// # Errors
/// Database errors.
pub async fn start(
    conn: &mut PgConnection,
    organization_id: Uuid,
    run: &NewRun<'_>,
) -> Result<Option<Uuid>, EnqueueError> {
    let Some(run_id) = agent_runs::insert(conn, organization_id, run).await? else {
        return Ok(None);
    };
    enqueue(
        conn,
        &RunAgent { run_id },
        Opts::organization(organization_id),
    )
    .await?;
    Ok(Some(run_id))
}
