//! zoark-worker: the process that runs jobs. [`engine`] claims them from Postgres and runs them
//! on apalis workers (one per queue); [`handlers`] has one handler per job kind, each file
//! mirroring its contract in `zoark-jobs`.
//!
//! Start-up waits for the database and refuses to run against a schema older than this build.
//! Shutdown (SIGTERM) stops claiming and lets in-flight jobs finish up to
//! `ZOARK_WORKER_SHUTDOWN_TIMEOUT_SECS` (25 s by default).

pub mod engine;
pub mod handlers;

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
    let registry = handlers::registry(&ctx);
    let config = engine::EngineConfig::from_settings(&ctx.settings.worker);
    engine::Engine::new(pool.clone(), config, registry)
        .run(shutdown)
        .await?;
    pool.close().await;
    tracing::info!("zoark-worker stopped");
    Ok(())
}
