//! zoark-worker: the process that runs jobs. One apalis worker per job kind, registered in
//! [`handlers`]; each handler file mirrors its contract in `zoark-jobs`.
//!
//! Start-up waits for the database and refuses to run against a schema older than this build.
//! Shutdown (SIGTERM) stops claiming and lets in-flight jobs finish up to
//! `ZOARK_WORKER_SHUTDOWN_TIMEOUT_SECS` (25 s by default).

pub mod handlers;

use apalis::prelude::Monitor;
use tokio_util::sync::CancellationToken;
use zoark_core::Settings;

/// What every job handler can reach.
#[derive(Clone)]
pub struct WorkerContext {
    pub pool: sqlx::PgPool,
    pub settings: std::sync::Arc<Settings>,
}

/// Runs the worker until `shutdown` is cancelled.
///
/// # Errors
/// When the schema is behind, or the monitor fails.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let pool = zoark_core::db::pool(&settings)?;
    zoark_core::db::wait_until_migrated(&pool, &shutdown).await?;
    if shutdown.is_cancelled() {
        return Ok(());
    }
    let ctx = WorkerContext {
        pool: pool.clone(),
        settings: std::sync::Arc::new(settings),
    };
    let monitor = Monitor::new().shutdown_timeout(ctx.settings.worker.shutdown_timeout);
    let (monitor, kinds) = handlers::register(monitor, &ctx);
    tracing::info!(job.kinds = ?kinds, "zoark-worker started");
    let signal = shutdown.clone();
    monitor
        .run_with_signal(async move {
            signal.cancelled().await;
            Ok(())
        })
        .await?;
    // A monitor without workers returns at once; the process still runs until told to stop.
    shutdown.cancelled().await;
    pool.close().await;
    tracing::info!("zoark-worker stopped");
    Ok(())
}
