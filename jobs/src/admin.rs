//! The queries behind the jobs API and the dashboard: list, inspect, cancel, retry, queue
//! statistics. Every function takes the tenant and never returns another tenant's job.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::JobState;

/// One job as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRecord {
    pub id: Uuid,
    pub organization_id: Option<Uuid>,
    pub kind: String,
    pub queue: String,
    pub state: String,
    pub args: serde_json::Value,
    pub priority: i16,
    pub attempt: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub unique_key: Option<String>,
    pub errors: serde_json::Value,
    pub attempted_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub finalized_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Filters of `GET /api/v1/jobs`; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Jobs older than this id (ids are UUIDv7, so time-ordered): the page cursor.
    pub before_id: Option<Uuid>,
    /// Jobs whose args hold this string as a value, at any depth (an email address, an id).
    pub args_value: Option<String>,
}

/// Whose jobs a query sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One organization's: a tenant's view (and an operator's look at one organization).
    Organization(Uuid),
    /// The platform's own jobs, of no organization (backups, pruning, rescue): operators only.
    Platform,
    /// Every job of the installation: operators only.
    Installation,
}

impl Scope {
    fn organization_id(self) -> Option<Uuid> {
        match self {
            Self::Organization(id) => Some(id),
            Self::Platform | Self::Installation => None,
        }
    }

