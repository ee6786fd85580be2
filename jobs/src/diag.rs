//! Diagnostic job kinds: what benchmarks, crash tests and an operator checking a deployment
//! enqueue. They touch nothing but the `job_diagnostics` table and NOTIFY.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

/// Does nothing: the queue's own cost.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Noop {}

impl Job for Noop {
    const NAME: &'static str = "diag.noop";
    const QUEUE: &'static str = "diagnostics";
}

/// Sleeps `ms` milliseconds and touches nothing: a job that takes time, so that slots matter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sleep {
    pub ms: u64,
}

impl Job for Sleep {
    const NAME: &'static str = "diag.sleep";
    const QUEUE: &'static str = "diagnostics";
}

/// After sleeping `sleep_ms`, sends `NOTIFY zoark_diag, '<job id>'` when `notify` is set (latency
/// measurements: the job has started) and inserts `(job id, attempt, marker)` into
/// `job_diagnostics`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Record {
    pub marker: String,
    #[serde(default)]
    pub sleep_ms: u64,
    #[serde(default)]
    pub notify: bool,
}

impl Job for Record {
    const NAME: &'static str = "diag.record";
    const QUEUE: &'static str = "diagnostics";
    const TIMEOUT: Duration = Duration::from_secs(600);
}
