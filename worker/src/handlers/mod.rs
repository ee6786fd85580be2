//! One handler per job kind; `register` adds each kind's apalis worker to the monitor.
//!
//! The job engine (contracts in `zoark-jobs`, retries, timeouts, rescue) registers its kinds here.
//! Until then the worker runs, stays connected and shuts down cleanly, with no kinds.

use apalis::prelude::Monitor;

use crate::WorkerContext;

/// Registers every job kind's worker; returns the monitor and the kinds' names.
pub fn register(monitor: Monitor, _ctx: &WorkerContext) -> (Monitor, Vec<&'static str>) {
    (monitor, Vec::new())
}
