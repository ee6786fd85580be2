//! The job states (River's vocabulary) as one enum shared by the worker, the API and the tests.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// `scheduled` → `available` → `running` → `completed`, or `retryable` (back to claimable at its
/// `run_at`), `discarded` (attempts exhausted, fatal error, unknown kind) or `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Scheduled,
    Available,
    Running,
    Retryable,
    Completed,
    Discarded,
    Cancelled,
}

impl JobState {
    pub const ALL: [Self; 7] = [
        Self::Scheduled,
        Self::Available,
        Self::Running,
        Self::Retryable,
        Self::Completed,
        Self::Discarded,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Available => "available",
            Self::Running => "running",
            Self::Retryable => "retryable",
            Self::Completed => "completed",
            Self::Discarded => "discarded",
            Self::Cancelled => "cancelled",
        }
    }

    /// Finished jobs no longer hold their unique key and are pruned after a retention period.
    pub fn is_finished(self) -> bool {
        matches!(self, Self::Completed | Self::Discarded | Self::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not a job state")]
pub struct ParseStateError(String);

impl FromStr for JobState {
    type Err = ParseStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| ParseStateError(s.to_owned()))
    }
}
