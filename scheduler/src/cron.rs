//! The static cron table and the per-organization agent schedules, turned into jobs.
//!
//! Exactly once per tick, whatever the number of replicas: leadership (an advisory lock) is the
//! first wall; the second is a compare-and-set in the same transaction as the enqueue
//! (`cron_ticks.last_tick_at`, `agent_schedules.next_run_at`), plus a unique key per schedule and
//! tick. Ticks missed during downtime collapse into one run on start.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection};
use zoark_jobs::{
    Job, NewJob, Opts,
    agents::RunScheduledAgent,
    maintenance::{BackupDatabase, PruneJobs, RescueJobs},
};

/// One entry of the static table: a name (the `cron_ticks` key), a schedule in UTC and the job
/// each tick enqueues.
pub struct CronEntry {
    pub name: &'static str,
    pub schedule: cron::Schedule,
    pub job: fn() -> Result<NewJob, zoark_jobs::EnqueueError>,
}

/// The platform's static cron table.
pub struct CronTable(pub Vec<CronEntry>);

pub use zoark_core::schedule::{CronError, parse};

fn platform_job<J: Job + Default>() -> Result<NewJob, zoark_jobs::EnqueueError> {
    NewJob::new(&J::default(), Opts::platform())
}

impl CronTable {
    /// Rescue backstop every minute, pruning hourly at :05, and the database backup on
    /// `backup_schedule` (`ZOARK_BACKUP_SCHEDULE`, daily at 02:00 UTC by default; `None` = off).
    ///
    /// # Errors
    /// When `backup_schedule` is not a cron expression (the other expressions are constants,
    /// checked by a unit test).
    pub fn platform(backup_schedule: Option<&str>) -> Result<Self, CronError> {
        let mut entries = vec![
            CronEntry {
                name: "maintenance.rescue_jobs",
                schedule: parse("* * * * *")?,
                job: platform_job::<RescueJobs>,
            },
            CronEntry {
                name: "maintenance.prune_jobs",
                schedule: parse("5 * * * *")?,
                job: platform_job::<PruneJobs>,
            },
        ];
        if let Some(schedule) = backup_schedule {
            entries.push(CronEntry {
                name: "maintenance.backup_database",
                schedule: parse(schedule)?,
                job: platform_job::<BackupDatabase>,
            });
        }
        Ok(Self(entries))
    }
}

/// The latest tick of `schedule` at or before `now`.
fn latest_tick(schedule: &cron::Schedule, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let just_after = now + chrono::Duration::milliseconds(1);
    schedule.after(&just_after).next_back()
}

/// Enqueues every static entry whose latest tick has not been enqueued yet. Returns how many
/// jobs were enqueued.
///
/// # Errors
/// A database error (the transaction of that entry is rolled back; the next tick retries).
pub async fn run_static(
    conn: &mut PgConnection,
    table: &CronTable,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut enqueued = 0;
    for entry in &table.0 {
        let Some(tick) = latest_tick(&entry.schedule, now) else {
            continue;
        };
        let mut tx = conn.begin().await?;
        // First sight of an entry records its latest tick without running it.
        let inserted = sqlx::query!(
            "INSERT INTO cron_ticks (name, last_tick_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            entry.name,
            tick,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            tx.commit().await?;
            continue;
        }
        let claimed = sqlx::query!(
            "UPDATE cron_ticks SET last_tick_at = $2, updated_at = now() WHERE name = $1 AND last_tick_at < $2",
            entry.name,
            tick,
        )
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 1 {
            let mut job = (entry.job)()?;
            job.opts.unique_key = Some(format!("cron:{}:{}", entry.name, tick.timestamp()));
            zoark_jobs::enqueue_many(&mut tx, vec![job]).await?;
            enqueued += 1;
            tracing::info!(cron.name = entry.name, cron.tick = %tick, "cron tick enqueued");
        }
        tx.commit().await?;
    }
    Ok(enqueued)
}

/// Enqueues one [`RunScheduledAgent`] per due `agent_schedules` row and moves its
/// `next_run_at` to the first tick after `now` in the schedule's time zone. Returns how many.
///
/// # Errors
/// A database error.
pub async fn run_agent_schedules(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let mut tx = conn.begin().await?;
    let due = sqlx::query!(
        r#"
        SELECT id, organization_id, agent_id, cron_expression, time_zone, next_run_at AS "next_run_at!"
        FROM agent_schedules
        WHERE enabled AND next_run_at <= $1
        ORDER BY next_run_at
        LIMIT 500
        FOR UPDATE SKIP LOCKED
        "#,
        now,
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut enqueued = 0;
    for s in due {
        let next = chrono_tz::Tz::from_str(&s.time_zone)
            .map_err(|e| e.to_string())
            .and_then(|tz| {
                let schedule = parse(&s.cron_expression).map_err(|e| e.to_string())?;
                zoark_core::schedule::next_tick(&schedule, tz, now)
                    .ok_or_else(|| "the schedule has no future tick".to_owned())
            });
        match next {
            Ok(next) => {
                let job = RunScheduledAgent {
                    schedule_id: s.id,
                    agent_id: s.agent_id,
                    tick: s.next_run_at,
                };
                zoark_jobs::enqueue(&mut tx, &job, Opts::organization(s.organization_id)).await?;
                sqlx::query!(
                    "UPDATE agent_schedules SET next_run_at = $2, last_run_at = $3 WHERE id = $1",
                    s.id,
                    next,
                    s.next_run_at,
                )
                .execute(&mut *tx)
                .await?;
                enqueued += 1;
            }
            Err(reason) => {
                // A schedule that can never run again is disabled, loudly, not retried forever.
                tracing::error!(schedule.id = %s.id, org.id = %s.organization_id, %reason, "disabling an invalid agent schedule");
                sqlx::query!(
                    "UPDATE agent_schedules SET enabled = false WHERE id = $1",
                    s.id
                )
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    tx.commit().await?;
    Ok(enqueued)
}

/// When each static entry last ticked (its name and the tick enqueued last), for the dashboard.
///
/// # Errors
/// Database errors.
pub async fn last_ticks(conn: &mut PgConnection) -> sqlx::Result<Vec<(String, DateTime<Utc>)>> {
    let rows = sqlx::query!("SELECT name, last_tick_at FROM cron_ticks ORDER BY name")
        .fetch_all(conn)
        .await?;
    Ok(rows.into_iter().map(|r| (r.name, r.last_tick_at)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_platform_table_parses_and_five_field_expressions_get_seconds() {
        assert_eq!(CronTable::platform(None).unwrap().0.len(), 2);
        assert_eq!(CronTable::platform(Some("0 2 * * *")).unwrap().0.len(), 3);
        assert!(CronTable::platform(Some("at two")).is_err());
        let hourly = parse("5 * * * *").unwrap();
        let now = DateTime::parse_from_rfc3339("2026-11-25T10:07:30Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            latest_tick(&hourly, now).unwrap().to_rfc3339(),
            "2026-11-25T10:05:00+00:00"
        );
        assert!(parse("not a cron").is_err());
    }
}
