//! Folds the `jobs` trigger's tallies into the job counts and throughput buckets every second
//! (`zoark_jobs::counts`). Every worker runs this loop; an advisory lock lets one of them fold
//! at a time, so the others' ticks cost one statement. Readers add the tallies not folded yet,
//! so a worker that stops folding makes counts slower to read, never wrong.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use super::Shared;

const EVERY: Duration = Duration::from_secs(1);
/// Old buckets and zero counts are deleted once a minute.
const PRUNE_EVERY: u32 = 60;

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u32 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        ticks = ticks.wrapping_add(1);
        let Ok(mut conn) = shared.pool.acquire().await else {
            continue;
        };
        if let Err(error) =
            zoark_jobs::counts::fold(&mut conn, ticks.is_multiple_of(PRUNE_EVERY)).await
        {
            tracing::warn!(%error, "could not fold job counts; readers add the pending tallies");
        }
    }
}
