//! Platform maintenance jobs, enqueued by the scheduler's static cron table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

/// Deletes finished jobs older than the configured retention (completed and cancelled after
/// `ZOARK_JOBS_RETENTION_HOURS`, discarded after `ZOARK_JOBS_DISCARDED_RETENTION_DAYS`), expired
/// sign-in bookkeeping and idempotency keys, and sweeps uploaded files nothing names any more.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneJobs {}

impl Job for PruneJobs {
    const NAME: &'static str = "maintenance.prune_jobs";
    const QUEUE: &'static str = "maintenance";
    const MAX_ATTEMPTS: i32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(300);

    fn unique_key(&self) -> Option<String> {
        Some("prune".into())
    }
}

/// Rescues the running jobs of dead workers. Every worker does this on each heartbeat; the
/// scheduled job is the backstop for a queue whose workers are all gone.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RescueJobs {}

impl Job for RescueJobs {
    const NAME: &'static str = "maintenance.rescue_jobs";
    const QUEUE: &'static str = "maintenance";
    const MAX_ATTEMPTS: i32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn unique_key(&self) -> Option<String> {
        Some("rescue".into())
    }
}

/// Dumps the whole database with `pg_dump` (custom format, compressed), seals it with
/// `ZOARK_BACKUP_ENCRYPTION_KEY` when set, streams it to `ZOARK_BACKUP_DESTINATION`, then
/// deletes backups older than `ZOARK_BACKUP_RETENTION_DAYS`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BackupDatabase {}

impl Job for BackupDatabase {
    const NAME: &'static str = "maintenance.backup_database";
    const QUEUE: &'static str = "maintenance";
    const MAX_ATTEMPTS: i32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(3600);

    fn unique_key(&self) -> Option<String> {
        Some("backup".into())
    }
}
