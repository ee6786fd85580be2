//! `/api/v1/broadcasts`, `/api/v1/email-suppressions` and the public one-click unsubscribe
//! link. Sending fans out in one transaction: one delivery and one `email.send` job per
//! recipient (bulk enqueue); the worker claims and marks each delivery so that it goes out once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::{Html, Json},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{Granted, ManageBroadcasts, ReadBroadcasts},
    db::{
        audit::{self, Entry},
        broadcasts::{self, NewBroadcast},
        deliveries,
        email_accounts::{self, AccountStatus},
        tenant,
    },
    identity::EmailAddress,
};
use zoark_jobs::{
    Opts,
    admin::cancel_waiting,
    email::{SendBroadcast, send_broadcast},
    enqueue,
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, FieldError, Fields},
    idempotency,
    json::JsonBody,
    pagination::PageRequest,
    routes::{ApiTags, NoContent},
    state::AppState,
};

pub struct BroadcastsApi;

/// Most explicit recipients one broadcast takes.
const MAX_RECIPIENTS: usize = 50_000;
/// Most team members one broadcast names.
const MAX_TEAM_MEMBERS: usize = 10_000;

/// `POST /broadcasts`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewBroadcastRequest {
    /// The sending account (`GET /api/v1/email-accounts`).
    pub email_account_id: Uuid,
    /// One line, at most 998 characters.
    pub subject: String,
    /// The plain-text body (required; at most 1 MB).
    pub body_text: String,
    /// An HTML body (optional; at most 2 MB). Without it, the text is sent as HTML too.
    pub body_html: Option<String>,
    /// Addresses (at most 50,000).
    #[serde(default)]
    pub recipients: Option<Vec<String>>,
    /// Team members of the directory (at most 10,000).
    #[serde(default)]
    pub team_member_ids: Option<Vec<Uuid>>,
    /// Every member of this project.
    pub project_id: Option<Uuid>,
    /// When set (in the future, within a year), the broadcast is `scheduled` and sent then;
    /// otherwise it is a `draft` until `POST /broadcasts/{id}/send`.
    pub scheduled_for: Option<DateTime<Utc>>,
}

impl poem_openapi::types::Example for NewBroadcastRequest {
    fn example() -> Self {
        Self {
            email_account_id: Uuid::nil(),
            subject: "Office closed on Friday".into(),
            body_text: "Hello, the office is closed this Friday.".into(),
            body_html: None,
            recipients: Some(vec!["ada@example.com".into()]),
            team_member_ids: None,
            project_id: None,
            scheduled_for: None,
        }
    }
}

/// Deliveries by status.
#[derive(Debug, Default, Object, Serialize, Deserialize)]
pub struct DeliveryCounts {
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    pub retrying: i64,
    pub failed: i64,
    pub bounced: i64,
    pub suppressed: i64,
    pub cancelled: i64,
}

impl DeliveryCounts {
    fn add(&mut self, status: &str, n: i64) {
        match status {
            "queued" => self.queued += n,
            "sending" => self.sending += n,
            "sent" => self.sent += n,
            "retrying" => self.retrying += n,
            "failed" => self.failed += n,
            "bounced" => self.bounced += n,
            "suppressed" => self.suppressed += n,
            "cancelled" => self.cancelled += n,
            _ => {}
        }
    }
}

