//! The rows of `bench queue`: which drains every system runs, at which slots per process, with
//! how many processes and jobs, and the bare-loop bound a row of sleeping jobs is held against.
//! Every system runs the same rows (tenant rows only where the system has tenants), so each
//! ratio compares like with like.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::QueueArgs;

/// How long a realistic job sleeps.
pub const SLEEP_MS: u64 = 5;

/// What each job of a drain does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum JobShape {
    /// Nothing: the queue's own cost.
    #[serde(rename = "noop")]
    Noop,
    /// Sleeps [`SLEEP_MS`]: slots matter.
    #[serde(rename = "sleep_5ms")]
    Sleep5ms,
}

impl JobShape {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Noop => "noop",
            Self::Sleep5ms => "sleep_5ms",
        }
    }
}

/// One drain, run by every system that can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    /// Slots per worker process.
    pub concurrency: usize,
    /// Worker processes on the one database.
    pub processes: usize,
    /// Jobs enqueued in one transaction, then drained.
    pub jobs: usize,
    /// Jobs of an organization (Zoark's `organization_id` set, so the event trigger fires).
    pub tenant: bool,
    pub job: JobShape,
}

impl Scenario {
    const fn new(concurrency: usize, processes: usize, jobs: usize, job: JobShape) -> Self {
        Self {
            concurrency,
            processes,
            jobs,
            tenant: false,
            job,
        }
    }

    const fn tenant(self) -> Self {
        Self {
            tenant: true,
            ..self
        }
    }

    /// The same drain with platform jobs: what a system without tenants is compared on.
    pub fn platform(self) -> Self {
        Self {
            tenant: false,
            ..self
        }
    }

    /// `noop, 24 slots × 1, 100k, tenant`.
    pub fn label(&self) -> String {
        let jobs = if self.jobs.is_multiple_of(1000) {
            format!("{}k", self.jobs / 1000)
        } else {
            self.jobs.to_string()
        };
        format!(
            "{}, {} slots × {}, {jobs}{}",
            self.job.as_str(),
            self.concurrency,
            self.processes,
            if self.tenant { ", tenant" } else { "" }
        )
    }

    /// Rows that share a set of running worker processes.
    pub fn workers(&self) -> (usize, usize) {
        (self.concurrency, self.processes)
    }
}

use JobShape::{Noop, Sleep5ms};

/// The full run. The first row is the headline: equal concurrency (graphile-worker's own 24
/// slots), one process, no-op jobs; idle load, RSS and pickup latency are measured with its
/// workers.
const FULL: &[Scenario] = &[
    Scenario::new(24, 1, 100_000, Noop),
    Scenario::new(24, 1, 20_000, Noop),
    Scenario::new(24, 1, 100_000, Noop).tenant(),
    Scenario::new(24, 1, 20_000, Sleep5ms),
    Scenario::new(1000, 1, 100_000, Noop),
    Scenario::new(1000, 1, 20_000, Noop),
    Scenario::new(1000, 1, 100_000, Noop).tenant(),
    Scenario::new(24, 4, 100_000, Noop),
    Scenario::new(24, 4, 100_000, Sleep5ms),
    Scenario::new(1000, 4, 100_000, Noop),
];

/// `--quick` (CI): every kind of row once, small.
const QUICK: &[Scenario] = &[
    Scenario::new(24, 1, 5_000, Noop),
    Scenario::new(24, 1, 5_000, Noop).tenant(),
    Scenario::new(24, 1, 2_000, Sleep5ms),
    Scenario::new(1000, 1, 5_000, Noop),
    Scenario::new(24, 4, 5_000, Noop),
];

/// What one invocation runs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub rows: Vec<Scenario>,
    pub rounds: usize,
    pub samples: usize,
    pub idle_secs: u64,
    pub finished_rows: usize,
}

impl Plan {
    pub fn new(args: &QueueArgs) -> Self {
        let mut rows: Vec<Scenario> = if args.quick { QUICK } else { FULL }.to_vec();
        if let Some(jobs) = args.jobs {
            rows.iter_mut().for_each(|row| row.jobs = jobs);
            let mut seen = Vec::new();
            rows.retain(|row| {
                let new = !seen.contains(row);
                seen.push(*row);
                new
            });
        }
        if !args.rows.is_empty() {
            rows.retain(|row| {
                let label = row.label();
                args.rows
                    .iter()
                    .any(|wanted| label.contains(wanted.as_str()))
            });
        }
        Self {
            rows,
            rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }),
            samples: args.samples.unwrap_or(if args.quick { 50 } else { 1_000 }),
            idle_secs: args.idle_secs.unwrap_or(if args.quick { 2 } else { 30 }),
            finished_rows: args.finished_rows.unwrap_or(if args.quick {
                100_000
            } else {
                1_000_000
            }),
        }
    }

    /// The equal-concurrency, one-process, no-op row.
    pub fn headline(&self) -> Option<Scenario> {
        self.rows.first().copied()
    }

    /// The sets of worker processes, in the order of their first row.
    pub fn worker_sets(&self) -> Vec<(usize, usize)> {
        let mut sets = Vec::new();
        for row in &self.rows {
            if !sets.contains(&row.workers()) {
                sets.push(row.workers());
            }
        }
        sets
    }
}

/// The bound for a row of sleeping jobs: `concurrency × processes` tokio tasks in this process
/// sleeping [`SLEEP_MS`] in a loop until `jobs` sleeps are done, with no queue at all (tokio
/// rounds each sleep up to the next millisecond tick, so this is below `slots / 5 ms`).
pub async fn bare_loop_per_s(row: &Scenario) -> anyhow::Result<f64> {
    let left = Arc::new(AtomicUsize::new(row.jobs));
    let start = Instant::now();
    let tasks: Vec<_> = (0..row.concurrency * row.processes)
        .map(|_| {
            let left = Arc::clone(&left);
            tokio::spawn(async move {
                while left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    tokio::time::sleep(Duration::from_millis(SLEEP_MS)).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    Ok(row.jobs as f64 / start.elapsed().as_secs_f64())
}
