//! zoark-api: the HTTP API. Handlers authenticate, write domain rows and enqueue jobs in one
//! transaction, and answer; they never call external services.
//!
//! - [`app`] builds the whole endpoint (OpenAPI operations, Swagger UI, the spec);
//! - [`serve`] binds `$PORT` and shuts down gracefully;
//! - [`error`] is the single error mapping to problem+json.

pub mod auth;
pub mod dashboard;
pub mod error;
pub mod etag;
pub mod events;
pub mod files;
pub mod idempotency;
pub mod json;
pub mod middleware;
pub mod oauth;
pub mod pagination;
pub mod params;
pub mod permissions;
pub mod rate_limit;
pub mod routes;
pub mod spec;
pub mod state;
pub mod system_email;
pub mod tokens;

use std::{future::Future, sync::Arc};

use poem::{
    Endpoint, EndpointExt, Route, Server,
    listener::{Listener, TcpListener},
};
use poem_openapi::OpenApiService;
use zoark_core::Settings;

pub use crate::state::AppState;

/// The platform's operations: health, identity, email, jobs, webhooks.
pub type PlatformApi = (
    routes::health::HealthApi,
    routes::auth::AuthApi,
    routes::organization::OrganizationApi,
    routes::api_keys::ApiKeysApi,
    routes::audit_log::AuditLogApi,
    routes::email_accounts::EmailAccountsApi,
    routes::broadcasts::BroadcastsApi,
    routes::jobs::JobsApi,
    routes::platform::OperatorsApi,
    routes::webhooks::WebhooksApi,
);

/// The ZOARK OS domain: the team, projects and tasks, documents, invoices, approvals, agents,
/// the knowledge base and search.
pub type DomainApi = (
    routes::team_members::TeamMembersApi,
    routes::projects::ProjectsApi,
    routes::tasks::TasksApi,
    routes::documents::DocumentsApi,
    routes::invoices::InvoicesApi,
    routes::approvals::ApprovalTemplatesApi,
    routes::approvals::ApprovalsApi,
    routes::agents::AgentsApi,
    routes::agent_runs::AgentRunsApi,
    routes::inbound_email::InboundEmailApi,
    routes::llm_credentials::LlmCredentialsApi,
    routes::knowledge::KnowledgeApi,
    routes::search::SearchApi,
    routes::ask::AskApi,
);

/// All operations, in the order they appear in the spec (a tuple holds at most 16).
pub type Api = (PlatformApi, DomainApi);

fn api() -> Api {
    (
        (
            routes::health::HealthApi,
            routes::auth::AuthApi,
            routes::organization::OrganizationApi,
            routes::api_keys::ApiKeysApi,
            routes::audit_log::AuditLogApi,
            routes::email_accounts::EmailAccountsApi,
            routes::broadcasts::BroadcastsApi,
            routes::jobs::JobsApi,
            routes::platform::OperatorsApi,
            routes::webhooks::WebhooksApi,
        ),
        (
            routes::team_members::TeamMembersApi,
            routes::projects::ProjectsApi,
            routes::tasks::TasksApi,
            routes::documents::DocumentsApi,
            routes::invoices::InvoicesApi,
            routes::approvals::ApprovalTemplatesApi,
            routes::approvals::ApprovalsApi,
            routes::agents::AgentsApi,
            routes::agent_runs::AgentRunsApi,
            routes::inbound_email::InboundEmailApi,
            routes::llm_credentials::LlmCredentialsApi,
            routes::knowledge::KnowledgeApi,
            routes::search::SearchApi,
            routes::ask::AskApi,
        ),
    )
}

/// The OpenAPI service; `server_url` is where Swagger UI sends requests.
pub fn openapi(server_url: &str) -> OpenApiService<Api, ()> {
    OpenApiService::new(api(), "Zoark API", env!("CARGO_PKG_VERSION"))
        .description(
            "The ZOARK OS backend: projects, tasks, approvals, broadcasts and agents on a durable \
             Postgres job queue. Errors are RFC 9457 `application/problem+json` documents with a \
             stable `code`; every response carries `x-request-id`.\n\n\
             `GET /api/v1/events` (WebSocket, `Authorization: Bearer` on the upgrade, or the \
             dashboard's session cookie from a page of the same origin) streams the \
             organization's job state changes as JSON messages \
             `{type: \"job\", id, organization_id, kind, queue, state, attempt}`, and agent run \
             and step changes (`agent_run`, `agent_step`) to roles that read agents. The job \
             status dashboard is at `/dashboard`.",
        )
        .server(server_url)
}

/// The spec as served at `/openapi.json` and committed in `docs/openapi.json` (server URL
/// independent of the deployment).
pub fn spec_json() -> String {
    spec::with_nullable_optionals(&openapi("/").spec())
}

/// The complete HTTP application.
pub fn app(state: AppState) -> impl Endpoint + 'static {
    let service = openapi("/");
    let docs = service.swagger_ui().with(
        poem::middleware::SetHeader::new()
            .overriding("content-security-policy", middleware::SWAGGER_UI_CSP),
    );
    let spec = spec_json();
    let spec = poem::endpoint::make_sync(move |_| {
        poem::Response::builder()
            .content_type("application/json")
            .body(spec.clone())
    });
    let with_docs = state.settings.http.api_docs;
    let hsts = state.settings.is_production() && state.settings.http.public_url.scheme() == "https";
    let route = Route::new().nest("/", service);
    let route = if with_docs {
        route.nest("/docs", docs).at("/openapi.json", spec)
    } else {
        route
    };
    let origins = state.settings.http.cors_origins.clone();
    route
        .at("/api/v1/events", poem::get(events::events))
        .nest("/dashboard", dashboard::routes())
        .with(rate_limit::RateLimit)
        .with(poem::middleware::CookieJarManager::new())
        .data(state)
        .with_if(!origins.is_empty(), middleware::cors(origins))
        .with(middleware::RequestContext { hsts })
}

/// Serves the API on `$PORT` until `shutdown` resolves, then drains in-flight requests for at
/// most `ZOARK_HTTP_SHUTDOWN_TIMEOUT_SECS` (30 s by default).
///
/// # Errors
/// When the port cannot be bound.
pub async fn serve(
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = zoark_core::db::api_pool(&settings)?;
    let addr = std::net::SocketAddr::new(settings.http.host, settings.http.port);
    let timeout = settings.http.shutdown_timeout;
    let state = AppState::new(pool.clone(), Arc::new(settings))?;
    // Build the routes (and the spec) and bind before announcing, so "listening" means
    // connections are accepted and served at once.
    let app = app(state);
    let acceptor = TcpListener::bind(addr).into_acceptor().await?;
    tracing::info!(%addr, "zoark-api listening");
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app, shutdown, Some(timeout))
        .await?;
    pool.close().await;
    tracing::info!("zoark-api stopped");
    Ok(())
}

/// Serves on an already-bound listener (tests bind port 0 and read the address first).
///
/// # Errors
/// When serving fails.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let timeout = state.settings.http.shutdown_timeout;
    let std_listener = listener.into_std()?;
    let acceptor = poem::listener::TcpAcceptor::from_std(std_listener)?;
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app(state), shutdown, Some(timeout))
        .await?;
    Ok(())
}
