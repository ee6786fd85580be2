//! One queue of a worker: how many of its jobs this worker holds (claimed and not finished, in
//! its buffer or running), and how many it may hold.
//!
//! **Claim ahead.** A queue holds up to its slots plus a buffer of claimed, unstarted jobs, so
//! that a queue with few slots still claims in batches instead of one claim per freed slot. The
//! buffer is sized to about [`AHEAD_WORK`] of work at the pace the queue's jobs have been running
//! (an average of their durations), and never beyond the claim batch: thousands of no-op jobs,
//! a few hundred 5 ms jobs, a handful of one-second jobs, none of jobs that take minutes. So a
//! job claimed ahead waits about that long for its slot, whatever it is, which is what keeps
//! tenants fair (the claim takes each tenant's share; the buffer delays another tenant's job by
//! about [`AHEAD_WORK`], not by a backlog) and keeps a buffered job far from the deadline its
//! claim gave it. Buffered jobs are given back at shutdown with their attempts unspent.

use std::{
    sync::Arc,
    sync::atomic::{AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use tokio::sync::Notify;

/// About how much work the claim-ahead buffer of a queue holds.
pub(crate) const AHEAD_WORK: Duration = Duration::from_millis(100);

/// Not yet measured: no buffer until the queue's first jobs have run.
const UNKNOWN: u64 = u64::MAX;

pub(crate) struct QueueState {
    pub(crate) name: String,
    pub(crate) slots: usize,
    /// Jobs claimed by this worker and not finished.
    held: AtomicUsize,
    /// Signalled whenever a held job finishes.
    released: Notify,
    /// The average duration of the queue's jobs in µs (an exponential moving average over
    /// about the last 16), or [`UNKNOWN`].
    pace_us: AtomicU64,
    /// Wakes the fetcher: jobs may be due.
    pub(crate) wake: Notify,
}

impl QueueState {
    pub(crate) fn new(name: &str, slots: usize) -> Self {
        Self {
            name: name.to_owned(),
            slots,
            held: AtomicUsize::new(0),
            released: Notify::new(),
            pace_us: AtomicU64::new(UNKNOWN),
            wake: Notify::new(),
        }
    }

    /// Jobs of this queue claimed by this worker and not finished.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// How many jobs may wait in the buffer beyond the slots, at most `batch`.
    pub(crate) fn ahead(&self, batch: usize) -> usize {
        match self.pace_us.load(Ordering::Relaxed) {
            UNKNOWN => 0,
            pace => {
                let work = u64::try_from(AHEAD_WORK.as_micros()).unwrap_or(u64::MAX);
                let per_slot = usize::try_from(work / pace.max(1)).unwrap_or(usize::MAX);
                per_slot.saturating_mul(self.slots).min(batch)
            }
        }
    }

    /// Records how long one of the queue's jobs ran.
    pub(crate) fn record(&self, took: Duration) {
        let sample = u64::try_from(took.as_micros()).unwrap_or(u64::MAX / 2);
        let pace = match self.pace_us.load(Ordering::Relaxed) {
            UNKNOWN => sample,
            // Racing updates may lose a sample; an average does not mind.
            old => old - old / 16 + sample / 16,
        };
        self.pace_us.store(pace.min(UNKNOWN - 1), Ordering::Relaxed);
    }

    /// Waits until the queue may claim, and reserves what it may claim now: `None` when `stop`
    /// fired first. A claim is worth sending when a slot would otherwise be idle or when the
    /// buffer has room for half its size, so that a busy queue claims in batches.
    pub(crate) async fn room(
        self: &Arc<Self>,
        batch: usize,
        stop: &tokio_util::sync::CancellationToken,
    ) -> Option<Reserved> {
        loop {
            // Registered before the check: a job finishing in between is not missed.
            let released = self.released.notified();
            let ahead = self.ahead(batch);
            let limit = self.slots + ahead;
            let held = self.held.load(Ordering::SeqCst);
            let room = limit.saturating_sub(held).min(batch);
            if room > 0 && (held < self.slots || room >= (ahead / 2).max(1)) {
                self.held.fetch_add(room, Ordering::SeqCst);
                return Some(Reserved {
                    queue: Arc::clone(self),
                    left: room,
                });
            }
            tokio::select! {
                () = stop.cancelled() => return None,
                () = released => {}
            }
        }
    }
}

/// Room reserved for one claim; what the claim does not fill is released when this drops.
pub(crate) struct Reserved {
    queue: Arc<QueueState>,
    left: usize,
}

impl Reserved {
    pub(crate) fn len(&self) -> usize {
        self.left
    }

    /// One claimed job takes one place of the reservation.
    pub(crate) fn take(&mut self) -> Option<Held> {
        self.left = self.left.checked_sub(1)?;
        Some(Held {
            queue: Arc::clone(&self.queue),
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.left > 0 {
            self.queue.held.fetch_sub(self.left, Ordering::SeqCst);
            self.queue.released.notify_one();
        }
    }
}

/// One job held by this worker; it stops counting when this drops (the job has finished, or
/// has been given back).
pub(crate) struct Held {
    queue: Arc<QueueState>,
}

impl Held {
    pub(crate) fn queue(&self) -> &QueueState {
        &self.queue
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.queue.held.fetch_sub(1, Ordering::SeqCst);
        self.queue.released.notify_one();
    }
}
