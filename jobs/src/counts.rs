//! Job counts and throughput from the tallies the `jobs` statement trigger appends
//! (`migrations/20261208000100_job_counts.sql`), never from counting `jobs`: [`fold`] moves the
//! tallies into `job_counts` and `job_throughput` (a worker does it every second), [`by_queue`]
//! reads the counts (adding the tallies not folded yet, so they are exact), [`throughput`] the
//! per-minute or per-hour series.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::JobState;

/// The advisory lock that lets one worker fold at a time (the others skip that second).
const FOLD_LOCK: i64 = 0x007a_6f61_726b_0001;

/// Minute buckets are kept this long, hour buckets [`HOURS_KEPT`].
pub const MINUTES_KEPT: chrono::TimeDelta = chrono::TimeDelta::hours(2);
pub const HOURS_KEPT: chrono::TimeDelta = chrono::TimeDelta::days(8);

/// Folds the pending tallies, unless another worker is folding. Returns how many tallies it
/// moved, `None` when another worker held the lock. With `prune`, also deletes buckets older
/// than they are kept and counts that reached zero.
///
/// # Errors
/// A database error (nothing is moved then).
pub async fn fold(conn: &mut PgConnection, prune: bool) -> Result<Option<i64>, sqlx::Error> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let locked = sqlx::query_scalar!(
        r#"SELECT pg_try_advisory_xact_lock($1) AS "locked!""#,
        FOLD_LOCK
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(None);
    }
    let moved = sqlx::query_scalar!(
        r#"
        WITH moved AS (
            DELETE FROM job_tallies RETURNING organization_id, queue, state, n, entered, at
        ), counted AS (
            INSERT INTO job_counts (organization_id, queue, state, n)
            SELECT organization_id, queue, state, sum(n) FROM moved
            GROUP BY organization_id, queue, state
            ON CONFLICT (organization_id, queue, state) DO UPDATE SET n = job_counts.n + excluded.n
        ), entered AS (
            SELECT organization_id, queue, state, entered, at FROM moved
            WHERE entered > 0 AND state IN ('completed', 'retryable', 'discarded', 'cancelled')
        ), bucketed AS (
            INSERT INTO job_throughput (width, bucket, organization_id, queue, state, n)
            SELECT w.width, date_trunc(w.width, e.at), e.organization_id, e.queue, e.state, sum(e.entered)
            FROM entered e CROSS JOIN (VALUES ('minute'), ('hour')) w (width)
            GROUP BY w.width, date_trunc(w.width, e.at), e.organization_id, e.queue, e.state
            ON CONFLICT (width, bucket, organization_id, queue, state)
                DO UPDATE SET n = job_throughput.n + excluded.n
        )
        SELECT count(*) AS "moved!" FROM moved
        "#,
    )
    .fetch_one(&mut *tx)
    .await?;
    if prune {
        sqlx::query!(
            "DELETE FROM job_throughput
             WHERE (width = 'minute' AND bucket < now() - $1::interval)
                OR (width = 'hour' AND bucket < now() - $2::interval)",
            pg_interval(MINUTES_KEPT),
            pg_interval(HOURS_KEPT),
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query!("DELETE FROM job_counts WHERE n = 0")
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(Some(moved))
}

fn pg_interval(d: chrono::TimeDelta) -> sqlx::postgres::types::PgInterval {
    sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: d.num_microseconds().unwrap_or(i64::MAX),
    }
}

/// Jobs of one queue in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub scheduled: i64,
    pub available: i64,
    pub running: i64,
    pub retryable: i64,
    pub completed: i64,
    pub discarded: i64,
    pub cancelled: i64,
}

impl StateCounts {
    fn slot(&mut self, state: JobState) -> &mut i64 {
        match state {
            JobState::Scheduled => &mut self.scheduled,
            JobState::Available => &mut self.available,
            JobState::Running => &mut self.running,
            JobState::Retryable => &mut self.retryable,
            JobState::Completed => &mut self.completed,
            JobState::Discarded => &mut self.discarded,
            JobState::Cancelled => &mut self.cancelled,
        }
    }

    /// Jobs not finished yet.
    pub fn unfinished(&self) -> i64 {
        self.scheduled + self.available + self.running + self.retryable
    }
}

