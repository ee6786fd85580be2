//! `GET /api/v1/audit-log`: the organization's security-relevant actions, newest first.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{Object, OpenApi, param::Query, payload::Json};
use uuid::Uuid;
use zoark_core::{
    access::ReadAuditLog,
    db::{
        audit::{self, Filter},
        tenant,
    },
};

use crate::{
    auth::BearerAuth,
    error::ApiError,
    pagination::PageRequest,
    params::{Timestamp, instant},
    routes::ApiTags,
    state::AppState,
};

pub struct AuditLogApi;

/// One recorded action.
#[derive(Debug, Object)]
pub struct AuditEntry {
    pub id: Uuid,
    /// `area.verb`: `auth.login`, `auth.login_failed`, `auth.refresh_token_reused`,
    /// `member.role_changed`, `member.removed`, `api_key.created`, `api_key.revoked`,
    /// `organization.updated`, …
    pub action: String,
    /// The user who acted, if a user did.
    pub actor_user_id: Option<Uuid>,
    /// The API key that acted, if a key did.
    pub actor_api_key_id: Option<Uuid>,
    /// What was acted on: `user`, `session`, `api_key`, `organization`, …
    pub target_type: Option<String>,
    pub target_id: Option<Uuid>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    /// Details of the action, e.g. `{"from": "member", "to": "lead"}`.
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[OpenApi(tag = "ApiTags::AuditLog", prefix_path = "/api/v1")]
impl AuditLogApi {
    /// Read the audit log
    ///
    /// Newest first, filtered by action (exact, or a prefix ending in `.` such as `auth.`),
    /// actor, target and time; paginated with `cursor`. Needs `audit_log.read` (admin).
    #[oai(path = "/audit-log", method = "get", operation_id = "audit_log_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// An action, or a prefix ending in `.`.
        action: Query<Option<String>>,
        /// Only actions by this user.
        actor_user_id: Query<Option<Uuid>>,
        /// Only actions on this target.
        target_id: Query<Option<Uuid>>,
        /// At or after (RFC 3339).
        created_after: Query<Option<Timestamp>>,
        /// Before (RFC 3339).
        created_before: Query<Option<Timestamp>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<AuditPage>, ApiError> {
        let granted = auth.grant::<ReadAuditLog>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let filter = Filter {
            action: action.0,
            actor_user_id: actor_user_id.0,
            target_id: target_id.0,
            after: instant(created_after.0),
            before: instant(created_before.0),
            before_id: page.before_id,
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = audit::list(&mut tx, &granted, &filter, page.fetch()).await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |r| r.id);
        let items = rows
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                action: r.action,
                actor_user_id: r.actor_user_id,
                actor_api_key_id: r.actor_api_key_id,
                target_type: r.target_type,
                target_id: r.target_id,
                ip_address: r.ip_address,
                user_agent: r.user_agent,
                metadata: r.metadata,
                created_at: r.created_at,
            })
            .collect();
        Ok(Json(AuditPage { items, next_cursor }))
    }
}
