//! The OpenAPI operations, one module per area.

pub mod agent_runs;
pub mod agents;
pub mod api_keys;
pub mod approvals;
pub mod ask;
pub mod audit_log;
pub mod auth;
pub mod broadcasts;
pub mod documents;
pub mod email_accounts;
pub mod health;
pub mod inbound_email;
pub mod invoices;
pub mod jobs;
pub mod knowledge;
pub mod llm_credentials;
pub mod organization;
pub mod platform;
pub mod projects;
pub mod search;
pub mod tasks;
pub mod team_members;
pub mod webhooks;

/// Tags grouping operations in the spec and Swagger UI.
#[derive(poem_openapi::Tags)]
pub enum ApiTags {
    /// Liveness, readiness and metrics for load balancers and monitoring.
    Health,
    /// Durable jobs: inspect, cancel, retry; queue statistics.
    Jobs,
    /// The whole installation for platform operators (`ZOARK_OPERATORS`): queues paused for
    /// everyone, workers, any job.
    Platform,
    /// Registration, sign-in, tokens and sessions.
    Auth,
    /// The organization: name, branding, settings and members.
    Organization,
    /// Organization API keys.
    ApiKeys,
    /// Security-relevant actions.
    AuditLog,
    /// Sending accounts of the organization.
    EmailAccounts,
    /// The team directory: people, their roles and working hours.
    Team,
    /// Emails to many recipients, their deliveries, the suppression list and unsubscribing.
    Broadcasts,
    /// Projects, their members and their computed health and velocity.
    Projects,
    /// The task board: tasks, moves between columns, work history and assignments.
    Tasks,
    /// The organization's agents and their cron schedules.
    Agents,
    /// The organization's OpenAI-compatible LLM providers, for its agents.
    LlmCredentials,
    /// Approval pipeline templates, approvals running on invoices, tasks and documents, and
    /// their decisions.
    Approvals,
    /// Team members' documents: upload, list, download, delete.
    Documents,
    /// Project invoices, their status and their PDF.
    Invoices,
    /// Endpoints that receive signed event notifications, and their delivery log.
    Webhooks,
    /// The knowledge base: the organization's own documents, indexed for search.
    Knowledge,
    /// Hybrid keyword and semantic search over the documents the caller may read.
    Search,
}

/// The answer of operations that return nothing.
#[derive(poem_openapi::ApiResponse)]
pub enum NoContent {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

/// A strong entity tag: the SHA-256 of the JSON representation (first 128 bits, hex).
pub(crate) fn entity_tag(representation: &impl serde::Serialize) -> String {
    use sha2::Digest as _;
    let body = serde_json::to_vec(representation).unwrap_or_default();
    let digest = sha2::Sha256::digest(&body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether an `If-None-Match` header names `tag` (or `*`): the client's copy is current.
pub(crate) fn none_match(if_none_match: Option<&str>, tag: &str) -> bool {
    if_none_match.is_some_and(|h| {
        h.split(',')
            .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag)
    })
}
