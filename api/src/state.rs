//! Shared state of the API handlers.

use std::sync::Arc;

use sqlx::PgPool;
use zoark_core::Settings;

impl AppState {
    /// The state of one API replica; starts the event fan-out and the limiter pruning.
    pub fn new(pool: PgPool, settings: Arc<Settings>) -> Self {
        let rate_limits = crate::rate_limit::RateLimits::new(settings.http.rate_limits);
        crate::rate_limit::spawn_pruning(&rate_limits);
        Self {
            events: crate::events::EventHub::start(pool.clone()),
            pool,
            settings,
            rate_limits,
        }
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
}
