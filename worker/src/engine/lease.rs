//! The worker's lease. Every heartbeat is one statement, sent on a connection of its own (a
//! busy engine pool cannot make a healthy worker look dead), that
//! 1. refreshes this worker's row; a row found stale (the lease lapsed: Postgres was away, or
//!    this worker stalled) starts a new lease (`lease_since = now()`), a row found missing was
//!    rescued by a peer and is registered again;
//! 2. only when this worker has held its lease without a break for the rescue window: deletes
//!    workers silent for that long and makes their running jobs `retryable` (`rescued`), and
//!    fails running jobs past their deadline (any worker's, this one's included) as a `timeout`
//!    would;
//! 3. returns the running jobs of this worker whose cancellation was requested.
//!
//! Why the rule in 2: after a database outage every lease looks stale at once. A worker whose own
//! lease lapsed has outcomes waiting in memory for jobs it finished meanwhile; if its peers
//! rescued those jobs as soon as the database returned, the outcomes would be refused (fenced)
//! and the jobs run twice. With the rule, nobody rescues anyone for a full window after an
//! outage: every live worker re-registers and writes its outcomes first, and only workers that
//! stay silent for the whole window are rescued.
//!
//! A job is never run twice at once: a worker that could not heartbeat for
//! `rescue_after - heartbeat_interval` fences itself — it stops its jobs and its fetchers claim
//! nothing until a heartbeat succeeds again — before anyone may rescue them; the claim itself
//! returns nothing once the worker's row is gone; and every outcome it writes later is fenced on
//! its worker id and attempt.

use std::{sync::Arc, time::Duration};

use sqlx::{Connection as _, PgConnection, PgPool, postgres::PgConnectOptions};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Shared, StopReason};

pub(crate) async fn register(
    pool: &PgPool,
    hostname: &str,
    queues: &[String],
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar!(
        "INSERT INTO job_workers (hostname, pid, queues) VALUES ($1, $2, $3) RETURNING id",
        hostname,
        i32::try_from(std::process::id()).unwrap_or(0),
        queues,
    )
    .fetch_one(pool)
    .await
}

pub(crate) async fn deregister(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("DELETE FROM job_workers WHERE id = $1", id)
        .execute(pool)
        .await?;
    Ok(())
}

/// What one heartbeat learned.
pub(crate) struct Beat {
    /// Our row was gone (we were presumed dead): our running jobs were rescued.
    pub(crate) lost: bool,
    /// Our row was stale: a new lease began with this heartbeat.
    pub(crate) lapsed: bool,
    pub(crate) rescued: i64,
    pub(crate) cancel: Vec<Uuid>,
}

/// Heartbeat + rescue in one statement. `worker_id = None` rescues only (the maintenance job),
/// and only while some live worker has held its lease for the whole window.
pub(crate) async fn beat(
    conn: &mut PgConnection,
    worker_id: Option<Uuid>,
    hostname: &str,
    queues: &[String],
    rescue_after: Duration,
) -> Result<Beat, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let row = sqlx::query!(
        r#"
        WITH hb AS (
            INSERT INTO job_workers (id, hostname, pid, queues)
            SELECT $1, $2, $3, $4 WHERE $1::uuid IS NOT NULL
            ON CONFLICT (id) DO UPDATE SET
                heartbeat_at = now(),
                lease_since = CASE WHEN job_workers.heartbeat_at < now() - make_interval(secs => $5)
                                   THEN now() ELSE job_workers.lease_since END
            RETURNING (xmax = 0) AS recreated, lease_since
        ), rescuer AS (
            SELECT CASE WHEN $1::uuid IS NULL
                        THEN EXISTS (SELECT 1 FROM job_workers
                                     WHERE heartbeat_at >= now() - make_interval(secs => $5)
                                       AND lease_since <= now() - make_interval(secs => $5))
                        ELSE coalesce((SELECT lease_since <= now() - make_interval(secs => $5) FROM hb), false)
                   END AS may
        ), dead AS (
            DELETE FROM job_workers
            WHERE heartbeat_at < now() - make_interval(secs => $5)
              AND id IS DISTINCT FROM $1
              AND (SELECT may FROM rescuer)
            RETURNING id
        ), victims AS MATERIALIZED (
            SELECT j.id, j.attempt, j.worker_id,
                   CASE WHEN j.worker_id IS DISTINCT FROM $1
                             AND (j.worker_id IN (SELECT id FROM dead)
                                  OR NOT EXISTS (SELECT 1 FROM job_workers w WHERE w.id = j.worker_id))
                        THEN 'rescued' ELSE 'timeout' END AS why
            FROM jobs j
            WHERE j.state = 'running'
              AND (SELECT may FROM rescuer)
              AND ((j.worker_id IS DISTINCT FROM $1
                    AND (j.worker_id IN (SELECT id FROM dead)
                         OR NOT EXISTS (SELECT 1 FROM job_workers w WHERE w.id = j.worker_id)))
                   OR j.deadline_at < now())
        ), rescued AS (
            UPDATE jobs j SET
                state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                             WHEN j.attempt >= j.max_attempts THEN 'discarded'
                             ELSE 'retryable' END,
                finalized_at = CASE WHEN j.cancel_requested_at IS NOT NULL OR j.attempt >= j.max_attempts
                                    THEN now() END,
                run_at = now(),
                worker_id = NULL,
                deadline_at = NULL,
                errors = j.errors || jsonb_build_array(jsonb_build_object(
                    'attempt', j.attempt, 'at', now(), 'kind', v.why,
                    'duration_ms', (extract(epoch FROM now() - j.attempted_at) * 1000)::bigint,
                    'error', CASE v.why
                        WHEN 'rescued' THEN 'the worker running this attempt stopped heartbeating'
                        ELSE 'the attempt passed its deadline (its timeout plus the rescue window) without an outcome'
                    END))
            FROM victims v
            WHERE j.id = v.id AND j.state = 'running' AND j.attempt = v.attempt AND j.worker_id = v.worker_id
            RETURNING j.id, j.state
        )
        SELECT coalesce((SELECT recreated FROM hb), false) AS "lost!",
               coalesce((SELECT lease_since = now() AND NOT recreated FROM hb), false) AS "lapsed!",
               (SELECT count(*) FROM rescued) AS "rescued!",
               ARRAY(SELECT id FROM rescued WHERE state = 'discarded') AS "discarded!",
               ARRAY(SELECT id FROM jobs
                     WHERE state = 'running' AND worker_id = $1 AND cancel_requested_at IS NOT NULL) AS "cancel!"
        "#,
        worker_id,
        hostname,
        i32::try_from(std::process::id()).unwrap_or(0),
        queues,
        rescue_after.as_secs_f64(),
    )
    .fetch_one(&mut *tx)
    .await?;
    // Jobs rescued past their last attempt are discarded: their events commit with them.
    if !row.discarded.is_empty() {
        super::complete::emit_discarded(&mut tx, &row.discarded).await?;
    }
    tx.commit().await?;
    Ok(Beat {
        lost: row.lost,
        lapsed: row.lapsed,
        rescued: row.rescued,
        cancel: row.cancel,
    })
}

