//! When to claim. The waker listens on `zoark_jobs_ready` (sent once per statement that makes
//! jobs available, or scheduled or retryable with the earliest `run_at`) and `zoark_job_cancel`,
//! keeps a timer for the earliest future `run_at` of each queue, and when it passes makes that
//! queue's due jobs available (`sql/promote.sql`), so delayed and retrying jobs start on time; it
//! polls every `poll_interval` as a backstop with one query for all queues. A fetcher per queue
//! waits for its wake-up, then claims until a claim comes back empty.

use std::{collections::HashMap, sync::Arc, time::Duration};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    Claimed, Shared, StopReason,
    complete::Completion,
    queue::{QueueState, Reserved},
};

/// Timers fire this much after the `run_at` they wait for (the NOTIFY payload is rounded to
/// the millisecond).
const TIMER_SLACK: chrono::Duration = chrono::Duration::milliseconds(2);

pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut next_due: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut listener = match listen(&shared).await {
        Ok(listener) => Some(listener),
        Err(error) => {
            tracing::warn!(%error, "LISTEN failed; relying on polling");
            None
        }
    };
    poll(&shared, &mut next_due).await;
    let mut poll_every = tokio::time::interval(shared.config.poll_interval);
    poll_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll_every.reset();
    loop {
        let earliest = next_due.values().min().copied();
        let timer = async {
            match earliest {
                Some(at) => {
                    let wait = (at + TIMER_SLACK - Utc::now()).to_std().unwrap_or_default();
                    tokio::time::sleep(wait).await;
                }
                None => std::future::pending().await,
            }
        };
        let notification = async {
            match listener.as_mut() {
                Some(listener) => listener.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = timer => {
                let now = Utc::now();
                let mut passed = Vec::new();
                next_due.retain(|queue, at| {
                    if *at <= now {
                        passed.push(queue.clone());
                        false
                    } else {
                        true
                    }
                });
                promote(&shared, &passed).await;
            }
            _ = poll_every.tick() => poll(&shared, &mut next_due).await,
            received = notification => match received {
                Ok(n) if n.channel() == "zoark_job_cancel" => {
                    if let Ok(id) = n.payload().parse::<Uuid>() {
                        shared.stop_jobs(Some(&[id]), StopReason::Cancelled);
                    }
                }
                Ok(n) => match parse_ready(n.payload()) {
                    Some(Ready::Available(queue)) => wake(&shared, queue),
                    Some(Ready::Later(queue, at)) => {
                        if at <= Utc::now() {
                            promote(&shared, &[queue.to_owned()]).await;
                        } else {
                            later(&shared, &mut next_due, queue, at);
                        }
                    }
                    None => {}
                },
                Err(error) => {
                    // sqlx reconnects on the next recv; anything sent meanwhile is found by a poll.
                    tracing::warn!(%error, "LISTEN connection lost; polling once");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    poll(&shared, &mut next_due).await;
                }
            },
        }
    }
}

async fn listen(shared: &Shared) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(&shared.pool).await?;
    listener
        .listen_all(["zoark_jobs_ready", "zoark_job_cancel"])
        .await?;
    Ok(listener)
}

/// What a `zoark_jobs_ready` notification says about a queue.
#[derive(Debug, PartialEq, Eq)]
enum Ready<'a> {
    /// `<queue> <ms>`: jobs became available; claim.
    Available(&'a str),
    /// `<queue> <ms> later`: jobs were scheduled (or wait to be retried) from `<ms>` on.
    Later(&'a str, DateTime<Utc>),
}

fn parse_ready(payload: &str) -> Option<Ready<'_>> {
    let mut words = payload.split(' ');
    let queue = words.next()?;
    let at = Utc
        .timestamp_millis_opt(words.next()?.parse().ok()?)
        .single()?;
    match words.next() {
        None => Some(Ready::Available(queue)),
        Some("later") => Some(Ready::Later(queue, at)),
        Some(_) => None,
    }
}

fn wake(shared: &Shared, queue: &str) {
    if let Some(state) = shared.queues.get(queue) {
        state.wake.notify_one();
    }
}

