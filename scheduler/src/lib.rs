//! zoark-scheduler: turns schedules into jobs, exactly once however many replicas run.
//!
//! Leadership is a session-level Postgres advisory lock held on a dedicated connection: one
//! replica holds it and ticks; the others retry every few seconds and take over within that
//! interval when the leader's connection goes away (crash, network, shutdown). Each tick the
//! leader enqueues the due ticks of the static [`cron::CronTable`] and of the organizations'
//! agent schedules ([`cron`]), each exactly once.

pub mod cron;

use std::time::Duration;

use anyhow::Context as _;

use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zoark_core::Settings;

/// The advisory lock key of scheduler leadership (an arbitrary constant: "zoark-sc").
pub const LEADER_LOCK_KEY: i64 = 0x7a6f_6172_6b2d_7363;

/// How often a follower retries, and how often the leader ticks and checks its connection.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub retry: Duration,
    pub tick: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            retry: Duration::from_secs(5),
            tick: Duration::from_secs(1),
        }
    }
}

/// Runs the scheduler until `shutdown` is cancelled. `leader` reports whether this replica leads.
///
/// # Errors
/// When the schema is behind this build.
pub async fn run(
    settings: Settings,
    timing: Timing,
    leader: watch::Sender<bool>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = zoark_core::db::pool(&settings)?;
    zoark_core::db::wait_until_migrated(&pool, &shutdown).await?;
    pool.close().await;
    let url = settings.database_url().to_owned();
    let table = cron::CronTable::platform(settings.backup.schedule.as_deref())
        .context("ZOARK_BACKUP_SCHEDULE")?;
    tracing::info!("zoark-scheduler started");
    while !shutdown.is_cancelled() {
        match lead(&url, &table, timing, &leader, &shutdown).await {
            Ok(()) => {}
            Err(error) => tracing::warn!(%error, "scheduler connection lost"),
        }
        leader.send_replace(false);
        tokio::select! {
            _ = tokio::time::sleep(timing.retry) => {}
            _ = shutdown.cancelled() => {}
        }
    }
    tracing::info!("zoark-scheduler stopped");
    Ok(())
}

/// One attempt: connect, try the lock, and while held check the session every tick until
/// shutdown or a lost connection, enqueueing due ticks.
async fn lead(
    url: &str,
    table: &cron::CronTable,
    timing: Timing,
    leader: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut conn = PgConnection::connect_with(&zoark_core::db::platform_options(url)?).await?;
    let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK_KEY)
        .fetch_one(&mut conn)
        .await?;
    if !acquired {
        conn.close().await?;
        return Ok(());
    }
    tracing::info!("this scheduler replica is the leader");
    leader.send_replace(true);
    let mut interval = tokio::time::interval(timing.tick);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LEADER_LOCK_KEY).execute(&mut conn).await;
                let _ = conn.close().await;
                tracing::info!("leadership released");
                return Ok(());
            }
            _ = interval.tick() => {
                // The lock lives as long as this session: a failed ping means it is gone.
                sqlx::query("SELECT 1").execute(&mut conn).await?;
                let now = chrono::Utc::now();
                if let Err(error) = cron::run_static(&mut conn, table, now).await {
                    tracing::warn!(%error, "enqueueing cron ticks failed; retrying next tick");
                }
                if let Err(error) = cron::run_agent_schedules(&mut conn, now).await {
                    tracing::warn!(%error, "enqueueing agent schedules failed; retrying next tick");
                }
            }
        }
    }
}