/// A broadcast.
#[derive(Debug, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Broadcast {
    pub id: Uuid,
    pub email_account_id: Uuid,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    /// `draft`, `scheduled`, `sending`, `sent`, `partially_failed`, `failed` or `cancelled`.
    pub status: String,
    pub recipients: Vec<String>,
    pub team_member_ids: Vec<Uuid>,
    pub project_id: Option<Uuid>,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Deliveries created when it was sent (one per distinct address).
    pub recipient_count: i32,
    pub counts: DeliveryCounts,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl poem_openapi::types::Example for Broadcast {
    fn example() -> Self {
        Self {
            id: uuid::Uuid::from_u128(0x0192_5f3a_7c1e_7b2d_9a41_3e6f_0c8d_2b17),
            email_account_id: uuid::Uuid::from_u128(0x0192_5f3a_6b00_7d11_8e22_4f33_5a44_6b55),
            subject: "Office closed on Friday".into(),
            body_text: "Hello, the office is closed this Friday.".into(),
            body_html: None,
            status: "sending".into(),
            recipients: vec!["ada@example.com".into()],
            team_member_ids: vec![uuid::Uuid::from_u128(
                0x0192_5f3a_8d2f_7c3e_ab52_4f70_1d9e_3c28,
            )],
            project_id: None,
            scheduled_for: None,
            started_at: Some(
                chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
            ),
            finished_at: None,
            recipient_count: 2,
            counts: DeliveryCounts {
                sent: 1,
                queued: 1,
                ..DeliveryCounts::default()
            },
            created_by: Some(uuid::Uuid::from_u128(
                0x0192_5f3a_8d2f_7c3e_ab52_4f70_1d9e_3c28,
            )),
            created_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
            updated_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
        }
    }
}

