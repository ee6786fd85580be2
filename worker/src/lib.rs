//! zoark-worker: the process that runs jobs. [`engine`] claims them from Postgres and runs them
//! on apalis workers (one per queue); [`handlers`] has one handler per job kind, each file
//! mirroring its contract in `zoark-jobs`.
//!
//! Start-up waits for the database and refuses to run against a schema older than this build.
//! Shutdown (SIGTERM) stops claiming and lets in-flight jobs finish up to
//! `ZOARK_WORKER_SHUTDOWN_TIMEOUT_SECS` (25 s by default).

pub mod agents;
pub mod backup;
pub mod email;
pub mod engine;
pub mod handlers;

use tokio_util::sync::CancellationToken;
use zoark_core::Settings;

/// What every job handler can reach.
#[derive(Clone)]
pub struct WorkerContext {
    pub pool: sqlx::PgPool,
    pub settings: std::sync::Arc<Settings>,
    /// Sends through organizations' Gmail and Outlook accounts.
    pub oauth: email::OAuthSender,
    /// Embeds document chunks: the local model or an OpenAI-compatible API.
    pub embedder: zoark_embed::provider::Embedder,
    /// Where uploaded files are: `ZOARK_STORAGE_DIR`, or the S3 bucket when configured.
    pub uploads: zoark_core::storage::Location,
    /// Calls the platform's LLM provider (rustls, no redirects; each call has its own timeout).
    pub http: reqwest::Client,
    /// Calls organizations' LLM providers: as `http`, reaching only what the outbound policy
    /// permits (check URLs with `OutboundPolicy::check_url` first).
    pub tenant_http: reqwest::Client,
}

/// Whether this worker runs the `indexing` queue (document search's jobs).
fn runs_indexing(settings: &Settings) -> bool {
    use zoark_jobs::Job as _;
    let queue = zoark_jobs::rag::IndexDocument::QUEUE;
    settings.worker.queues.0.iter().any(|(q, _)| q == queue)
}

/// A worker that runs the `indexing` queue needs the local embedding model: loads it (checking
/// every file's SHA-256) so that a missing or altered file stops the process at start-up, naming
/// the file, rather than failing every indexing job. The check's copy is dropped: the model
/// (about 90 MB) is held from the first indexing job on, not by a worker that never indexes.
///
/// # Errors
/// The model cannot be loaded.
pub async fn check_embedding_model(settings: &Settings) -> anyhow::Result<()> {
    if !runs_indexing(settings) {
        return Ok(());
    }
    let dir = settings.embeddings.model_dir.clone();
    tokio::task::spawn_blocking(move || zoark_embed::LocalModel::load(&dir).map(drop)).await??;
    Ok(())
}

/// A worker of the `indexing` queue asks, once per start, for the documents indexed by another
/// embedding model than the configured one to be indexed again (a unique job: many workers
/// starting together enqueue one).
async fn enqueue_stale_reindex(ctx: &WorkerContext) -> anyhow::Result<()> {
    if !runs_indexing(&ctx.settings) {
        return Ok(());
    }
    let mut conn = ctx.pool.acquire().await?;
    let job = zoark_jobs::rag::ReindexStale {
        model: ctx.embedder.model().to_owned(),
    };
    zoark_jobs::enqueue(&mut conn, &job, zoark_jobs::Opts::platform()).await?;
    Ok(())
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
    let settings = std::sync::Arc::new(settings);
    let ctx = WorkerContext {
        pool: pool.clone(),
        oauth: email::OAuthSender::new(pool.clone(), settings.clone())?,
        embedder: zoark_embed::provider::Embedder::from_settings(&settings.embeddings)?,
        uploads: zoark_core::storage::uploads(&settings.storage)?,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?,
        tenant_http: settings.outbound.http_client().build()?,
        settings,
    };
    enqueue_stale_reindex(&ctx).await?;
    if let Some(port) = ctx.settings.worker.metrics_port {
        serve_metrics(port, shutdown.clone()).await?;
    }
    let registry = handlers::registry(&ctx);
    tracing::info!(job.kinds = ?registry.kinds(), "zoark-worker started");
    let config = engine::EngineConfig::from_settings(&ctx.settings.worker);
    engine::Engine::new(pool.clone(), config, registry)
        .run(shutdown)
        .await?;
    pool.close().await;
    tracing::info!("zoark-worker stopped");
    Ok(())
}

/// `/metrics` on `port` (job counters by kind and state, run-time histogram, queue depth and
/// oldest-available age) until shutdown.
async fn serve_metrics(port: u16, shutdown: CancellationToken) -> anyhow::Result<()> {
    use poem::{Route, Server, get, handler, listener::TcpListener};

    #[handler]
    fn metrics() -> String {
        zoark_core::telemetry::prometheus()
            .map(|h| h.render())
            .unwrap_or_default()
    }

    let _ = zoark_core::telemetry::prometheus();
    let listener = TcpListener::bind(std::net::SocketAddr::from(([0, 0, 0, 0], port)));
    let app = Route::new().at("/metrics", get(metrics));
    tokio::spawn(async move {
        let stopped = shutdown.cancelled_owned();
        if let Err(error) = Server::new(listener)
            .run_with_graceful_shutdown(app, stopped, None)
            .await
        {
            tracing::error!(%error, "the metrics endpoint stopped");
        }
    });
    tracing::info!(port, "serving /metrics");
    Ok(())
}
