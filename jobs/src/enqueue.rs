//! Enqueue inside the caller's transaction: one `INSERT … SELECT unnest(…)` per chunk, unique
//! jobs resolved with `ON CONFLICT DO NOTHING` against the partial unique index, so a duplicate
//! returns the unfinished job that holds the key instead of failing the batch.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Job, JobState};

/// Fewer plain jobs than this go through the INSERT statement rather than COPY.
const COPY_MIN: usize = 64;

/// Rows per INSERT statement: large enough to amortise the round trip, small enough to keep
/// the statement's memory modest.
const CHUNK: usize = 5_000;

/// A job's priority: 0 runs first, 9 last (Oban's convention); the default is 0.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Priority(u8);

impl Priority {
    pub const HIGHEST: Self = Self(0);
    pub const LOWEST: Self = Self(9);

    /// # Errors
    /// When `value` is above 9.
    pub fn new(value: u8) -> Result<Self, EnqueueError> {
        if value <= 9 {
            Ok(Self(value))
        } else {
            Err(EnqueueError::Priority(value))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

/// Per-enqueue options; the contract supplies the rest.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// The tenant the job belongs to; `None` only for platform jobs.
    pub organization_id: Option<Uuid>,
    /// Not before this instant (a future `run_at` makes the job `scheduled`).
    pub run_at: Option<DateTime<Utc>>,
    pub priority: Priority,
    /// Overrides [`Job::unique_key`].
    pub unique_key: Option<String>,
    /// Overrides [`Job::MAX_ATTEMPTS`].
    pub max_attempts: Option<i32>,
    /// Overrides [`Job::TIMEOUT`] for this job (1 ms to 7 days); the worker caps it by
    /// `ZOARK_JOBS_MAX_TIMEOUT_SECS`.
    pub timeout: Option<std::time::Duration>,
}

impl Opts {
    /// A tenant's job.
    pub fn organization(organization_id: Uuid) -> Self {
        Self {
            organization_id: Some(organization_id),
            ..Self::default()
        }
    }

    /// A platform job (maintenance, backups): no tenant.
    pub fn platform() -> Self {
        Self::default()
    }

    #[must_use]
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    #[must_use]
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    #[must_use]
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    #[must_use]
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    #[must_use]
    pub fn timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The longest timeout a job may carry (the worker's cap is usually lower).
const MAX_TIMEOUT_MS: u128 = 7 * 24 * 3600 * 1000;

/// A job ready to insert, its contract already applied.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: &'static str,
    pub queue: &'static str,
    pub args: serde_json::Value,
    pub max_attempts: i32,
    pub opts: Opts,
}

impl NewJob {
    /// # Errors
    /// When the payload does not serialize, or the options are out of range.
    pub fn new<J: Job>(job: &J, mut opts: Opts) -> Result<Self, EnqueueError> {
        if opts.unique_key.is_none() {
            opts.unique_key = job.unique_key();
        }
        let max_attempts = opts.max_attempts.unwrap_or(J::MAX_ATTEMPTS);
        if !(1..=1000).contains(&max_attempts) {
            return Err(EnqueueError::MaxAttempts(max_attempts));
        }
        if let Some(key) = &opts.unique_key
            && !(1..=500).contains(&key.len())
        {
            return Err(EnqueueError::UniqueKey);
        }
        if let Some(timeout) = opts.timeout
            && !(1..=MAX_TIMEOUT_MS).contains(&timeout.as_millis())
        {
            return Err(EnqueueError::Timeout(timeout));
        }
        Ok(Self {
            kind: J::NAME,
            queue: J::QUEUE,
            args: serde_json::to_value(job).map_err(EnqueueError::Payload)?,
            max_attempts,
            opts,
        })
    }
}

/// The job a call produced: a new one, or the unfinished one already holding the unique key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: Uuid,
    pub state: JobState,
    /// True when the unique key was held and `id` is the existing job.
    pub duplicate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    #[error("the job payload does not serialize: {0}")]
    Payload(serde_json::Error),
    #[error("priority {0} is out of range (0 runs first, 9 last)")]
    Priority(u8),
    #[error("max attempts {0} is out of range (1 to 1000)")]
    MaxAttempts(i32),
    #[error("a unique key is 1 to 500 bytes")]
    UniqueKey,
    #[error("a job timeout of {0:?} is out of range (1 ms to 7 days)")]
    Timeout(std::time::Duration),
    #[error("encoding jobs for COPY: {0}")]
    Encode(String),
    #[error("the unique key kept changing hands while enqueueing")]
    Contended,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Enqueues one job in the caller's transaction (or connection).
///
/// # Errors
/// A payload that does not serialize, options out of range, or a database error.
pub async fn enqueue<J: Job>(
    conn: &mut PgConnection,
    job: &J,
    opts: Opts,
) -> Result<Enqueued, EnqueueError> {
    let new = NewJob::new(job, opts)?;
    let mut out = enqueue_many(conn, vec![new]).await?;
    out.pop()
        .ok_or(EnqueueError::Database(sqlx::Error::RowNotFound))
}

/// Enqueues many jobs in the caller's transaction; the result is in input order. Duplicates of a
/// unique key (against unfinished jobs or earlier in the same batch) return the holder's id.
///
/// # Errors
/// A database error; the caller's transaction should then be rolled back.
pub async fn enqueue_many(
    conn: &mut PgConnection,
    jobs: Vec<NewJob>,
) -> Result<Vec<Enqueued>, EnqueueError> {
    let ids: Vec<Uuid> = jobs.iter().map(|_| Uuid::now_v7()).collect();
    let mut results: Vec<Option<Enqueued>> = vec![None; jobs.len()];
    let (mut plain, mut pending): (Vec<usize>, Vec<usize>) = (0..jobs.len()).partition(|&i| {
        let opts = &jobs[i].opts;
        opts.unique_key.is_none() && opts.run_at.is_none() && opts.timeout.is_none()
    });
    if plain.len() < COPY_MIN {
        // COPY costs a round trip more than one INSERT: not worth it for a few jobs.
        pending.append(&mut plain);
        pending.sort_unstable();
    }
    copy_plain(conn, &jobs, &ids, &plain).await?;
    for i in plain {
        results[i] = Some(Enqueued {
            id: ids[i],
            state: JobState::Available,
            duplicate: false,
        });
    }
    if pending.is_empty() {
        return Ok(results.into_iter().flatten().collect());
    }
    // A key whose holder finishes between our INSERT and our lookup is free again: try again.
    for _round in 0..5 {
        let mut inserted: HashMap<Uuid, JobState> = HashMap::new();
        for chunk in pending.chunks(CHUNK) {
            inserted.extend(insert_chunk(conn, &jobs, &ids, chunk).await?);
        }
        let mut duplicates = Vec::new();
        for &i in &pending {
            match inserted.get(&ids[i]) {
                Some(&state) => {
                    results[i] = Some(Enqueued {
                        id: ids[i],
                        state,
                        duplicate: false,
                    });
                }
                None => duplicates.push(i),
            }
        }
        let holders = find_holders(conn, &jobs, &duplicates).await?;
        pending = Vec::new();
        for i in duplicates {
            let job = &jobs[i];
            let key = (
                job.opts.organization_id,
                job.kind.to_owned(),
                job.opts.unique_key.clone().unwrap_or_default(),
            );
            match holders.get(&key) {
                Some(&(id, state)) => {
                    results[i] = Some(Enqueued {
                        id,
                        state,
                        duplicate: id != ids[i],
                    });
                }
                None => pending.push(i),
            }
        }
        if pending.is_empty() {
            return Ok(results.into_iter().flatten().collect());
        }
    }
    Err(EnqueueError::Contended)
}

/// Jobs without a unique key, a start time or a timeout of their own cannot conflict and start `available` at `now()`
/// (the column defaults): they are streamed with one `COPY`, which inserts in batches — 1.5 times
/// the rows per second of `INSERT … SELECT unnest(…)` here.
async fn copy_plain(
    conn: &mut PgConnection,
    jobs: &[NewJob],
    ids: &[Uuid],
    plain: &[usize],
) -> Result<(), EnqueueError> {
    if plain.is_empty() {
        return Ok(());
    }
    let mut copy = conn.copy_in_raw(crate::sql::COPY_JOBS).await?;
    for chunk in plain.chunks(CHUNK) {
        let mut csv = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::with_capacity(chunk.len() * 96));
        for &i in chunk {
            let job = &jobs[i];
            let org = job
                .opts
                .organization_id
                .map_or_else(|| "\\N".to_owned(), |id| id.to_string());
            csv.write_record([
                ids[i].to_string().as_str(),
                &org,
                job.kind,
                job.queue,
                &job.args.to_string(),
                &job.opts.priority.get().to_string(),
                &job.max_attempts.to_string(),
            ])
            .map_err(|e| EnqueueError::Encode(e.to_string()))?;
        }
        let data = csv
            .into_inner()
            .map_err(|e| EnqueueError::Encode(e.to_string()))?;
        copy.send(data).await?;
    }
    let copied = copy.finish().await?;
    if copied != plain.len() as u64 {
        return Err(EnqueueError::Encode(format!(
            "COPY stored {copied} of {} jobs",
            plain.len()
        )));
    }
    Ok(())
}

async fn insert_chunk(
    conn: &mut PgConnection,
    jobs: &[NewJob],
    ids: &[Uuid],
    chunk: &[usize],
) -> Result<Vec<(Uuid, JobState)>, EnqueueError> {
    let n = chunk.len();
    let mut id = Vec::with_capacity(n);
    let mut org = Vec::with_capacity(n);
    let mut kind = Vec::with_capacity(n);
    let mut queue = Vec::with_capacity(n);
    let mut args = Vec::with_capacity(n);
    let mut priority = Vec::with_capacity(n);
    let mut max_attempts = Vec::with_capacity(n);
    let mut run_at = Vec::with_capacity(n);
    let mut unique_key = Vec::with_capacity(n);
    let mut timeout_ms = Vec::with_capacity(n);
    for &i in chunk {
        let job = &jobs[i];
        id.push(ids[i]);
        org.push(job.opts.organization_id);
        kind.push(job.kind.to_owned());
        queue.push(job.queue.to_owned());
        args.push(job.args.clone());
        priority.push(i16::from(job.opts.priority.get()));
        max_attempts.push(job.max_attempts);
        run_at.push(job.opts.run_at);
        unique_key.push(job.opts.unique_key.clone());
        // In range: checked by `NewJob::new`.
        timeout_ms.push(
            job.opts
                .timeout
                .and_then(|t| i32::try_from(t.as_millis()).ok()),
        );
    }
    let rows = sqlx::query_file!(
        "src/sql/insert_jobs.sql",
        &id,
        &org as &[Option<Uuid>],
        &kind,
        &queue,
        &args,
        &priority,
        &max_attempts,
        &run_at as &[Option<DateTime<Utc>>],
        &unique_key as &[Option<String>],
        &timeout_ms as &[Option<i32>],
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| Ok((row.id, parse_state(&row.state)?)))
        .collect()
}

type HolderKey = (Option<Uuid>, String, String);

/// The unfinished jobs holding the unique keys of `indexes`.
async fn find_holders(
    conn: &mut PgConnection,
    jobs: &[NewJob],
    indexes: &[usize],
) -> Result<HashMap<HolderKey, (Uuid, JobState)>, EnqueueError> {
    if indexes.is_empty() {
        return Ok(HashMap::new());
    }
    let mut seen = HashSet::new();
    let (mut org, mut kind, mut key) = (Vec::new(), Vec::new(), Vec::new());
    for &i in indexes {
        let job = &jobs[i];
        let k = job.opts.unique_key.as_deref().unwrap_or_default();
        if seen.insert((job.opts.organization_id, job.kind, k)) {
            org.push(job.opts.organization_id);
            kind.push(job.kind.to_owned());
            key.push(k.to_owned());
        }
    }
    let rows = sqlx::query!(
        r#"
        SELECT j.id, j.organization_id, j.kind, j.unique_key AS "unique_key!", j.state
        FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(org, kind, unique_key)
        JOIN jobs j ON j.organization_id IS NOT DISTINCT FROM t.org AND j.kind = t.kind
                   AND j.unique_key = t.unique_key
                   AND j.state IN ('scheduled', 'available', 'running', 'retryable')
        "#,
        &org as &[Option<Uuid>],
        &kind,
        &key,
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter()
        .map(|row| {
            let state = parse_state(&row.state)?;
            Ok((
                (row.organization_id, row.kind, row.unique_key),
                (row.id, state),
            ))
        })
        .collect()
}

fn parse_state(s: &str) -> Result<JobState, EnqueueError> {
    s.parse()
        .map_err(|e: crate::ParseStateError| EnqueueError::Database(sqlx::Error::Decode(e.into())))
}