/// A queue of ours has jobs becoming due at `at`: set its timer.
fn later(
    shared: &Shared,
    next_due: &mut HashMap<String, DateTime<Utc>>,
    queue: &str,
    at: DateTime<Utc>,
) {
    if !shared.queues.contains_key(queue) {
        return;
    }
    let entry = next_due.entry(queue.to_owned()).or_insert(at);
    *entry = (*entry).min(at);
}

/// How many due jobs one promotion makes available per queue; it repeats while it fills that.
const PROMOTE_BATCH: i64 = 5_000;

/// Makes the due scheduled and retryable jobs of `queues` available, then wakes their
/// fetchers. Every worker's waker does this when a run_at passes; they skip each other's rows.
/// Its trigger also wakes the other workers. A failure is left to the next poll.
async fn promote(shared: &Shared, queues: &[String]) {
    if queues.is_empty() {
        return;
    }
    loop {
        let promoted = sqlx::query_file!("src/engine/sql/promote.sql", queues, PROMOTE_BATCH)
            .execute(&shared.pool)
            .await;
        match promoted {
            Ok(done) if done.rows_affected() >= u64::try_from(PROMOTE_BATCH).unwrap_or(0) => {}
            Ok(_) => break,
            Err(error) => {
                tracing::warn!(%error, "making due jobs available failed; the next poll retries");
                break;
            }
        }
    }
    for queue in queues {
        wake(shared, queue);
    }
}

/// The backstop: for each of our queues, whether jobs are available and the earliest run_at of
/// its scheduled and retryable jobs, in one query that reads two small indexes.
async fn poll(shared: &Shared, next_due: &mut HashMap<String, DateTime<Utc>>) {
    let queues: Vec<String> = shared.queues.keys().cloned().collect();
    let rows = sqlx::query!(
        r#"
        SELECT q.queue AS "queue!",
               EXISTS (SELECT 1 FROM jobs WHERE queue = q.queue AND state = 'available') AS "available!",
               (SELECT run_at FROM jobs
                WHERE queue = q.queue AND state IN ('scheduled', 'retryable')
                ORDER BY run_at LIMIT 1) AS "later?"
        FROM unnest($1::text[]) AS q(queue)
        "#,
        &queues,
    )
    .fetch_all(&shared.pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, "polling for due jobs failed");
            return;
        }
    };
    let now = Utc::now();
    let mut passed = Vec::new();
    for row in rows {
        if row.available {
            wake(shared, &row.queue);
        }
        match row.later {
            Some(at) if at <= now => passed.push(row.queue),
            Some(at) => later(shared, next_due, &row.queue, at),
            None => {}
        }
    }
    promote(shared, &passed).await;
}