/// Per queue (sorted by name), the jobs of one organization, or of the whole installation
/// (`None`) in each state. Queues without jobs are left out.
///
/// # Errors
/// A database error.
pub async fn by_queue(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
) -> Result<Vec<(String, StateCounts)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT queue AS "queue!", state AS "state!", sum(n)::bigint AS "n!"
        FROM (SELECT queue, state, n FROM job_counts WHERE $1::uuid IS NULL OR organization_id = $1
              UNION ALL
              SELECT queue, state, n FROM job_tallies WHERE $1::uuid IS NULL OR organization_id = $1) c
        GROUP BY queue, state
        HAVING sum(n) <> 0
        ORDER BY queue
        "#,
        organization_id,
    )
    .fetch_all(conn)
    .await?;
    let mut queues: Vec<(String, StateCounts)> = Vec::new();
    for row in rows {
        let Ok(state) = row.state.parse::<JobState>() else {
            continue;
        };
        if queues.last().is_none_or(|(queue, _)| *queue != row.queue) {
            queues.push((row.queue.clone(), StateCounts::default()));
        }
        if let Some((_, counts)) = queues.last_mut() {
            *counts.slot(state) = row.n;
        }
    }
    Ok(queues)
}

/// A bucket's width in [`throughput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Width {
    Minute,
    Hour,
}

impl Width {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
        }
    }

    pub fn delta(self) -> chrono::TimeDelta {
        match self {
            Self::Minute => chrono::TimeDelta::minutes(1),
            Self::Hour => chrono::TimeDelta::hours(1),
        }
    }
}

/// Jobs that finished or failed in one bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub completed: i64,
    /// Attempts that failed and will be retried.
    pub retryable: i64,
    pub discarded: i64,
    pub cancelled: i64,
}

/// The last `count` buckets of `width` up to now (the current, partial one last; empty buckets
/// included), of one organization or the installation, optionally of one queue; exact, like
/// [`by_queue`] (the tallies not folded yet are added).
///
/// # Errors
/// A database error.
pub async fn throughput(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
    queue: Option<&str>,
    width: Width,
    count: u32,
) -> Result<Vec<Bucket>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        WITH now AS (SELECT date_trunc($3, now()) AS bucket),
        pending AS (
            SELECT date_trunc($3, at) AS bucket, organization_id, queue, state, entered AS n
            FROM job_tallies
            WHERE entered > 0 AND state IN ('completed', 'retryable', 'discarded', 'cancelled')
        )
        SELECT t.bucket AS "bucket!", t.state AS "state!", sum(t.n)::bigint AS "n!",
               (SELECT bucket FROM now) AS "current!"
        FROM (SELECT bucket, organization_id, queue, state, n FROM job_throughput WHERE width = $3
              UNION ALL
              SELECT bucket, organization_id, queue, state, n FROM pending) t
        WHERE t.bucket > (SELECT bucket FROM now) - $4::int * ('1 ' || $3)::interval
          AND ($1::uuid IS NULL OR t.organization_id = $1)
          AND ($2::text IS NULL OR t.queue = $2)
        GROUP BY t.bucket, t.state
        "#,
        organization_id,
        queue,
        width.as_str(),
        i32::try_from(count).unwrap_or(i32::MAX),
    )
    .fetch_all(&mut *conn)
    .await?;
    let current = match rows.first() {
        Some(row) => row.current,
        None => current_bucket(conn, width).await?,
    };
    let mut buckets: Vec<Bucket> = (0..count)
        .rev()
        .map(|back| Bucket {
            start: current - width.delta() * i32::try_from(back).unwrap_or(0),
            ..Bucket::default()
        })
        .collect();
    for row in rows {
        let Some(bucket) = buckets.iter_mut().find(|b| b.start == row.bucket) else {
            continue;
        };
        match row.state.parse::<JobState>() {
            Ok(JobState::Completed) => bucket.completed += row.n,
            Ok(JobState::Retryable) => bucket.retryable += row.n,
            Ok(JobState::Discarded) => bucket.discarded += row.n,
            Ok(JobState::Cancelled) => bucket.cancelled += row.n,
            _ => {}
        }
    }
    Ok(buckets)
}

async fn current_bucket(
    conn: &mut PgConnection,
    width: Width,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT date_trunc($1, now()) AS "bucket!""#,
        width.as_str()
    )
    .fetch_one(conn)
    .await
}
