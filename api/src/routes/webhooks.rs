//! `/api/v1/webhooks`: the organization's endpoints for event notifications, Stripe's way. The
//! signing secret is generated here, sealed at rest and shown only when created or rotated;
//! deliveries are made by the worker's `webhook.deliver` job and listed with every attempt.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::MaybeUndefined,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{Granted, ManageWebhooks, ReadWebhooks},
    crypto,
    db::{
        audit::{self, Entry},
        tenant,
        webhooks::{self, Attempt, Delivery},
    },
    identity::Invalid,
    webhooks::{AddressPolicy, EndpointUrl, EventType, new_secret, parse_subscriptions},
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, Fields},
    idempotency,
    json::JsonBody,
    pagination::PageRequest,
    routes::{ApiTags, NoContent, entity_tag, none_match, organization::optional},
    state::AppState,
};

pub struct WebhooksApi;

/// `POST /webhooks`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewWebhook {
    /// Where events are POSTed: an `https://` URL of a public host.
    pub url: String,
    /// `task.status_changed`, `approval.completed`, `broadcast.finished`, `job.discarded`, or
    /// `["*"]` for every event type (including ones added later).
    pub event_types: Vec<String>,
    /// What the endpoint is for (at most 500 characters).
    pub description: Option<String>,
    /// Default `true`; a disabled endpoint receives nothing.
    pub enabled: Option<bool>,
}

impl poem_openapi::types::Example for NewWebhook {
    fn example() -> Self {
        Self {
            url: "https://hooks.example.com/zoark".into(),
            event_types: vec!["task.status_changed".into(), "approval.completed".into()],
            description: Some("Sync to the ERP".into()),
            enabled: Some(true),
        }
    }
}

/// `PATCH /webhooks/{id}`: absent fields stay; `description: null` clears it.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct WebhookPatch {
    #[serde(default)]
    pub url: MaybeUndefined<String>,
    #[serde(default)]
    pub event_types: MaybeUndefined<Vec<String>>,
    #[serde(default)]
    pub description: MaybeUndefined<String>,
    #[serde(default)]
    pub enabled: MaybeUndefined<bool>,
}

impl poem_openapi::types::Example for WebhookPatch {
    fn example() -> Self {
        Self {
            url: MaybeUndefined::Undefined,
            event_types: MaybeUndefined::Value(vec!["approval.completed".into()]),
            description: MaybeUndefined::Null,
            enabled: MaybeUndefined::Value(false),
        }
    }
}

impl From<NewWebhook> for WebhookPatch {
    fn from(n: NewWebhook) -> Self {
        Self {
            url: MaybeUndefined::Value(n.url),
            event_types: MaybeUndefined::Value(n.event_types),
            description: n
                .description
                .map_or(MaybeUndefined::Undefined, MaybeUndefined::Value),
            enabled: n
                .enabled
                .map_or(MaybeUndefined::Undefined, MaybeUndefined::Value),
        }
    }
}

/// An endpoint (its signing secret is never shown again after creation or rotation).
#[derive(Debug, Clone, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Webhook {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl poem_openapi::types::Example for Webhook {
    fn example() -> Self {
        Self {
            id: uuid::Uuid::from_u128(0x0192_5f3a_7c1e_7b2d_9a41_3e6f_0c8d_2b17),
            url: "https://hooks.example.com/zoark".into(),
            description: Some("Sync to the ERP".into()),
            event_types: vec!["task.status_changed".into(), "approval.completed".into()],
            enabled: true,
            created_by: Some(uuid::Uuid::from_u128(
                0x0192_5f3a_6b00_7d11_8e22_4f33_5a44_6b55,
            )),
            created_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
            updated_at: chrono::DateTime::from_timestamp(1_795_694_400, 0).unwrap_or_default(),
        }
    }
}