/// One queue's fetcher: whenever woken, claims while the queue has room (its free slots and
/// its claim-ahead buffer, [`super::queue`]), until a claim comes back empty.
pub(crate) async fn fetch(
    shared: Arc<Shared>,
    queue: Arc<QueueState>,
    tx: mpsc::Sender<Claimed>,
    stop: CancellationToken,
) {
    let batch = shared.config.claim_batch;
    let mut failures = 0u32;
    'wait: loop {
        tokio::select! {
            () = stop.cancelled() => break 'wait,
            () = queue.wake.notified() => {}
        }
        loop {
            // Room first, then the backlog: waiting for room lets held jobs finish into the
            // backlog, so the backlog is checked last, just before the claim.
            let Some(mut room) = queue.room(batch, &stop).await else {
                break 'wait;
            };
            if !shared.ready_to_claim(&stop).await {
                break 'wait;
            }
            match claim(&shared, &queue.name, room.len()).await {
                Ok(jobs) => {
                    failures = 0;
                    let got = jobs.len();
                    hand_over(&shared, &queue.name, &tx, jobs, &mut room).await;
                    drop(room);
                    // A claim gives each tenant a share, so one that comes back short may
                    // still leave jobs behind: only an empty claim means the queue is drained.
                    if got == 0 || stop.is_cancelled() {
                        continue 'wait;
                    }
                }
                Err(error) => {
                    drop(room);
                    failures += 1;
                    tracing::warn!(%error, queue = queue.name, "claiming jobs failed");
                    let delay = Duration::from_millis(100 * 2u64.pow(failures.min(6)));
                    tokio::select! {
                        () = stop.cancelled() => break 'wait,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

struct Row {
    id: Uuid,
    organization_id: Option<Uuid>,
    kind: String,
    args: serde_json::Value,
    attempt: i32,
    max_attempts: i32,
    run_at: DateTime<Utc>,
    priority: i16,
    timeout_ms: Option<i32>,
}

async fn claim(shared: &Shared, queue: &str, n: usize) -> Result<Vec<Row>, sqlx::Error> {
    let (kinds, timeouts) = &shared.kind_timeouts;
    let mut rows = sqlx::query_file_as!(
        Row,
        "src/engine/sql/claim.sql",
        queue,
        i64::try_from(n).unwrap_or(1),
        shared.worker_id,
        kinds,
        timeouts,
        i64::try_from(shared.config.rescue_after.as_millis()).unwrap_or(i64::MAX),
    )
    .fetch_all(&shared.pool)
    .await?;
    rows.sort_by_key(|r| (r.priority, r.run_at, r.id));
    Ok(rows)
}

async fn hand_over(
    shared: &Shared,
    queue: &str,
    tx: &mpsc::Sender<Claimed>,
    jobs: Vec<Row>,
    room: &mut Reserved,
) {
    let claimed_at = std::time::Instant::now();
    for row in jobs {
        let Some(held) = room.take() else {
            // Never claimed more rows than reserved; if it happens, give the row straight back.
            give_back(shared, row.id, row.attempt);
            continue;
        };
        let claimed = Claimed {
            id: row.id,
            organization_id: row.organization_id,
            queue: queue.to_owned(),
            kind: row.kind,
            args: row.args,
            attempt: row.attempt,
            max_attempts: row.max_attempts,
            run_at: row.run_at,
            timeout: row
                .timeout_ms
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis),
            claimed_at,
            held,
        };
        if let Err(mpsc::error::SendError(claimed)) = tx.send(claimed).await {
            give_back(shared, claimed.id, claimed.attempt);
        }
    }
}

/// Returns a claimed job to the queue without spending its attempt.
pub(crate) fn give_back(shared: &Shared, id: Uuid, attempt: i32) {
    shared.report(Completion {
        id,
        attempt,
        state: "available",
        run_at: Some(Utc::now()),
        error: None,
        attempt_delta: -1,
    });
}

/// Queue depth (unfinished jobs by state) and the age of the oldest waiting job, as Prometheus
/// gauges; read from the claim and running-job indexes, so the finished jobs kept for the API do
/// not make it slower.
pub(crate) async fn report_queues(shared: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let Ok(mut conn) = shared.pool.acquire().await else {
            continue;
        };
        match zoark_jobs::admin::backlog(&mut conn).await {
            Ok(stats) => {
                for q in stats {
                    for (state, n) in [
                        ("scheduled", q.scheduled),
                        ("available", q.available),
                        ("running", q.running),
                        ("retryable", q.retryable),
                    ] {
                        metrics::gauge!("zoark_queue_jobs", "queue" => q.queue.clone(), "state" => state)
                            .set(n as f64);
                    }
                    metrics::gauge!("zoark_queue_oldest_available_seconds", "queue" => q.queue.clone())
                        .set(q.oldest_available_age_secs.unwrap_or(0.0));
                }
            }
            Err(error) => tracing::debug!(%error, "queue statistics failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_notifications_say_whether_to_claim_or_to_promote_later() {
        let at = Utc
            .timestamp_millis_opt(1_764_680_000_123)
            .single()
            .unwrap();
        assert_eq!(
            parse_ready("emails 1764680000123"),
            Some(Ready::Available("emails"))
        );
        assert_eq!(
            parse_ready("emails 1764680000123 later"),
            Some(Ready::Later("emails", at))
        );
        assert_eq!(parse_ready("emails 1764680000123 sometime"), None);
        assert_eq!(parse_ready("emails"), None);
        assert_eq!(parse_ready("emails soon"), None);
    }
}
