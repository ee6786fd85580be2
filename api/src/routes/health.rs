//! `/health/live`, `/health/ready` and `/metrics`.

use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    payload::{Json, PlainText},
};
use secrecy::ExposeSecret as _;

use crate::{
    error::{ApiError, ProblemJson},
    middleware::RequestId,
    routes::ApiTags,
    state::AppState,
};

pub struct HealthApi;

/// The state of one dependency.
#[derive(Debug, Object)]
pub struct HealthStatus {
    /// `ok` when the process (and, for readiness, its database) can serve.
    pub status: String,
    /// Zoark's version.
    pub version: String,
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database answers: the instance can serve traffic.
    #[oai(status = 200)]
    Ready(Json<HealthStatus>),
    /// The database does not answer (`database_unavailable`); take the instance out of rotation.
    #[oai(status = 503)]
    NotReady(ProblemJson),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness
    ///
    /// Answers 200 while the process runs, whatever its dependencies; a failure means restart it.
    #[oai(path = "/health/live", method = "get", operation_id = "health_live")]
    async fn live(&self) -> Json<HealthStatus> {
        Json(HealthStatus {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    /// Readiness
    ///
    /// Answers 200 when Postgres answers within the pool's acquire timeout, and a 503
    /// problem+json (`database_unavailable`) while it does not. It recovers on its own when the
    /// database comes back; no restart is needed.
    #[oai(path = "/health/ready", method = "get", operation_id = "health_ready")]
    async fn ready(&self, state: Data<&AppState>, request_id: Data<&RequestId>) -> ReadyResponse {
        match zoark_core::db::ping(&state.pool).await {
            Ok(()) => ReadyResponse::Ready(Json(HealthStatus {
                status: "ok".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            })),
            Err(error) => {
                tracing::warn!(%error, "readiness check failed");
                let unavailable = ApiError::Unavailable {
                    code: "database_unavailable",
                    detail: "The database is not reachable.".into(),
                };
                ReadyResponse::NotReady(ProblemJson::new(&unavailable, &request_id.0.0))
            }
        }
    }

    /// Prometheus metrics
    ///
    /// The process's metrics in the Prometheus text exposition format. With
    /// `ZOARK_METRICS_TOKEN` set, only for `Authorization: Bearer <that token>` (401 otherwise);
    /// without it, served to anyone in development and not at all in production (404).
    #[oai(path = "/metrics", method = "get", operation_id = "metrics")]
    async fn metrics(
        &self,
        state: Data<&AppState>,
        req: &poem::Request,
    ) -> Result<PlainText<String>, ApiError> {
        match &state.settings.http.metrics_token {
            Some(expected) => {
                let given = crate::auth::bearer(req).unwrap_or_default();
                // Digests compared, so the time taken says nothing about the token.
                if zoark_core::crypto::token_digest(given)
                    != zoark_core::crypto::token_digest(expected.expose_secret())
                {
                    return Err(ApiError::Unauthorized);
                }
            }
            None if state.settings.is_production() => {
                return Err(ApiError::NotFound {
                    code: "not_found",
                    detail: "Metrics are served only with ZOARK_METRICS_TOKEN set.".into(),
                });
            }
            None => {}
        }
        Ok(PlainText(
            zoark_core::telemetry::prometheus()
                .map(|h| h.render())
                .unwrap_or_default(),
        ))
    }
}