impl Broadcast {
    fn new(b: broadcasts::Broadcast, counts: DeliveryCounts) -> Self {
        Self {
            id: b.id,
            email_account_id: b.email_account_id,
            subject: b.subject,
            body_text: b.body_text,
            body_html: b.body_html,
            status: b.status,
            recipients: b.recipient_emails,
            team_member_ids: b.team_member_ids,
            project_id: b.project_id,
            scheduled_for: b.scheduled_for,
            started_at: b.started_at,
            finished_at: b.finished_at,
            recipient_count: b.recipient_count,
            counts,
            created_by: b.created_by,
            created_at: b.created_at,
            updated_at: b.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct BroadcastList {
    pub items: Vec<Broadcast>,
    pub next_cursor: Option<String>,
}

/// One entry of a delivery's history.
#[derive(Debug, Object)]
pub struct DeliveryEvent {
    pub status: String,
    pub detail: Option<String>,
    pub at: DateTime<Utc>,
}

/// One message to one recipient.
#[derive(Debug, Object)]
pub struct Delivery {
    pub id: Uuid,
    pub recipient: String,
    /// `queued`, `sending`, `sent`, `retrying`, `failed`, `bounced`, `suppressed` or
    /// `cancelled`.
    pub status: String,
    /// The provider's id of the sent message (SMTP and Outlook: its `Message-ID`).
    pub provider_message_id: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub history: Vec<DeliveryEvent>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct DeliveryList {
    pub items: Vec<Delivery>,
    pub next_cursor: Option<String>,
}

/// `POST /email-suppressions`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewSuppression {
    pub email: String,
}

impl poem_openapi::types::Example for NewSuppression {
    fn example() -> Self {
        Self {
            email: "bounced@example.com".into(),
        }
    }
}

/// An address the organization does not email.
#[derive(Debug, Object)]
pub struct Suppression {
    pub id: Uuid,
    pub email: String,
    /// `unsubscribed`, `hard_bounce`, `complaint` or `manual`.
    pub reason: String,
    pub source_broadcast_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<deliveries::Suppression> for Suppression {
    fn from(s: deliveries::Suppression) -> Self {
        Self {
            id: s.id,
            email: s.email,
            reason: s.reason,
            source_broadcast_id: s.source_broadcast_id,
            created_at: s.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct SuppressionList {
    pub items: Vec<Suppression>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum BroadcastCreated {
    /// The broadcast (`draft` or `scheduled`).
    #[oai(status = 201)]
    Created(
        Json<Broadcast>,
        /// `true` when this is the stored response of an earlier request with the same
        /// `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

#[derive(ApiResponse)]
pub enum SuppressionCreated {
    /// The entry (the existing one if the address was already suppressed).
    #[oai(status = 201)]
    Created(Json<Suppression>),
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "broadcast_not_found",
        detail: "No broadcast with this id in the organization.".into(),
    }
}

async fn load(
    conn: &mut sqlx::PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> Result<Broadcast, ApiError> {
    let broadcast = broadcasts::get(conn, organization_id, id)
        .await?
        .ok_or_else(not_found)?;
    let mut counts = DeliveryCounts::default();
    for (_, status, n) in broadcasts::counts(conn, organization_id, &[id]).await? {
        counts.add(&status, n);
    }
    Ok(Broadcast::new(broadcast, counts))
}

fn subject(raw: &str) -> Result<String, zoark_core::identity::Invalid> {
    let subject = raw.trim();
    if subject.is_empty() || subject.chars().count() > 998 {
        return Err(zoark_core::identity::Invalid(
            "must be 1 to 998 characters".into(),
        ));
    }
    if subject.chars().any(char::is_control) {
        return Err(zoark_core::identity::Invalid(
            "must be one line without control characters".into(),
        ));
    }
    Ok(subject.to_owned())
}

/// Parses and checks a new broadcast against the organization's accounts, team and projects.
async fn parse(
    conn: &mut sqlx::PgConnection,
    granted: &Granted<ManageBroadcasts>,
    body: &NewBroadcastRequest,
) -> Result<NewBroadcast, ApiError> {
    let mut fields = Fields::default();
    let subject = fields.take("subject", subject(&body.subject));
    if body.body_text.trim().is_empty() || body.body_text.len() > 1_000_000 {
        fields.reject("body_text", "must be 1 byte to 1 MB of text");
    }
    if body.body_html.as_ref().is_some_and(|h| h.len() > 2_000_000) {
        fields.reject("body_html", "must be at most 2 MB");
    }
    let raw_recipients = body.recipients.as_deref().unwrap_or_default();
    let team_member_ids = body.team_member_ids.clone().unwrap_or_default();
    if raw_recipients.len() > MAX_RECIPIENTS {
        fields.reject("recipients", "at most 50,000 addresses per broadcast");
    }
    let mut recipients = Vec::with_capacity(raw_recipients.len());
    for (i, raw) in raw_recipients.iter().enumerate().take(MAX_RECIPIENTS) {
        if let Some(address) = fields.take(&format!("recipients[{i}]"), EmailAddress::parse(raw)) {
            recipients.push(address.to_string());
        }
    }
    if team_member_ids.len() > MAX_TEAM_MEMBERS {
        fields.reject(
            "team_member_ids",
            "at most 10,000 team members per broadcast",
        );
    }
    if raw_recipients.is_empty() && team_member_ids.is_empty() && body.project_id.is_none() {
        fields.reject(
            "recipients",
            "name recipients, team_member_ids or a project_id",
        );
    }
    if let Some(at) = body.scheduled_for {
        let now = Utc::now();
        if at <= now || at > now + chrono::Duration::days(366) {
            fields.reject("scheduled_for", "must be in the future, within a year");
        }
    }
    let organization_id = granted.organization_id();
    if email_accounts::get(conn, granted, body.email_account_id)
        .await?
        .is_none()
    {
        fields.reject(
            "email_account_id",
            "no such email account in the organization",
        );
    }
    if team_member_ids.len() <= MAX_TEAM_MEMBERS {
        let unknown =
            broadcasts::unknown_team_members(conn, organization_id, &team_member_ids).await?;
        if !unknown.is_empty() {
            let ids: Vec<String> = unknown.iter().map(Uuid::to_string).collect();
            fields.reject(
                "team_member_ids",
                &format!("not team members of the organization: {}", ids.join(", ")),
            );
        }
    }
    if let Some(project) = body.project_id
        && !broadcasts::project_exists(conn, organization_id, project).await?
    {
        fields.reject("project_id", "no such project in the organization");
    }
    fields.finish()?;
    let subject =
        subject.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("parsed subject missing")))?;
    Ok(NewBroadcast {
        email_account_id: body.email_account_id,
        project_id: body.project_id,
        subject,
        body_text: body.body_text.clone(),
        body_html: body.body_html.clone().filter(|h| !h.trim().is_empty()),
        recipient_emails: recipients,
        team_member_ids,
        scheduled_for: body.scheduled_for,
    })
}

fn not_sendable(status: &str) -> ApiError {
    ApiError::Conflict {
        code: "broadcast_not_sendable",
        detail: format!(
            "The broadcast is {status}; only a draft or a scheduled broadcast can be sent."
        ),
    }
}

#[OpenApi(tag = "ApiTags::Broadcasts", prefix_path = "/api/v1")]
impl BroadcastsApi {
    /// Create a broadcast
    ///
    /// A `draft` (send it with `POST /broadcasts/{id}/send`), or `scheduled` when
    /// `scheduled_for` is set: the job engine sends it then. Recipients are the union of
    /// `recipients`, `team_member_ids` and the members of `project_id`, each address once;
    /// suppressed addresses are skipped at sending. `Idempotency-Key` replays the first
    /// response of a retried request. Needs `broadcasts.manage` (manager).
    #[oai(
        path = "/broadcasts",
        method = "post",
        operation_id = "broadcasts_create"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewBroadcastRequest>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<BroadcastCreated, ApiError> {
        let granted = auth.grant::<ManageBroadcasts>(&state).await?;
        let body = body.0;
        let key =
            idempotency::Key::parse(idempotency_key.0.as_deref(), "broadcasts_create", &body)?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<Broadcast>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(BroadcastCreated::Created(Json(replay), Some(true)));
        }
        let new = parse(&mut tx, &granted, &body).await?;
        let id = broadcasts::insert(&mut tx, &granted, &new).await?;
        if let Some(at) = new.scheduled_for {
            let job = enqueue(
                &mut tx,
                &SendBroadcast { broadcast_id: id },
                Opts::organization(organization_id).run_at(at),
            )
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
            broadcasts::set_job(&mut tx, organization_id, id, Some(job.id)).await?;
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("broadcast.created", &client(req, &state.settings)).on("broadcast", id),
        )
        .await?;
        let broadcast = load(&mut tx, organization_id, id).await?;
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &broadcast).await?;
        }
        tx.commit().await?;
        Ok(BroadcastCreated::Created(Json(broadcast), None))
    }

    /// List broadcasts
    ///
    /// Newest first, optionally of one status. Needs `broadcasts.read` (member).
    #[oai(path = "/broadcasts", method = "get", operation_id = "broadcasts_list")]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// `draft`, `scheduled`, `sending`, `sent`, `partially_failed`, `failed` or `cancelled`.
        status: Query<Option<String>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<BroadcastList>, ApiError> {
        let granted = auth.grant::<ReadBroadcasts>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        if let Some(s) = status.0.as_deref()
            && !matches!(
                s,
                "draft"
                    | "scheduled"
                    | "sending"
                    | "sent"
                    | "partially_failed"
                    | "failed"
                    | "cancelled"
            )
        {
            return Err(ApiError::InvalidParameter(FieldError {
                field: "status".into(),
                message: "not a broadcast status".into(),
            }));
        }
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = broadcasts::list(
            &mut tx,
            &granted,
            &broadcasts::Filter {
                status: status.0,
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        let (rows, next_cursor) = page.page(rows, |b| b.id);
        let ids: Vec<Uuid> = rows.iter().map(|b| b.id).collect();
        let mut counts: HashMap<Uuid, DeliveryCounts> = HashMap::new();
        for (id, status, n) in broadcasts::counts(&mut tx, organization_id, &ids).await? {
            counts.entry(id).or_default().add(&status, n);
        }
        tx.commit().await?;
        let items = rows
            .into_iter()
            .map(|b| {
                let c = counts.remove(&b.id).unwrap_or_default();
                Broadcast::new(b, c)
            })
            .collect();
        Ok(Json(BroadcastList { items, next_cursor }))
    }

    /// Get a broadcast
    ///
    /// With its deliveries counted by status. Needs `broadcasts.read` (member).
    #[oai(
        path = "/broadcasts/:id",
        method = "get",
        operation_id = "broadcasts_get"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<Broadcast>, ApiError> {
        let granted = auth.grant::<ReadBroadcasts>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let broadcast = load(&mut tx, granted.organization_id(), id.0).await?;
        tx.commit().await?;
        Ok(Json(broadcast))
    }

    /// Send a broadcast now
    ///
    /// A draft or scheduled broadcast becomes `sending`: in one transaction, one delivery per
    /// recipient and one `email.send` job per unsuppressed delivery. 409
    /// `broadcast_not_sendable` once it was sent or cancelled, `email_account_unusable` when
    /// its account must be reconnected or is disabled; 422 `no_recipients` when its recipients
    /// resolve to no address. Needs `broadcasts.manage` (manager). Audited as
    /// `broadcast.sent`.
    #[oai(
        path = "/broadcasts/:id/send",
        method = "post",
        operation_id = "broadcasts_send"
    )]
    async fn send(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<Json<Broadcast>, ApiError> {
        let granted = auth.grant::<ManageBroadcasts>(&state).await?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let broadcast = broadcasts::lock(&mut tx, organization_id, id.0)
            .await?
            .ok_or_else(not_found)?;
        if !matches!(broadcast.status.as_str(), "draft" | "scheduled") {
            return Err(not_sendable(&broadcast.status));
        }
        let account = email_accounts::get(&mut tx, &granted, broadcast.email_account_id)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("broadcast without its account")))?;
        if account.status != AccountStatus::Active {
            return Err(ApiError::Conflict {
                code: "email_account_unusable",
                detail: format!(
                    "The sending account is {}; reconnect, fix or replace it first.",
                    account.status.as_str().replace('_', " ")
                ),
            });
        }
        if let Some(job) = broadcast.job_id {
            cancel_waiting(&mut tx, organization_id, &[job]).await?;
        }
        let fanned = send_broadcast(&mut tx, &broadcast)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        if fanned.queued + fanned.suppressed == 0 {
            return Err(ApiError::Validation(vec![FieldError {
                field: "recipients".into(),
                message: "the broadcast's recipients resolve to no address".into(),
            }]));
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("broadcast.sent", &client(req, &state.settings))
                .on("broadcast", broadcast.id)
                .with(
                    serde_json::json!({ "queued": fanned.queued, "suppressed": fanned.suppressed }),
                ),
        )
        .await?;
        let broadcast = load(&mut tx, organization_id, broadcast.id).await?;
        tx.commit().await?;
        Ok(Json(broadcast))
    }

    /// Cancel a broadcast
    ///
    /// A draft or scheduled broadcast is not sent; a sending one stops: its queued and
    /// retrying deliveries become `cancelled` (messages already handed to the provider are
    /// not recalled). 409 `broadcast_finished` once it finished. Needs `broadcasts.manage`
    /// (manager). Audited as `broadcast.cancelled`.
    #[oai(
        path = "/broadcasts/:id/cancel",
        method = "post",
        operation_id = "broadcasts_cancel"
    )]
    async fn cancel(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<Json<Broadcast>, ApiError> {
        let granted = auth.grant::<ManageBroadcasts>(&state).await?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let broadcast = broadcasts::lock(&mut tx, organization_id, id.0)
            .await?
            .ok_or_else(not_found)?;
        if !matches!(broadcast.status.as_str(), "draft" | "scheduled" | "sending") {
            return Err(ApiError::Conflict {
                code: "broadcast_finished",
                detail: format!("The broadcast is already {}.", broadcast.status),
            });
        }
        let jobs = broadcasts::cancel(&mut tx, &broadcast).await?;
        let cancelled = cancel_waiting(&mut tx, organization_id, &jobs).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("broadcast.cancelled", &client(req, &state.settings))
                .on("broadcast", broadcast.id)
                .with(serde_json::json!({ "previous_status": broadcast.status, "jobs_cancelled": cancelled })),
        )
        .await?;
        let broadcast = load(&mut tx, organization_id, broadcast.id).await?;
        tx.commit().await?;
        Ok(Json(broadcast))
    }

    /// List a broadcast's deliveries
    ///
    /// Oldest first, optionally of one status, each with its timestamped history. Needs
    /// `broadcasts.read` (member).
    #[oai(
        path = "/broadcasts/:id/deliveries",
        method = "get",
        operation_id = "broadcasts_deliveries"
    )]
    async fn deliveries(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// `queued`, `sending`, `sent`, `retrying`, `failed`, `bounced`, `suppressed` or
        /// `cancelled`.
        status: Query<Option<String>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<DeliveryList>, ApiError> {
        let granted = auth.grant::<ReadBroadcasts>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        if let Some(s) = status.0.as_deref()
            && !matches!(
                s,
                "queued"
                    | "sending"
                    | "sent"
                    | "retrying"
                    | "failed"
                    | "bounced"
                    | "suppressed"
                    | "cancelled"
            )
        {
            return Err(ApiError::InvalidParameter(FieldError {
                field: "status".into(),
                message: "not a delivery status".into(),
            }));
        }
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if broadcasts::get(&mut tx, granted.organization_id(), id.0)
            .await?
            .is_none()
        {
            return Err(not_found());
        }
        // The cursor is the last id of the previous page; this list runs oldest first.
        let rows = deliveries::list(
            &mut tx,
            &granted,
            id.0,
            status.0.as_deref(),
            page.before_id,
            page.fetch(),
        )
        .await?;
        let (rows, next_cursor) = page.page(rows, |d| d.id);
        let ids: Vec<Uuid> = rows.iter().map(|d| d.id).collect();
        let mut history: HashMap<Uuid, Vec<DeliveryEvent>> = HashMap::new();
        for e in deliveries::history(&mut tx, &granted, &ids).await? {
            history
                .entry(e.delivery_id)
                .or_default()
                .push(DeliveryEvent {
                    status: e.status,
                    detail: e.detail,
                    at: e.occurred_at,
                });
        }
        tx.commit().await?;
        let items = rows
            .into_iter()
            .map(|d| Delivery {
                history: history.remove(&d.id).unwrap_or_default(),
                id: d.id,
                recipient: d.recipient,
                status: d.status,
                provider_message_id: d.provider_message_id,
                attempts: d.attempts,
                last_error: d.last_error,
                sent_at: d.sent_at,
                created_at: d.created_at,
                updated_at: d.updated_at,
            })
            .collect();
        Ok(Json(DeliveryList { items, next_cursor }))
    }

    /// List suppressed addresses
    ///
    /// Addresses the organization does not email (unsubscribed, bounced, added by hand),
    /// newest first. Needs `broadcasts.read` (member).
    #[oai(
        path = "/email-suppressions",
        method = "get",
        operation_id = "suppressions_list"
    )]
    async fn suppressions(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<SuppressionList>, ApiError> {
        let granted = auth.grant::<ReadBroadcasts>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows =
            deliveries::suppressions(&mut tx, &granted, page.before_id, page.fetch()).await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |s| s.id);
        Ok(Json(SuppressionList {
            items: rows.into_iter().map(Suppression::from).collect(),
            next_cursor,
        }))
    }

    /// Suppress an address
    ///
    /// Broadcasts skip it from now on, including deliveries already queued. Needs
    /// `broadcasts.manage` (manager). Audited as `email_suppression.created`.
    #[oai(
        path = "/email-suppressions",
        method = "post",
        operation_id = "suppressions_create"
    )]
    async fn suppress(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewSuppression>,
    ) -> Result<SuppressionCreated, ApiError> {
        let granted = auth.grant::<ManageBroadcasts>(&state).await?;
        let mut fields = Fields::default();
        let email = fields.take("email", EmailAddress::parse(&body.0.email));
        fields.finish()?;
        let email =
            email.ok_or_else(|| ApiError::Internal(anyhow::anyhow!("parsed email missing")))?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let entry = deliveries::suppress(
            &mut tx,
            granted.organization_id(),
            email.as_str(),
            "manual",
            None,
        )
        .await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("email_suppression.created", &client(req, &state.settings))
                .on("email_suppression", entry.id),
        )
        .await?;
        tx.commit().await?;
        Ok(SuppressionCreated::Created(Json(entry.into())))
    }

    /// Remove a suppressed address
    ///
    /// The address may be emailed again. Needs `broadcasts.manage` (manager). Audited as
    /// `email_suppression.deleted`.
    #[oai(
        path = "/email-suppressions/:id",
        method = "delete",
        operation_id = "suppressions_delete"
    )]
    async fn unsuppress(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageBroadcasts>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !deliveries::unsuppress(&mut tx, &granted, id.0).await? {
            return Err(ApiError::NotFound {
                code: "email_suppression_not_found",
                detail: "No suppressed address with this id in the organization.".into(),
            });
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("email_suppression.deleted", &client(req, &state.settings))
                .on("email_suppression", id.0),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Unsubscribe page
    ///
    /// The link in every broadcast's footer: a page with one button that confirms (a GET
    /// never unsubscribes, so that link scanners cannot). Public; the token is signed.
    #[oai(
        path = "/unsubscribe/:token",
        method = "get",
        operation_id = "unsubscribe_page"
    )]
    async fn unsubscribe_page(
        &self,
        state: Data<&AppState>,
        token: Path<String>,
    ) -> Result<Html<String>, ApiError> {
        deliveries::unsubscribe_delivery(&state.settings.encryption_key, &token.0)
            .ok_or_else(bad_link)?;
        Ok(Html(format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribe</title></head>\
             <body><form method=\"post\" action=\"/api/v1/unsubscribe/{}\">\
             <input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">\
             <p>Stop receiving these emails?</p><button type=\"submit\">Unsubscribe</button>\
             </form></body></html>",
            token.0
        )))
    }

    /// One-click unsubscribe
    ///
    /// RFC 8058: mail clients POST `List-Unsubscribe=One-Click` here; the recipient is added
    /// to the sending organization's suppression list. Public; the token is signed.
    /// Idempotent.
    #[oai(
        path = "/unsubscribe/:token",
        method = "post",
        operation_id = "unsubscribe"
    )]
    async fn unsubscribe(
        &self,
        state: Data<&AppState>,
        token: Path<String>,
    ) -> Result<Html<String>, ApiError> {
        let delivery = deliveries::unsubscribe_delivery(&state.settings.encryption_key, &token.0)
            .ok_or_else(bad_link)?;
        let mut tx = tenant::system(&state.pool).await?;
        let recipient = deliveries::recipient(&mut tx, delivery)
            .await?
            .ok_or_else(bad_link)?;
        deliveries::suppress(
            &mut tx,
            recipient.organization_id,
            &recipient.email,
            "unsubscribed",
            recipient.broadcast_id,
        )
        .await?;
        tx.commit().await?;
        Ok(Html(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Unsubscribed</title></head>\
             <body><p>You are unsubscribed and will not receive these emails again.</p></body></html>"
                .into(),
        ))
    }
}

fn bad_link() -> ApiError {
    ApiError::NotFound {
        code: "unsubscribe_link_invalid",
        detail: "This unsubscribe link is not valid.".into(),
    }
}