/// The heartbeat's own connection, opened (again) when needed, within `within`.
async fn connection<'c>(
    conn: &'c mut Option<PgConnection>,
    options: &PgConnectOptions,
    within: Duration,
) -> Result<&'c mut PgConnection, sqlx::Error> {
    if conn.is_none() {
        let opened = tokio::time::timeout(within, PgConnection::connect_with(options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)??;
        *conn = Some(opened);
    }
    conn.as_mut().ok_or(sqlx::Error::PoolClosed)
}

pub(crate) async fn run(
    shared: Arc<Shared>,
    hostname: String,
    options: Arc<PgConnectOptions>,
    stop: CancellationToken,
) {
    let config = &shared.config;
    let queues: Vec<String> = config.queues.iter().map(|(q, _)| q.clone()).collect();
    // Stop our own jobs this long after the last heartbeat that reached Postgres: strictly
    // before any other worker may consider us dead.
    let fence_after = config
        .rescue_after
        .saturating_sub(config.heartbeat_interval)
        .max(config.heartbeat_interval / 2);
    // Postgres ends a heartbeat's statement when the heartbeat gives up on it. Dropping the
    // connection of a heartbeat that timed out does not stop its statement: a backend waiting on
    // a lock keeps waiting, holding this worker's row, and every later heartbeat queued behind
    // it (seen in a benchmark: 46 heartbeats of 18 s on average, the worker fenced, its drain
    // down to 862 jobs/s).
    let limit = (config.heartbeat_interval * 3 / 4)
        .as_millis()
        .max(1)
        .to_string();
    let options = options
        .as_ref()
        .clone()
        .options([("statement_timeout", &limit), ("lock_timeout", &limit)]);
    let mut last_ok = Instant::now();
    let mut fenced = false;
    let mut conn: Option<PgConnection> = None;
    let mut interval = tokio::time::interval(config.heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = interval.tick() => {}
        }
        let sent = Instant::now();
        let beat = if shared.hooks.heartbeat_paused() {
            Err("paused by a hook".to_owned())
        } else {
            let attempt = async {
                let conn = connection(&mut conn, &options, config.heartbeat_interval).await?;
                beat(
                    conn,
                    Some(shared.worker_id),
                    &hostname,
                    &queues,
                    config.rescue_after,
                )
                .await
            };
            match tokio::time::timeout(config.heartbeat_interval, attempt).await {
                Ok(Ok(beat)) => Ok(beat),
                Ok(Err(error)) => Err(error.to_string()),
                Err(_) => Err("timed out".to_owned()),
            }
        };
        match beat {
            Ok(beat) => {
                last_ok = sent;
                if beat.lost {
                    let stopped = shared.stop_jobs(None, StopReason::LeaseLost);
                    tracing::error!(
                        jobs = stopped,
                        "this worker was presumed dead; its running jobs were rescued elsewhere; registered again"
                    );
                } else if beat.lapsed {
                    tracing::warn!(
                        "this worker's lease had lapsed; a new one began (no rescues by it for one window)"
                    );
                }
                if fenced {
                    fenced = false;
                    tracing::info!("heartbeat reached Postgres again: claiming again");
                }
                shared.leased.send_replace(true);
                if beat.rescued > 0 {
                    tracing::warn!(
                        jobs = beat.rescued,
                        "rescued the running jobs of dead workers and jobs past their deadline"
                    );
                    metrics::counter!("zoark_jobs_rescued_total")
                        .increment(u64::try_from(beat.rescued).unwrap_or(0));
                }
                if !beat.cancel.is_empty() {
                    shared.stop_jobs(Some(&beat.cancel), StopReason::Cancelled);
                }
            }
            Err(error) => {
                // A connection that failed or hung is not trusted again.
                if let Some(old) = conn.take() {
                    drop(old);
                }
                tracing::warn!(%error, "heartbeat failed");
            }
        }
        if !fenced && last_ok.elapsed() >= fence_after {
            fenced = true;
            shared.leased.send_replace(false);
            let stopped = shared.stop_jobs(None, StopReason::LeaseLost);
            tracing::error!(
                jobs = stopped,
                "no heartbeat reached Postgres in time: fenced (stopping this worker's jobs before they are rescued, claiming nothing until a heartbeat succeeds)"
            );
        }
    }
    if let Some(conn) = conn {
        let _ = conn.close().await;
    }
}
