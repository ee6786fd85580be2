//! zoark-scheduler: turns schedules into jobs, exactly once however many replicas run.
//!
//! Leadership is a session-level Postgres advisory lock held on a dedicated connection: one
//! replica holds it and ticks; the others retry every few seconds and take over within that
//! interval when the leader's connection goes away (crash, network, shutdown). Each tick the
//! leader enqueues the due ticks of the static [`cron::CronTable`] and of the organizations'
//! agent schedules ([`cron`]), each exactly once. Every round trip on the leadership connection
//! has a deadline ([`Timing::timeout`]): a leader whose connection hangs drops it, which ends its
//! session and so its lock, and contends again, rather than holding the lock while doing nothing.

pub mod cron;

use std::time::Duration;

use anyhow::{Context as _, anyhow};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zoark_core::Settings;

/// The advisory lock key of scheduler leadership (an arbitrary constant: "zoark-sc").
pub const LEADER_LOCK_KEY: i64 = 0x7a6f_6172_6b2d_7363;

/// How often a follower retries, how often the leader ticks and checks its connection, and how
/// long a step on the leadership connection may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub retry: Duration,
    pub tick: Duration,
    /// The deadline of connecting, of trying the lock, and of each tick (the ping and the
    /// enqueueing): past it the replica drops the connection and contends again.
    pub timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            retry: Duration::from_secs(5),
            tick: Duration::from_secs(1),
            // A tick enqueues at most 500 agent schedules and the static table: seconds at worst.
            timeout: Duration::from_secs(15),
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
/// shutdown, a lost connection or a step past [`Timing::timeout`], enqueueing due ticks.
async fn lead(
    url: &str,
    table: &cron::CronTable,
    timing: Timing,
    leader: &watch::Sender<bool>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let limit = timing.timeout;
    let mut conn = within(
        limit,
        "connecting",
        PgConnection::connect_with(&leadership_options(url, limit)?),
    )
    .await?;
    let acquired: bool = within(
        limit,
        "trying the leader lock",
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut conn),
    )
    .await?;
    if !acquired {
        let _ = tokio::time::timeout(limit, conn.close()).await;
        return Ok(());
    }
    tracing::info!("this scheduler replica is the leader");
    leader.send_replace(true);
    let mut interval = tokio::time::interval(timing.tick);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = tokio::time::timeout(limit, async {
                    let _ = sqlx::query("SELECT pg_advisory_unlock($1)").bind(LEADER_LOCK_KEY).execute(&mut conn).await;
                    let _ = conn.close().await;
                })
                .await;
                tracing::info!("leadership released");
                return Ok(());
            }
            _ = interval.tick() => {
                // On error or timeout the connection is dropped on return: its session, and the
                // lock with it, ends, and another replica may lead.
                within(limit, "the leader's tick", tick(&mut conn, table)).await?;
            }
        }
    }
}

/// One tick of the leader: check the session, then enqueue what is due.
async fn tick(conn: &mut PgConnection, table: &cron::CronTable) -> anyhow::Result<()> {
    // The lock lives as long as this session: a failed ping means it is gone.
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    let now = chrono::Utc::now();
    if let Err(error) = cron::run_static(conn, table, now).await {
        tracing::warn!(%error, "enqueueing cron ticks failed; retrying next tick");
    }
    if let Err(error) = cron::run_agent_schedules(conn, now).await {
        tracing::warn!(%error, "enqueueing agent schedules failed; retrying next tick");
    }
    Ok(())
}

/// `step`, or an error naming it when it takes longer than `limit`.
async fn within<T, E>(
    limit: Duration,
    step: &str,
    future: impl Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    anyhow::Error: From<E>,
{
    match tokio::time::timeout(limit, future).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(anyhow!("{step} took longer than {limit:?}")),
    }
}

/// A platform connection whose server side also notices a vanished client: a leader that gave up
/// on a hung connection must not leave behind a session that keeps the lock. The server checks
/// the client during a long statement (`client_connection_check_interval`) and probes an idle
/// socket (TCP keepalives), so the session ends soon after the client is gone.
fn leadership_options(url: &str, limit: Duration) -> Result<PgConnectOptions, sqlx::Error> {
    let check_ms = (limit.as_millis() / 4).clamp(100, 5_000);
    Ok(zoark_core::db::platform_options(url)?.options([
        ("client_connection_check_interval", check_ms.to_string()),
        ("tcp_keepalives_idle", "10".to_owned()),
        ("tcp_keepalives_interval", "5".to_owned()),
        ("tcp_keepalives_count", "3".to_owned()),
    ]))
}