impl From<webhooks::Endpoint> for Webhook {
    fn from(e: webhooks::Endpoint) -> Self {
        Self {
            id: e.id,
            url: e.url,
            description: e.description,
            event_types: e.event_types,
            enabled: e.enabled,
            created_by: e.created_by,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// An endpoint with its signing secret: shown once, on creation and on rotation.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct WebhookWithSecret {
    #[oai(flatten)]
    #[serde(flatten)]
    pub webhook: Webhook,
    /// `whsec_…`: verify each delivery's `Zoark-Signature` with it. Store it now; it is never
    /// shown again.
    pub secret: String,
}

/// What an idempotent create stores for replay: the secret sealed, never in clear.
#[derive(Serialize, Deserialize)]
struct StoredCreate {
    webhook: Webhook,
    sealed_secret: String,
}

#[derive(Debug, Object)]
pub struct WebhookList {
    pub items: Vec<Webhook>,
    pub next_cursor: Option<String>,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Object, Serialize)]
pub struct DeliveryAttempt {
    /// 1 for the first.
    pub attempt: i32,
    /// The endpoint's HTTP status; absent when no answer came (timeout, refused connection).
    pub response_status: Option<i16>,
    /// The start of the endpoint's answer (at most 2000 characters).
    pub response_body_excerpt: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub created_at: DateTime<Utc>,
}

impl From<Attempt> for DeliveryAttempt {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            response_status: a.response_status,
            response_body_excerpt: a.response_body_excerpt,
            error: a.error,
            duration_ms: a.duration_ms,
            created_at: a.created_at,
        }
    }
}

/// One event sent to one endpoint, with every attempt.
#[derive(Debug, Object, Serialize)]
pub struct WebhookDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    /// The event's id, shared by its deliveries to every endpoint (`Zoark-Event-Id`).
    pub event_id: Uuid,
    pub event_type: String,
    /// The JSON body sent: `{id, type, created, organization_id, data}`.
    pub payload: serde_json::Value,
    /// `pending`, `retrying`, `succeeded` or `failed` (final).
    pub status: String,
    pub attempts: i32,
    /// The last attempt's HTTP status.
    pub response_status: Option<i16>,
    pub response_body_excerpt: Option<String>,
    pub last_error: Option<String>,
    /// When the next attempt runs (`pending` and `retrying`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    /// The `webhook.deliver` job (see `/api/v1/jobs/{id}`).
    pub job_id: Option<Uuid>,
    pub history: Vec<DeliveryAttempt>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

fn delivery(d: Delivery, history: Vec<DeliveryAttempt>) -> WebhookDelivery {
    WebhookDelivery {
        id: d.id,
        webhook_id: d.webhook_id,
        event_id: d.event_id,
        event_type: d.event_type,
        payload: d.payload,
        status: d.status,
        attempts: d.attempts,
        response_status: d.response_status,
        response_body_excerpt: d.response_body_excerpt,
        last_error: d.last_error,
        next_attempt_at: d.next_attempt_at,
        delivered_at: d.delivered_at,
        job_id: d.job_id,
        history,
        created_at: d.created_at,
        updated_at: d.updated_at,
    }
}