    fn platform_only(self) -> bool {
        self == Self::Platform
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no such job")]
    NotFound,
    #[error("a {0} job cannot be {1}")]
    WrongState(String, &'static str),
    #[error("an unfinished job already holds this job's unique key")]
    UniqueKeyHeld,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A page of the scope's jobs, newest first.
///
/// # Errors
/// A database error.
pub async fn list(
    conn: &mut PgConnection,
    scope: Scope,
    filter: &JobFilter,
    limit: i64,
) -> Result<Vec<JobRecord>, sqlx::Error> {
    Ok(list_within(conn, scope, filter, limit, None).await?.jobs)
}

/// A page of [`list_within`].
#[derive(Debug)]
pub struct Listed {
    pub jobs: Vec<JobRecord>,
    /// The oldest job examined, when the args search stopped at its limit before the page was
    /// full: the cursor from which to search on.
    pub searched_to: Option<Uuid>,
}

/// Like [`list`], but an args search (`filter.args_value`) examines at most `search_limit` of
/// the newest jobs the other filters match (after the cursor), so that a page answers in
/// bounded time at any table size; [`Listed::searched_to`] says where it stopped.
///
/// # Errors
/// A database error.
pub async fn list_within(
    conn: &mut PgConnection,
    scope: Scope,
    filter: &JobFilter,
    limit: i64,
    search_limit: Option<i64>,
) -> Result<Listed, sqlx::Error> {
    let search_limit = filter.args_value.as_ref().and(search_limit);
    let rows = sqlx::query!(
        r#"
        SELECT id AS "id!", organization_id, kind AS "kind!", queue AS "queue!", state AS "state!",
               args AS "args!", priority AS "priority!", attempt AS "attempt!",
               max_attempts AS "max_attempts!", run_at AS "run_at!", unique_key, errors AS "errors!",
               attempted_at, cancel_requested_at, finalized_at, created_at AS "created_at!",
               hit AS "hit!", seen AS "seen!"
        FROM (
            SELECT id, organization_id, kind, queue, state, args, priority, attempt, max_attempts,
                   run_at, unique_key, errors, attempted_at, cancel_requested_at, finalized_at,
                   created_at, row_number() OVER (ORDER BY id DESC) AS seen,
                   ($9::text IS NULL
                    OR jsonb_path_exists(args, '$.** ? (@ == $v)', jsonb_build_object('v', $9::text))) AS hit
            FROM jobs
            WHERE ($1::uuid IS NULL OR organization_id = $1)
              AND (NOT $10::bool OR organization_id IS NULL)
              AND ($2::text IS NULL OR state = $2)
              AND ($3::text IS NULL OR kind = $3)
              AND ($4::text IS NULL OR queue = $4)
              AND ($5::timestamptz IS NULL OR created_at >= $5)
              AND ($6::timestamptz IS NULL OR created_at < $6)
              AND ($7::uuid IS NULL OR id < $7)
            ORDER BY id DESC
            LIMIT $12
        ) examined
        -- The last job examined comes back even when it does not match: where the search stopped.
        WHERE hit OR seen = $11
        ORDER BY id DESC
        LIMIT $8::bigint + 1
        "#,
        scope.organization_id(),
        filter.state.map(JobState::as_str),
        filter.kind.as_deref(),
        filter.queue.as_deref(),
        filter.created_after,
        filter.created_before,
        filter.before_id,
        limit,
        filter.args_value.as_deref(),
        scope.platform_only(),
        search_limit,
        // Without a search, a page's worth: the planner then reads the newest rows in order
        // instead of sorting every match (125 ms at a million jobs).
        match filter.args_value {
            None => Some(limit + 1),
            Some(_) => search_limit,
        },
    )
    .fetch_all(conn)
    .await?;
    let searched_to = rows
        .iter()
        .find(|r| Some(r.seen) == search_limit)
        .map(|r| r.id);
    let jobs = rows
        .into_iter()
        .filter(|r| r.hit)
        .take(usize::try_from(limit).unwrap_or(0))
        .map(|r| JobRecord {
            id: r.id,
            organization_id: r.organization_id,
            kind: r.kind,
            queue: r.queue,
            state: r.state,
            args: r.args,
            priority: r.priority,
            attempt: r.attempt,
            max_attempts: r.max_attempts,
            run_at: r.run_at,
            unique_key: r.unique_key,
            errors: r.errors,
            attempted_at: r.attempted_at,
            cancel_requested_at: r.cancel_requested_at,
            finalized_at: r.finalized_at,
            created_at: r.created_at,
        })
        .collect();
    Ok(Listed { jobs, searched_to })
}

/// One job of the scope.
///
/// # Errors
/// [`AdminError::NotFound`] when it is not in the scope (or does not exist).
pub async fn get(conn: &mut PgConnection, scope: Scope, id: Uuid) -> Result<JobRecord, AdminError> {
    sqlx::query_as!(
        JobRecord,
        r#"
        SELECT id, organization_id, kind, queue, state, args, priority, attempt, max_attempts,
               run_at, unique_key, errors, attempted_at, cancel_requested_at, finalized_at, created_at
        FROM jobs
        WHERE id = $2 AND ($1::uuid IS NULL OR organization_id = $1)
          AND (NOT $3::bool OR organization_id IS NULL)
        "#,
        scope.organization_id(),
        id,
        scope.platform_only(),
    )
    .fetch_optional(conn)
    .await?
    .ok_or(AdminError::NotFound)
}

/// Cancels the given jobs of an organization that have not started (a running one finishes its
/// attempt). Returns how many were cancelled.
///
/// # Errors
/// Database errors.
pub async fn cancel_waiting(
    conn: &mut PgConnection,
    organization_id: Uuid,
    ids: &[Uuid],
) -> Result<u64, sqlx::Error> {
    sqlx::query!(
        r#"
        UPDATE jobs SET state = 'cancelled', finalized_at = now(), cancel_requested_at = now()
        WHERE organization_id = $1 AND id = ANY($2) AND state IN ('scheduled', 'available', 'retryable')
        "#,
        organization_id,
        ids,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// Cancels a job: a job that has not started is `cancelled` at once; a running one is asked to
/// stop (its worker hears `zoark_job_cancel`, or sees the request at its next heartbeat) and
/// ends `cancelled` when it does.
///
/// # Errors
/// [`AdminError::WrongState`] for a finished job.
pub async fn cancel(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
    id: Uuid,
) -> Result<JobRecord, AdminError> {
    let row = sqlx::query_as!(
        JobRecord,
        r#"
        UPDATE jobs SET
            state = CASE WHEN state = 'running' THEN 'running' ELSE 'cancelled' END,
            finalized_at = CASE WHEN state = 'running' THEN NULL ELSE now() END,
            cancel_requested_at = coalesce(cancel_requested_at, now())
        WHERE organization_id IS NOT DISTINCT FROM $1 AND id = $2
          AND state IN ('scheduled', 'available', 'retryable', 'running')
        RETURNING id, organization_id, kind, queue, state, args, priority, attempt, max_attempts,
                  run_at, unique_key, errors, attempted_at, cancel_requested_at, finalized_at, created_at
        "#,
        organization_id,
        id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(job) => {
            if job.state == "running" {
                sqlx::query!("SELECT pg_notify('zoark_job_cancel', $1)", id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            Ok(job)
        }
        None => Err(wrong_state(conn, organization_id, id, "cancelled").await),
    }
}

/// Makes a job that is not running or waiting to run available now, with one more attempt if
/// it had used them all.
///
/// # Errors
/// [`AdminError::WrongState`] for a running or available job; [`AdminError::UniqueKeyHeld`] when
/// another unfinished job holds its unique key.
pub async fn retry(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
    id: Uuid,
) -> Result<JobRecord, AdminError> {
    let row = sqlx::query_as!(
        JobRecord,
        r#"
        UPDATE jobs SET
            state = 'available', run_at = now(), finalized_at = NULL, cancel_requested_at = NULL,
            max_attempts = greatest(max_attempts, attempt + 1)
        WHERE organization_id IS NOT DISTINCT FROM $1 AND id = $2
          AND state IN ('discarded', 'cancelled', 'completed', 'retryable', 'scheduled')
        RETURNING id, organization_id, kind, queue, state, args, priority, attempt, max_attempts,
                  run_at, unique_key, errors, attempted_at, cancel_requested_at, finalized_at, created_at
        "#,
        organization_id,
        id,
    )
    .fetch_optional(&mut *conn)
    .await;
    match row {
        Ok(Some(job)) => Ok(job),
        Ok(None) => Err(wrong_state(conn, organization_id, id, "retried").await),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => Err(AdminError::UniqueKeyHeld),
        Err(e) => Err(e.into()),
    }
}

/// The jobs a bulk action takes: the organization's jobs matching `filter` (its cursor is
/// ignored), and among them only `ids` when given.
#[derive(Debug, Clone, Copy)]
pub struct Selection<'a> {
    pub filter: &'a JobFilter,
    pub ids: Option<&'a [Uuid]>,
}

/// What a bulk action did (or, rolled back, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bulk {
    /// Jobs changed.
    pub changed: i64,
    /// Jobs taken up but left as they were (a retry whose unique key another unfinished job
    /// holds).
    pub skipped: i64,
    /// More jobs match than one request takes (`limit`): repeat it.
    pub more: bool,
}

/// The ids of the selected jobs in `states` (a running job only until a cancel is asked for),
/// at most `limit` + 1 of them (the one more tells whether more remain), oldest first and
/// locked; rows another transaction holds are left for a later request.
async fn pick(
    conn: &mut PgConnection,
    organization_id: Uuid,
    selection: Selection<'_>,
    states: &[&str],
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let f = selection.filter;
    let states: Vec<String> = states.iter().map(|s| (*s).to_owned()).collect();
    sqlx::query_scalar!(
        r#"
        SELECT id FROM jobs
        WHERE organization_id = $1
          AND state = ANY($9) AND NOT (state = 'running' AND cancel_requested_at IS NOT NULL)
          AND ($2::text IS NULL OR state = $2)
          AND ($3::text IS NULL OR kind = $3)
          AND ($4::text IS NULL OR queue = $4)
          AND ($5::timestamptz IS NULL OR created_at >= $5)
          AND ($6::timestamptz IS NULL OR created_at < $6)
          AND ($7::uuid[] IS NULL OR id = ANY($7))
          AND ($10::text IS NULL
               OR jsonb_path_exists(args, '$.** ? (@ == $v)', jsonb_build_object('v', $10::text)))
        ORDER BY id
        LIMIT $8::bigint + 1
        FOR UPDATE SKIP LOCKED
        "#,
        organization_id,
        f.state.map(JobState::as_str),
        f.kind.as_deref(),
        f.queue.as_deref(),
        f.created_after,
        f.created_before,
        selection.ids,
        limit,
        &states,
        f.args_value.as_deref(),
    )
    .fetch_all(conn)
    .await
}

/// [`pick`]'s ids cut to `limit`, and whether more remain.
fn cut(mut ids: Vec<Uuid>, limit: i64) -> (Vec<Uuid>, bool) {
    let limit = usize::try_from(limit).unwrap_or(0);
    let more = ids.len() > limit;
    ids.truncate(limit);
    (ids, more)
}

/// Retries, like [`retry`], at most `limit` of the selected jobs, oldest first; a job whose
/// unique key another unfinished job holds (or another job of the selection retried here) is
/// skipped. Jobs locked by another transaction are left for the next request.
///
/// # Errors
/// Database errors.
pub async fn bulk_retry(
    conn: &mut PgConnection,
    organization_id: Uuid,
    selection: Selection<'_>,
    limit: i64,
) -> Result<Bulk, sqlx::Error> {
    let states = [
        "discarded",
        "cancelled",
        "completed",
        "retryable",
        "scheduled",
    ];
    let picked = pick(conn, organization_id, selection, &states, limit).await?;
    let (ids, more) = cut(picked, limit);
    let changed = sqlx::query_scalar!(
        r#"
        WITH taken AS (
            SELECT id, kind, unique_key FROM jobs WHERE organization_id = $1 AND id = ANY($2)
        ), eligible AS (
            SELECT DISTINCT ON (t.kind, coalesce(t.unique_key, t.id::text)) t.id
            FROM taken t
            WHERE t.unique_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM jobs o
                WHERE o.organization_id = $1 AND o.kind = t.kind AND o.unique_key = t.unique_key
                  AND o.state IN ('scheduled', 'available', 'running', 'retryable')
                  AND o.id <> t.id)
            ORDER BY t.kind, coalesce(t.unique_key, t.id::text), t.id DESC
        ), retried AS (
            UPDATE jobs j SET
                state = 'available', run_at = now(), finalized_at = NULL,
                cancel_requested_at = NULL, max_attempts = greatest(max_attempts, attempt + 1)
            FROM eligible e
            WHERE j.id = e.id
            RETURNING j.id
        )
        SELECT count(*) AS "changed!" FROM retried
        "#,
        organization_id,
        &ids,
    )
    .fetch_one(conn)
    .await?;
    Ok(Bulk {
        changed,
        skipped: i64::try_from(ids.len()).unwrap_or(i64::MAX) - changed,
        more,
    })
}

/// Cancels, like [`cancel`], at most `limit` of the selected unfinished jobs, oldest first:
/// waiting ones at once, running ones asked to stop (one already asked is not taken again).
///
/// # Errors
/// Database errors.
pub async fn bulk_cancel(
    conn: &mut PgConnection,
    organization_id: Uuid,
    selection: Selection<'_>,
    limit: i64,
) -> Result<Bulk, sqlx::Error> {
    let states = ["scheduled", "available", "retryable", "running"];
    let picked = pick(conn, organization_id, selection, &states, limit).await?;
    let (ids, more) = cut(picked, limit);
    let row = sqlx::query!(
        r#"
        WITH cancelled AS (
            UPDATE jobs SET
                state = CASE WHEN state = 'running' THEN 'running' ELSE 'cancelled' END,
                finalized_at = CASE WHEN state = 'running' THEN NULL ELSE now() END,
                cancel_requested_at = coalesce(cancel_requested_at, now())
            WHERE organization_id = $1 AND id = ANY($2)
            RETURNING id, state
        ), stopping AS (
            SELECT pg_notify('zoark_job_cancel', id::text) FROM cancelled WHERE state = 'running'
        )
        SELECT (SELECT count(*) FROM cancelled) AS "changed!",
               (SELECT count(*) FROM stopping) AS "stopping!"
        "#,
        organization_id,
        &ids,
    )
    .fetch_one(conn)
    .await?;
    // `stopping` is read above so that its notifications are sent (a CTE runs when read).
    Ok(Bulk {
        changed: row.changed,
        skipped: 0,
        more,
    })
}

async fn wrong_state(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
    id: Uuid,
    action: &'static str,
) -> AdminError {
    let state = sqlx::query_scalar!(
        "SELECT state FROM jobs WHERE organization_id IS NOT DISTINCT FROM $1 AND id = $2",
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await;
    match state {
        Ok(Some(state)) => AdminError::WrongState(state, action),
        Ok(None) => AdminError::NotFound,
        Err(e) => e.into(),
    }
}

/// Per-queue counts of a tenant's unfinished and finished jobs.
#[derive(Debug, Clone, Serialize)]
pub struct QueueStats {
    pub queue: String,
    pub scheduled: i64,
    pub available: i64,
    pub running: i64,
    pub retryable: i64,
    pub completed: i64,
    pub discarded: i64,
    pub cancelled: i64,
    /// Seconds the oldest due, unclaimed job has waited; `None` when none waits.
    pub oldest_available_age_secs: Option<f64>,
}

impl QueueStats {
    /// A queue without jobs (e.g. one paused before any job arrived).
    pub fn empty(queue: String) -> Self {
        Self {
            queue,
            scheduled: 0,
            available: 0,
            running: 0,
            retryable: 0,
            completed: 0,
            discarded: 0,
            cancelled: 0,
            oldest_available_age_secs: None,
        }
    }
}

/// Queue statistics for one tenant, or for the whole installation when `organization_id` is
/// `None`: the counts the engine maintains ([`crate::counts`]), not a count of `jobs`, and the
/// age of the oldest due job from the claim indexes (one probe per queue and priority).
/// `scheduled` counts jobs in that state, due or not (workers promote due ones as they come due).
///
/// # Errors
/// A database error.
pub async fn queues(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
) -> Result<Vec<QueueStats>, sqlx::Error> {
    let counts = crate::counts::by_queue(&mut *conn, organization_id).await?;
    let waiting: Vec<String> = counts
        .iter()
        .filter(|(_, c)| c.available + c.scheduled + c.retryable > 0)
        .map(|(queue, _)| queue.clone())
        .collect();
    let ages = sqlx::query!(
        r#"
        SELECT q.queue AS "queue!",
               extract(epoch FROM now() - least(
                   CASE WHEN $2::uuid IS NULL
                   -- The installation: every due job of the queue, from the claim index alone.
                   THEN (SELECT min(run_at) FROM jobs WHERE queue = q.queue AND state = 'available')
                   -- One tenant: its oldest due job of each priority, one probe each.
                   ELSE (SELECT min(a.run_at) FROM generate_series(0, 9) p, LATERAL (
                            SELECT run_at FROM jobs
                            WHERE queue = q.queue AND state = 'available'
                              AND coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid) = $2
                              AND priority = p
                            ORDER BY run_at LIMIT 1) a)
                   END,
                   (SELECT min(run_at) FROM jobs
                    WHERE queue = q.queue AND state IN ('scheduled', 'retryable') AND run_at <= now()
                      AND ($2::uuid IS NULL OR organization_id = $2))))::float8
                   AS oldest_available_age_secs
        FROM unnest($1::text[]) q (queue)
        "#,
        &waiting,
        organization_id,
    )
    .fetch_all(conn)
    .await?;
    Ok(counts
        .into_iter()
        .map(|(queue, c)| QueueStats {
            oldest_available_age_secs: ages
                .iter()
                .find(|a| a.queue == queue)
                .and_then(|a| a.oldest_available_age_secs),
            queue,
            scheduled: c.scheduled,
            available: c.available,
            running: c.running,
            retryable: c.retryable,
            completed: c.completed,
            discarded: c.discarded,
            cancelled: c.cancelled,
        })
        .collect())
}

/// A queue's name as the `jobs` table allows it: `[a-z][a-z0-9_-]*`, at most 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueName(String);

impl QueueName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for QueueName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a string is not a queue name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("a queue name is 1 to 64 characters of a-z, 0-9, `_` and `-`, starting with a letter")]
pub struct InvalidQueueName;

impl std::str::FromStr for QueueName {
    type Err = InvalidQueueName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut chars = s.chars();
        let starts = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest =
            chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if starts && rest && s.len() <= 64 {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidQueueName)
        }
    }
}

/// A queue paused for one organization, or for everyone (`organization_id` `None`).
#[derive(Debug, Clone, Serialize)]
pub struct QueuePause {
    pub queue: String,
    pub organization_id: Option<Uuid>,
    pub paused_by: Option<Uuid>,
    pub paused_at: DateTime<Utc>,
}

/// Pauses `queue` for `organization_id` (`None`: every organization and the platform): workers
/// claim none of the jobs it covers from now on; running ones finish. Pausing a paused queue
/// returns the pause already in place; the flag says whether this call paused it.
///
/// # Errors
/// A database error.
pub async fn pause_queue(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
    queue: &QueueName,
    paused_by: Option<Uuid>,
) -> Result<(QueuePause, bool), sqlx::Error> {
    let inserted = sqlx::query!(
        "INSERT INTO queue_pauses (queue, organization_id, paused_by) VALUES ($1, $2, $3)
         ON CONFLICT (queue, organization_id) DO NOTHING",
        queue.as_str(),
        organization_id,
        paused_by,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    let pause = sqlx::query_as!(
        QueuePause,
        r#"SELECT queue, organization_id, paused_by, paused_at FROM queue_pauses
           WHERE queue = $1 AND organization_id IS NOT DISTINCT FROM $2"#,
        queue.as_str(),
        organization_id,
    )
    .fetch_one(conn)
    .await?;
    Ok((pause, inserted))
}

/// Resumes `queue` for `organization_id` (`None`: the operator's pause of the whole queue) and
/// wakes its workers. False when it was not paused.
///
/// # Errors
/// A database error.
pub async fn resume_queue(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
    queue: &QueueName,
) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query!(
        "DELETE FROM queue_pauses WHERE queue = $1 AND organization_id IS NOT DISTINCT FROM $2",
        queue.as_str(),
        organization_id,
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// The pauses of `organization_id` (`Some`), or every pause (`None`, for operators).
///
/// # Errors
/// A database error.
pub async fn queue_pauses(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
) -> Result<Vec<QueuePause>, sqlx::Error> {
    sqlx::query_as!(
        QueuePause,
        r#"SELECT queue, organization_id, paused_by, paused_at FROM queue_pauses
           WHERE $1::uuid IS NULL OR organization_id = $1
           ORDER BY queue, organization_id NULLS FIRST"#,
        organization_id,
    )
    .fetch_all(conn)
    .await
}

/// [`queues`], each with whether it is paused for `organization_id` (`None`: paused for
/// everyone), sorted by name; a paused queue without jobs is listed too.
///
/// # Errors
/// A database error.
pub async fn queues_and_pauses(
    conn: &mut PgConnection,
    organization_id: Option<Uuid>,
) -> Result<Vec<(QueueStats, bool)>, sqlx::Error> {
    let mut rows: Vec<(QueueStats, bool)> = queues(&mut *conn, organization_id)
        .await?
        .into_iter()
        .map(|stats| (stats, false))
        .collect();
    let pauses = queue_pauses(conn, organization_id).await?;
    for pause in pauses
        .into_iter()
        .filter(|p| p.organization_id == organization_id)
    {
        match rows.iter_mut().find(|(q, _)| q.queue == pause.queue) {
            Some(row) => row.1 = true,
            None => rows.push((QueueStats::empty(pause.queue), true)),
        }
    }
    rows.sort_by(|a, b| a.0.queue.cmp(&b.0.queue));
    Ok(rows)
}

/// The unfinished jobs of every queue, for the workers' metrics: read through the claim, scheduled
/// and running-jobs indexes only, so its cost follows the backlog, not the history (finished jobs
/// kept for the jobs API do not weigh on it).
#[derive(Debug, Clone, Serialize)]
pub struct QueueBacklog {
    pub queue: String,
    pub scheduled: i64,
    pub available: i64,
    pub running: i64,
    pub retryable: i64,
    /// Seconds the oldest due, unclaimed job has waited; `None` when none waits.
    pub oldest_available_age_secs: Option<f64>,
}

/// See [`QueueBacklog`].
///
/// # Errors
/// A database error.
pub async fn backlog(conn: &mut PgConnection) -> Result<Vec<QueueBacklog>, sqlx::Error> {
    sqlx::query_as!(
        QueueBacklog,
        r#"
        SELECT queue AS "queue!",
               count(*) FILTER (WHERE state = 'scheduled' AND run_at > now()) AS "scheduled!",
               count(*) FILTER (WHERE state IN ('available', 'scheduled') AND run_at <= now()) AS "available!",
               count(*) FILTER (WHERE state = 'running') AS "running!",
               count(*) FILTER (WHERE state = 'retryable') AS "retryable!",
               extract(epoch FROM now() - min(run_at) FILTER (
                   WHERE state IN ('available', 'scheduled', 'retryable') AND run_at <= now()))::float8
                   AS oldest_available_age_secs
        FROM (SELECT queue, state, run_at FROM jobs WHERE state = 'available'
              UNION ALL
              SELECT queue, state, run_at FROM jobs WHERE state IN ('scheduled', 'retryable')
              UNION ALL
              SELECT queue, state, run_at FROM jobs WHERE state = 'running') j
        GROUP BY queue
        ORDER BY queue
        "#,
    )
    .fetch_all(conn)
    .await
}

/// Which finished jobs a prune may delete: of one kind or all, of one tenant (`Some(None)` is
/// the platform) or all.
#[derive(Debug, Clone, Copy, Default)]
pub struct PruneScope<'a> {
    pub kind: Option<&'a str>,
    pub tenant: Option<Option<Uuid>>,
}

/// Deletes up to `limit` jobs of `scope` that finished long enough ago: completed and cancelled
/// ones before `finished` ago, discarded ones before `discarded` ago. Returns how many; callers
/// repeat while a batch comes back full, so that no run holds long locks. The maintenance job
/// prunes every kind this way, and apalis's `Vacuum` one kind of one tenant.
///
/// # Errors
/// A database error.
pub async fn prune_finished(
    conn: &mut PgConnection,
    scope: PruneScope<'_>,
    finished: std::time::Duration,
    discarded: std::time::Duration,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let deleted = sqlx::query!(
        r#"
        DELETE FROM jobs WHERE id IN (
            SELECT id FROM jobs
            WHERE finalized_at IS NOT NULL
              AND ($1::text IS NULL OR kind = $1)
              AND (NOT $2::bool OR organization_id IS NOT DISTINCT FROM $3)
              AND ((state IN ('completed', 'cancelled') AND finalized_at < now() - make_interval(secs => $4))
                OR (state = 'discarded' AND finalized_at < now() - make_interval(secs => $5)))
            LIMIT $6
        )
        "#,
        scope.kind,
        scope.tenant.is_some(),
        scope.tenant.flatten(),
        finished.as_secs_f64(),
        discarded.as_secs_f64(),
        limit,
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_what_the_jobs_table_allows() {
        for good in ["email", "a", "web-hooks_2", &"q".repeat(64)] {
            assert!(good.parse::<QueueName>().is_ok(), "{good}");
        }
        for bad in ["", "Email", "1st", "-x", "a b", "a.b", &"q".repeat(65)] {
            assert!(bad.parse::<QueueName>().is_err(), "{bad}");
        }
    }
}

/// A live worker process as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    pub id: Uuid,
    pub hostname: String,
    pub pid: i32,
    pub queues: Vec<String>,
    pub started_at: DateTime<Utc>,
    /// Seconds since its last heartbeat.
    pub heartbeat_age_secs: f64,
    /// Jobs it is running now.
    pub running: i64,
}

/// The workers that have registered (and not yet been reaped), oldest first, with their load.
///
/// # Errors
/// A database error.
pub async fn workers(conn: &mut PgConnection) -> Result<Vec<WorkerInfo>, sqlx::Error> {
    sqlx::query_as!(
        WorkerInfo,
        r#"
        SELECT w.id, w.hostname, w.pid, w.queues, w.started_at,
               extract(epoch FROM now() - w.heartbeat_at)::float8 AS "heartbeat_age_secs!",
               (SELECT count(*) FROM jobs j WHERE j.state = 'running' AND j.worker_id = w.id)
                   AS "running!"
        FROM job_workers w
        ORDER BY w.started_at, w.id
        "#,
    )
    .fetch_all(conn)
    .await
}
