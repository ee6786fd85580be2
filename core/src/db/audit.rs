//! The audit log: one row per security-relevant action, written in the action's transaction.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::Actor;

/// Where a request came from, as recorded in the audit log and on sessions.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

impl Client {
    /// The user agent, cut to what the schema stores (1,024 bytes at a character boundary).
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref().map(|ua| {
            let mut end = ua.len().min(1024);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            &ua[..end]
        })
    }

    pub fn ip(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}

/// One entry to record.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// `area.verb`, e.g. `auth.login_failed`, `member.role_changed`.
    pub action: &'static str,
    pub target: Option<(&'static str, Uuid)>,
    pub metadata: Value,
    pub client: &'a Client,
}

impl<'a> Entry<'a> {
    /// An entry without target or details.
    pub fn new(action: &'static str, client: &'a Client) -> Self {
        Self {
            action,
            target: None,
            metadata: Value::Object(serde_json::Map::new()),
            client,
        }
    }

    /// What was acted on.
    #[must_use]
    pub fn on(mut self, kind: &'static str, id: Uuid) -> Self {
        self.target = Some((kind, id));
        self
    }

    /// Details of the action (a JSON object).
    #[must_use]
    pub fn with(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }
}

/// Appends `entry` to the log of the proof's organization, as done by the proof's actor.
///
/// # Errors
/// Database errors.
pub async fn record_granted<P>(
    conn: &mut PgConnection,
    granted: &crate::access::Granted<P>,
    entry: Entry<'_>,
) -> sqlx::Result<()> {
    record(
        conn,
        granted.organization_id(),
        Some(granted.actor()),
        entry,
    )
    .await
}

/// Appends `entry` to `organization_id`'s log.
///
/// # Errors
/// Database errors.
pub async fn record(
    conn: &mut PgConnection,
    organization_id: Uuid,
    actor: Option<Actor>,
    entry: Entry<'_>,
) -> sqlx::Result<()> {
    let (target_type, target_id) = entry.target.unzip();
    sqlx::query!(
        r#"
        INSERT INTO audit_log (organization_id, actor_user_id, actor_api_key_id, action, target_type,
                               target_id, ip_address, user_agent, metadata)
        VALUES ($1, $2, $3, $4, $5, $6, $7::text::inet, $8, $9)
        "#,
        organization_id,
        actor.and_then(|a| a.user_id()),
        actor.and_then(|a| a.api_key_id()),
        entry.action,
        target_type,
        target_id,
        entry.client.ip(),
        entry.client.user_agent(),
        entry.metadata,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// One row of the log as read back.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub id: Uuid,
    pub actor_user_id: Option<Uuid>,
    pub actor_api_key_id: Option<Uuid>,
    pub action: String,
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub metadata: Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Exact action, or a prefix ending in `.` (e.g. `auth.`).
    pub action: Option<String>,
    pub actor_user_id: Option<Uuid>,
    pub target_id: Option<Uuid>,
    pub after: Option<chrono::DateTime<chrono::Utc>>,
    pub before: Option<chrono::DateTime<chrono::Utc>>,
    /// Keyset cursor: entries strictly older than this id.
    pub before_id: Option<Uuid>,
}

/// The organization's entries, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::ReadAuditLog>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Record>> {
    let (exact, prefix) = match filter.action.as_deref() {
        Some(a) if a.ends_with('.') => (None, Some(format!("{a}%"))),
        Some(a) => (Some(a.to_owned()), None),
        None => (None, None),
    };
    sqlx::query_as!(
        Record,
        r#"
        SELECT id, actor_user_id, actor_api_key_id, action, target_type, target_id,
               host(ip_address) AS ip_address, user_agent, metadata, created_at
        FROM audit_log
        WHERE organization_id = $1
          AND ($2::text IS NULL OR action = $2)
          AND ($3::text IS NULL OR action LIKE $3)
          AND ($4::uuid IS NULL OR actor_user_id = $4)
          AND ($5::uuid IS NULL OR target_id = $5)
          AND ($6::timestamptz IS NULL OR created_at >= $6)
          AND ($7::timestamptz IS NULL OR created_at < $7)
          AND ($8::uuid IS NULL OR id < $8)
        ORDER BY id DESC
        LIMIT $9
        "#,
        proof.organization_id(),
        exact,
        prefix,
        filter.actor_user_id,
        filter.target_id,
        filter.after,
        filter.before,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}
