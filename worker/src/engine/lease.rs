//! The worker's lease. Every heartbeat is one statement that (1) refreshes this worker's row,
//! (2) deletes workers silent for longer than the rescue interval and makes their running jobs
//! `retryable` (or `discarded` when out of attempts) with a `rescued` error, and (3) returns the
//! running jobs of this worker whose cancellation was requested (in case the NOTIFY was missed).
//!
//! A job is never run twice at once: a worker that could not heartbeat for
//! `rescue_after - heartbeat_interval` stops its jobs itself before anyone may rescue them, and
//! every outcome it writes later is fenced on its worker id and attempt.

use std::{sync::Arc, time::Duration};

use sqlx::PgPool;
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
    pub(crate) rescued: i64,
    pub(crate) cancel: Vec<Uuid>,
}

/// Heartbeat + rescue in one statement. `worker_id = None` rescues only (the maintenance job).
pub(crate) async fn beat(
    pool: &PgPool,
    worker_id: Option<Uuid>,
    hostname: &str,
    queues: &[String],
    rescue_after: Duration,
) -> Result<Beat, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let row = sqlx::query!(
        r#"
        WITH hb AS (
            INSERT INTO job_workers (id, hostname, pid, queues)
            SELECT $1, $2, $3, $4 WHERE $1::uuid IS NOT NULL
            ON CONFLICT (id) DO UPDATE SET heartbeat_at = now()
            RETURNING (xmax = 0) AS recreated
        ), dead AS (
            DELETE FROM job_workers
            WHERE heartbeat_at < now() - make_interval(secs => $5)
              AND id IS DISTINCT FROM $1
            RETURNING id
        ), rescued AS (
            UPDATE jobs j SET
                state = CASE WHEN j.cancel_requested_at IS NOT NULL THEN 'cancelled'
                             WHEN j.attempt >= j.max_attempts THEN 'discarded'
                             ELSE 'retryable' END,
                finalized_at = CASE WHEN j.cancel_requested_at IS NOT NULL OR j.attempt >= j.max_attempts
                                    THEN now() END,
                run_at = now(),
                worker_id = NULL,
                errors = j.errors || jsonb_build_array(jsonb_build_object(
                    'attempt', j.attempt, 'at', now(), 'kind', 'rescued',
                    'error', 'the worker running this attempt stopped heartbeating'))
            WHERE j.state = 'running'
              AND j.worker_id IS DISTINCT FROM $1
              AND (j.worker_id IN (SELECT id FROM dead)
                   OR NOT EXISTS (SELECT 1 FROM job_workers w WHERE w.id = j.worker_id))
            RETURNING j.id, j.state
        )
        SELECT coalesce((SELECT recreated FROM hb), false) AS "lost!",
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
        rescued: row.rescued,
        cancel: row.cancel,
    })
}

pub(crate) async fn run(shared: Arc<Shared>, hostname: String, stop: CancellationToken) {
    let config = &shared.config;
    let queues: Vec<String> = config.queues.iter().map(|(q, _)| q.clone()).collect();
    // Stop our own jobs this long after the last heartbeat that reached Postgres: strictly
    // before any other worker may consider us dead.
    let fence_after = config
        .rescue_after
        .saturating_sub(config.heartbeat_interval)
        .max(config.heartbeat_interval / 2);
    let mut last_ok = Instant::now();
    let mut fenced = false;
    let mut interval = tokio::time::interval(config.heartbeat_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        let sent = Instant::now();
        let beat = tokio::time::timeout(
            config.heartbeat_interval,
            beat(
                &shared.pool,
                Some(shared.worker_id),
                &hostname,
                &queues,
                config.rescue_after,
            ),
        )
        .await;
        match beat {
            Ok(Ok(beat)) => {
                last_ok = sent;
                fenced = false;
                if beat.lost {
                    let stopped = shared.stop_jobs(None, StopReason::LeaseLost);
                    tracing::error!(
                        jobs = stopped,
                        "this worker was presumed dead; its running jobs were rescued elsewhere"
                    );
                }
                if beat.rescued > 0 {
                    tracing::warn!(
                        jobs = beat.rescued,
                        "rescued the running jobs of dead workers"
                    );
                    metrics::counter!("zoark_jobs_rescued_total")
                        .increment(u64::try_from(beat.rescued).unwrap_or(0));
                }
                if !beat.cancel.is_empty() {
                    shared.stop_jobs(Some(&beat.cancel), StopReason::Cancelled);
                }
            }
            Ok(Err(error)) => tracing::warn!(%error, "heartbeat failed"),
            Err(_) => tracing::warn!("heartbeat timed out"),
        }
        if !fenced && last_ok.elapsed() >= fence_after {
            fenced = true;
            let stopped = shared.stop_jobs(None, StopReason::LeaseLost);
            tracing::error!(
                jobs = stopped,
                "no heartbeat reached Postgres in time: stopping this worker's jobs before they are rescued"
            );
        }
    }
}
