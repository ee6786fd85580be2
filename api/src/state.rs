//! Shared state of the API handlers.

use std::sync::Arc;

use sqlx::PgPool;
use zoark_core::Settings;

impl AppState {
    /// The state of one API replica; starts the event fan-out and the limiter pruning.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (no TLS provider installed) or the upload store
    /// cannot be opened.
    pub fn new(pool: PgPool, settings: Arc<Settings>) -> anyhow::Result<Self> {
        let rate_limits = crate::rate_limit::RateLimits::new(settings.http.rate_limits);
        crate::rate_limit::spawn_pruning(&rate_limits);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let tenant_http = settings
            .outbound
            .http_client()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let uploads = zoark_core::storage::uploads(&settings.storage)?;
        let embedder = zoark_embed::provider::Embedder::from_settings(&settings.embeddings)?;
        Ok(Self {
            upload_slots: Arc::new(tokio::sync::Semaphore::new(
                settings.storage.max_concurrent_uploads as usize,
            )),
            uploads,
            embedder,
            events: crate::events::EventHub::start(pool.clone()),
            pool,
            settings,
            rate_limits,
            http,
            tenant_http,
        })
    }
}

/// What every handler can reach: the pool and the settings. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    /// Job state changes, fanned out to WebSocket subscribers.
    pub events: crate::events::EventHub,
    /// This replica's rate limiters.
    pub rate_limits: Arc<crate::rate_limit::RateLimits>,
    /// Outgoing HTTP to the deployment's own providers (OAuth token exchanges): rustls, no
    /// redirects, 30 s timeout.
    pub http: reqwest::Client,
    /// Outgoing HTTP to URLs organizations configure (LLM providers): as `http`, reaching only
    /// what the outbound policy permits (check URLs with `OutboundPolicy::check_url` first).
    pub tenant_http: reqwest::Client,
    /// Where uploaded files go: `ZOARK_STORAGE_DIR`, or the S3 bucket when configured.
    pub uploads: zoark_core::storage::Location,
    /// One permit per upload being received (`ZOARK_MAX_CONCURRENT_UPLOADS`).
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Embeds search queries: the provider the documents were indexed with.
    pub embedder: zoark_embed::provider::Embedder,
}
