//! Shared state of the API handlers.

use std::sync::Arc;

use sqlx::PgPool;
use zoark_core::Settings;

/// What every handler can reach: the pool and the settings. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    /// Job state changes, fanned out to WebSocket subscribers.
    pub events: crate::events::EventHub,
}
