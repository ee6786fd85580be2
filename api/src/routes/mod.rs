//! The OpenAPI operations, one module per area.

pub mod health;
pub mod jobs;

/// Tags grouping operations in the spec and Swagger UI.
#[derive(poem_openapi::Tags)]
pub enum ApiTags {
    /// Liveness, readiness and metrics for load balancers and monitoring.
    Health,
    /// Durable jobs: inspect, cancel, retry; queue statistics.
    Jobs,
}