#[derive(Debug, Object)]
pub struct WebhookDeliveryList {
    pub items: Vec<WebhookDelivery>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum WebhookCreated {
    /// The endpoint with its signing secret, shown this once.
    #[oai(status = 201)]
    Created(
        Json<WebhookWithSecret>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

#[derive(ApiResponse)]
pub enum WebhookFound {
    /// The endpoint, with its entity tag.
    #[oai(status = 200)]
    Ok(Json<Box<Webhook>>, #[oai(header = "ETag")] String),
    /// `If-None-Match` named the current entity tag: nothing changed.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

#[derive(ApiResponse)]
pub enum PingQueued {
    /// The ping is queued; its delivery (status `pending`) is in the endpoint's log.
    #[oai(status = 202)]
    Accepted(
        Json<Box<WebhookDelivery>>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

fn description(raw: &str) -> Result<String, Invalid> {
    let v = raw.trim();
    if v.is_empty() || v.chars().count() > 500 || v.chars().any(|c| c.is_control() && c != '\n') {
        Err(Invalid("must be 1 to 500 characters".into()))
    } else {
        Ok(v.to_owned())
    }
}

/// Parses a patch (a create is a patch with every given field set).
fn parse(
    body: WebhookPatch,
    creating: bool,
    policy: AddressPolicy,
) -> Result<webhooks::Fields, ApiError> {
    let mut fields = Fields::default();
    let mut out = webhooks::Fields::default();
    match body.url {
        MaybeUndefined::Value(url) => {
            out.url = fields
                .take("url", EndpointUrl::parse(&url, &policy))
                .map(|u| u.as_str().to_owned());
        }
        MaybeUndefined::Null => fields.reject("url", "cannot be null"),
        MaybeUndefined::Undefined if creating => fields.reject("url", "is required"),
        MaybeUndefined::Undefined => {}
    }
    match body.event_types {
        MaybeUndefined::Value(types) => {
            out.event_types = fields.take("event_types", parse_subscriptions(&types));
        }
        MaybeUndefined::Null => fields.reject("event_types", "cannot be null"),
        MaybeUndefined::Undefined if creating => fields.reject("event_types", "is required"),
        MaybeUndefined::Undefined => {}
    }
    out.description = optional(&mut fields, "description", body.description, description);
    match body.enabled {
        MaybeUndefined::Value(enabled) => out.enabled = Some(enabled),
        MaybeUndefined::Null => fields.reject("enabled", "cannot be null"),
        MaybeUndefined::Undefined => {}
    }
    fields.finish()?;
    Ok(out)
}

/// So that handlers emitting events (`zoark_jobs::webhooks::emit`) can use `?`: a failure to
/// record an event is a database failure, a 500.
impl From<zoark_jobs::webhooks::EmitError> for ApiError {
    fn from(e: zoark_jobs::webhooks::EmitError) -> Self {
        Self::Internal(e.into())
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "webhook_not_found",
        detail: "No webhook endpoint with this id in the organization.".into(),
    }
}

/// `secret` sealed for webhook `id` of the organization.
fn seal(
    state: &AppState,
    organization_id: Uuid,
    id: Uuid,
    secret: &str,
) -> Result<Vec<u8>, ApiError> {
    let binding = crypto::Binding::new(webhooks::SECRET, organization_id, id);
    crypto::seal_bound(&state.settings.encryption_key, secret.as_bytes(), &binding)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("sealing a webhook secret: {e}")))
}

fn policy(state: &AppState) -> AddressPolicy {
    AddressPolicy::new(&state.settings.outbound, &state.settings.webhooks)
}

/// The deliveries with their attempts.
async fn with_history<P>(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<P>,
    rows: Vec<Delivery>,
) -> Result<Vec<WebhookDelivery>, ApiError> {
    let ids: Vec<Uuid> = rows.iter().map(|d| d.id).collect();
    let mut attempts: HashMap<Uuid, Vec<DeliveryAttempt>> = HashMap::new();
    for a in webhooks::attempts(conn, proof, &ids).await? {
        attempts.entry(a.delivery_id).or_default().push(a.into());
    }
    Ok(rows
        .into_iter()
        .map(|d| {
            let history = attempts.remove(&d.id).unwrap_or_default();
            delivery(d, history)
        })
        .collect())
}

fn delivery_status(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s @ ("pending" | "retrying" | "succeeded" | "failed")) => Ok(Some(s.to_owned())),
        Some(_) => Err(ApiError::InvalidParameter(crate::error::FieldError {
            field: "status".into(),
            message: "must be pending, retrying, succeeded or failed".into(),
        })),
    }
}

fn event_type_param(raw: Option<String>) -> Result<Option<String>, ApiError> {
    match raw.as_deref().filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(s) => s
            .parse::<EventType>()
            .map(|e| Some(e.as_str().to_owned()))
            .map_err(|e| {
                ApiError::InvalidParameter(crate::error::FieldError {
                    field: "event_type".into(),
                    message: e.0,
                })
            }),
    }
}

#[OpenApi(tag = "ApiTags::Webhooks", prefix_path = "/api/v1/webhooks")]
impl WebhooksApi {
    /// Create a webhook endpoint
    ///
    /// The answer carries the signing secret (`whsec_…`) this once: store it to verify the
    /// `Zoark-Signature` header of each delivery. `url` must be `https://` and name a public
    /// host; `event_types` lists `task.status_changed`, `approval.completed`,
    /// `broadcast.finished`, `job.discarded`, or is `["*"]`. `Idempotency-Key` replays the
    /// first response (with the same secret). Needs `webhooks.manage` (admin).
    #[oai(path = "/", method = "post", operation_id = "webhooks_create")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewWebhook>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<WebhookCreated, ApiError> {
        let granted = auth.grant::<ManageWebhooks>(&state).await?;
        let body = body.0;
        let key = idempotency::Key::parse(idempotency_key.0.as_deref(), "webhooks_create", &body)?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<StoredCreate>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            let secret = crypto::open_text(&state.settings.encryption_key, &replay.sealed_secret)
                .map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("opening a stored secret: {e}"))
            })?;
            return Ok(WebhookCreated::Created(
                Json(WebhookWithSecret {
                    webhook: replay.webhook,
                    secret: String::from_utf8_lossy(&secret).into_owned(),
                }),
                Some(true),
            ));
        }
        let fields = parse(body.into(), true, policy(&state))?;
        let secret = new_secret();
        let id = Uuid::now_v7();
        let sealed = seal(&state, organization_id, id, &secret)?;
        webhooks::insert(&mut tx, &granted, id, &fields, &sealed).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("webhook.created", &client(req, &state.settings)).on("webhook", id),
        )
        .await?;
        let webhook: Webhook = webhooks::get(&mut tx, &granted, id)
            .await?
            .ok_or_else(not_found)?
            .into();
        if let Some(key) = &key {
            let sealed_secret =
                crypto::seal_text(&state.settings.encryption_key, secret.as_bytes()).map_err(
                    |e| ApiError::Internal(anyhow::anyhow!("sealing a webhook secret: {e}")),
                )?;
            let stored = StoredCreate {
                webhook: webhook.clone(),
                sealed_secret,
            };
            key.store(&mut tx, organization_id, 201, &stored).await?;
        }
        tx.commit().await?;
        Ok(WebhookCreated::Created(
            Json(WebhookWithSecret { webhook, secret }),
            None,
        ))
    }

    /// List webhook endpoints
    ///
    /// Newest first; `event_type` keeps the endpoints that receive it (directly or through
    /// `*`), `enabled` filters on the flag. Secrets are never listed. Needs `webhooks.read`
    /// (manager).
    #[oai(path = "/", method = "get", operation_id = "webhooks_list")]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        event_type: Query<Option<String>>,
        enabled: Query<Option<bool>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<WebhookList>, ApiError> {
        let granted = auth.grant::<ReadWebhooks>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let event_type = event_type_param(event_type.0)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = webhooks::list(
            &mut tx,
            &granted,
            &webhooks::Filter {
                event_type,
                enabled: enabled.0,
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |w| w.id);
        Ok(Json(WebhookList {
            items: rows.into_iter().map(Webhook::from).collect(),
            next_cursor,
        }))
    }

    /// Get a webhook endpoint
    ///
    /// Without its secret. With an `ETag`; `If-None-Match` with it answers 304 while nothing
    /// changed. Needs `webhooks.read` (manager).
    #[oai(path = "/:id", method = "get", operation_id = "webhooks_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<WebhookFound, ApiError> {
        let granted = auth.grant::<ReadWebhooks>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let webhook: Webhook = webhooks::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        tx.commit().await?;
        let tag = entity_tag(&webhook);
        if none_match(if_none_match.0.as_deref(), &tag) {
            return Ok(WebhookFound::NotModified(tag));
        }
        Ok(WebhookFound::Ok(Json(Box::new(webhook)), tag))
    }

    /// Change a webhook endpoint
    ///
    /// `url`, `event_types`, `description` (`null` clears it) and `enabled`; absent fields
    /// stay. Deliveries already queued keep their payload and go to the current URL. Needs
    /// `webhooks.manage` (admin).
    #[oai(path = "/:id", method = "patch", operation_id = "webhooks_update")]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<WebhookPatch>,
    ) -> Result<Json<Webhook>, ApiError> {
        let granted = auth.grant::<ManageWebhooks>(&state).await?;
        let fields = parse(body.0, false, policy(&state))?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !webhooks::update(&mut tx, &granted, id.0, &fields).await? {
            return Err(not_found());
        }
        let webhook = webhooks::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Json(webhook.into()))
    }

    /// Delete a webhook endpoint
    ///
    /// Its delivery log goes with it; queued deliveries are dropped. Needs `webhooks.manage`
    /// (admin). Audited as `webhook.deleted`.
    #[oai(path = "/:id", method = "delete", operation_id = "webhooks_delete")]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageWebhooks>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let webhook = webhooks::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        webhooks::delete(&mut tx, &granted, id.0).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("webhook.deleted", &client(req, &state.settings))
                .on("webhook", id.0)
                .with(
                    serde_json::json!({ "url": webhook.url, "event_types": webhook.event_types }),
                ),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Rotate a webhook endpoint's signing secret
    ///
    /// A new `whsec_…` secret replaces the old one at once (deliveries signed from now on use
    /// it) and is shown in this answer only. Needs `webhooks.manage` (admin). Audited as
    /// `webhook.secret_rotated`.
    #[oai(
        path = "/:id/rotate-secret",
        method = "post",
        operation_id = "webhooks_rotate_secret"
    )]
    async fn rotate_secret(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<Json<WebhookWithSecret>, ApiError> {
        let granted = auth.grant::<ManageWebhooks>(&state).await?;
        let secret = new_secret();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let sealed = seal(&state, granted.organization_id(), id.0, &secret)?;
        if !webhooks::set_secret(&mut tx, &granted, id.0, &sealed).await? {
            return Err(not_found());
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("webhook.secret_rotated", &client(req, &state.settings)).on("webhook", id.0),
        )
        .await?;
        let webhook = webhooks::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Json(WebhookWithSecret {
            webhook: webhook.into(),
            secret,
        }))
    }

    /// Send a test event to a webhook endpoint
    ///
    /// Queues a `webhook.test` event (a ping) to this endpoint only, even when it is disabled
    /// or not subscribed to anything else, and answers with the pending delivery; follow it in
    /// `GET /webhooks/{id}/deliveries`. `Idempotency-Key` replays the first answer. Needs
    /// `webhooks.manage` (admin).
    #[oai(path = "/:id/test", method = "post", operation_id = "webhooks_test")]
    async fn test(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// Makes a retried request safe: the same key replays the first answer.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<PingQueued, ApiError> {
        let granted = auth.grant::<ManageWebhooks>(&state).await?;
        let key = idempotency::Key::parse(idempotency_key.0.as_deref(), "webhooks_test", &id.0)?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        webhooks::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        if let Some(key) = &key
            && let Some(replay) = key
                .begin::<serde_json::Value>(&mut tx, organization_id)
                .await?
        {
            let delivery_id = replay["id"]
                .as_str()
                .and_then(|s| s.parse::<Uuid>().ok())
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a stored ping without id")))?;
            let found = current_delivery(&mut tx, &granted, delivery_id).await?;
            tx.commit().await?;
            return Ok(PingQueued::Accepted(Json(Box::new(found)), Some(true)));
        }
        let emitted = zoark_jobs::webhooks::ping(&mut tx, organization_id, id.0).await?;
        let delivery_id = emitted
            .delivery_ids
            .first()
            .copied()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a ping without a delivery")))?;
        let found = current_delivery(&mut tx, &granted, delivery_id).await?;
        if let Some(key) = &key {
            key.store(
                &mut tx,
                organization_id,
                202,
                &serde_json::json!({ "id": delivery_id }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(PingQueued::Accepted(Json(Box::new(found)), None))
    }

    /// List a webhook endpoint's deliveries
    ///
    /// Newest first, each with its status, attempt count, last response and error, and the
    /// history of every attempt. Filter by `status` (`pending`, `retrying`, `succeeded`,
    /// `failed`) or `event_type`. Needs `webhooks.read` (manager).
    #[oai(
        path = "/:id/deliveries",
        method = "get",
        operation_id = "webhooks_deliveries"
    )]
    #[allow(clippy::too_many_arguments)] // one per query parameter: poem-openapi's extractors
    async fn deliveries(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        status: Query<Option<String>>,
        event_type: Query<Option<String>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<WebhookDeliveryList>, ApiError> {
        let granted = auth.grant::<ReadWebhooks>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let filter = webhooks::DeliveryFilter {
            status: delivery_status(status.0)?,
            event_type: event_type_param(event_type.0)?,
            before_id: page.before_id,
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        webhooks::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        let rows = webhooks::deliveries(&mut tx, &granted, id.0, &filter, page.fetch()).await?;
        let (rows, next_cursor) = page.page(rows, |d| d.id);
        let items = with_history(&mut tx, &granted, rows).await?;
        tx.commit().await?;
        Ok(Json(WebhookDeliveryList { items, next_cursor }))
    }
}

/// A delivery as it is now, with its attempts.
async fn current_delivery<P>(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> Result<WebhookDelivery, ApiError> {
    let row = webhooks::delivery(conn, proof, id)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            code: "webhook_delivery_not_found",
            detail: "The delivery no longer exists.".into(),
        })?;
    with_history(conn, proof, vec![row])
        .await?
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a delivery vanished")))
}
