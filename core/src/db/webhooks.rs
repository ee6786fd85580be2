//! Webhook endpoints (the signing secret sealed at rest), their deliveries and every delivery
//! attempt. Emitting an event (rows + jobs) is `zoark_jobs::webhooks::emit`, which uses
//! [`subscribers`] and [`insert_deliveries`].

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageWebhooks, ReadWebhooks};

/// Where signing secrets are sealed (bound to their endpoint: [`crate::crypto::Binding`]).
pub const SECRET: (&str, &str) = ("webhooks", "secret_ciphertext");

/// An endpoint as stored, the secret still sealed.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    pub description: Option<String>,
    pub event_types: Vec<String>,
    pub enabled: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every writable field, parsed; a create writes all of them, a patch the `Some` ones.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub event_types: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// Creates an endpoint with its sealed secret; returns its id.
///
/// # Errors
/// Database errors (the caller supplies `url` and `event_types`).
pub async fn insert(
    conn: &mut PgConnection,
    proof: &Granted<ManageWebhooks>,
    id: Uuid,
    fields: &Fields,
    sealed_secret: &[u8],
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO webhooks (id, organization_id, url, description, event_types,
                              secret_ciphertext, enabled, created_by)
        VALUES ($8, $1, $2, $3, $4, $5, coalesce($6, true), $7)
        RETURNING id
        "#,
        proof.organization_id(),
        fields.url,
        fields.description.clone().flatten(),
        fields.event_types.as_deref(),
        sealed_secret,
        fields.enabled,
        proof.actor().user_id(),
        id,
    )
    .fetch_one(conn)
    .await
}

/// List filter and page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Endpoints that receive this event type (directly or through `*`).
    pub event_type: Option<String>,
    pub enabled: Option<bool>,
    pub before_id: Option<Uuid>,
}

/// The organization's endpoints, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadWebhooks>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Endpoint>> {
    sqlx::query_as!(
        Endpoint,
        r#"
        SELECT id, url, description, event_types, enabled, created_by, created_at, updated_at
        FROM webhooks
        WHERE organization_id = $1
          AND ($2::text IS NULL OR event_types && ARRAY[$2, '*'])
          AND ($3::bool IS NULL OR enabled = $3)
          AND ($4::uuid IS NULL OR id < $4)
        ORDER BY id DESC
        LIMIT $5
        "#,
        proof.organization_id(),
        filter.event_type,
        filter.enabled,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One endpoint of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Endpoint>> {
    sqlx::query_as!(
        Endpoint,
        r#"
        SELECT id, url, description, event_types, enabled, created_by, created_at, updated_at
        FROM webhooks WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Applies the `Some` fields; false when there is no such endpoint.
///
/// # Errors
/// Database errors.
pub async fn update(
    conn: &mut PgConnection,
    proof: &Granted<ManageWebhooks>,
    id: Uuid,
    fields: &Fields,
) -> sqlx::Result<bool> {
    sqlx::query!(
        r#"
        UPDATE webhooks SET
            url = coalesce($3, url),
            description = CASE WHEN $4 THEN $5 ELSE description END,
            event_types = coalesce($6, event_types),
            enabled = coalesce($7, enabled)
        WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
        fields.url,
        fields.description.is_some(),
        fields.description.clone().flatten(),
        fields.event_types.as_deref(),
        fields.enabled,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Replaces the sealed secret; false when there is no such endpoint.
///
/// # Errors
/// Database errors.
pub async fn set_secret(
    conn: &mut PgConnection,
    proof: &Granted<ManageWebhooks>,
    id: Uuid,
    sealed_secret: &[u8],
) -> sqlx::Result<bool> {
    sqlx::query!(
        "UPDATE webhooks SET secret_ciphertext = $3 WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
        sealed_secret,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Removes an endpoint and its delivery log.
///
/// # Errors
/// Database errors.
pub async fn delete(
    conn: &mut PgConnection,
    proof: &Granted<ManageWebhooks>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "DELETE FROM webhooks WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// The enabled endpoints of `organization_id` subscribed to `event_type` (or to `*`).
///
/// # Errors
/// Database errors.
pub async fn subscribers(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_type: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        SELECT id FROM webhooks
        WHERE organization_id = $1 AND enabled AND event_types && ARRAY[$2, '*']
        ORDER BY id
        "#,
        organization_id,
        event_type,
    )
    .fetch_all(conn)
    .await
}

/// One pending delivery to insert.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub job_id: Uuid,
}

/// Inserts the pending deliveries of one event (one payload, one event id).
///
/// # Errors
/// Database errors.
pub async fn insert_deliveries(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_id: Uuid,
    event_type: &str,
    payload: &serde_json::Value,
    deliveries: &[NewDelivery],
) -> sqlx::Result<()> {
    let ids: Vec<Uuid> = deliveries.iter().map(|d| d.id).collect();
    let webhooks: Vec<Uuid> = deliveries.iter().map(|d| d.webhook_id).collect();
    let jobs: Vec<Uuid> = deliveries.iter().map(|d| d.job_id).collect();
    sqlx::query!(
        r#"
        INSERT INTO webhook_deliveries (id, organization_id, webhook_id, event_id, event_type,
                                        payload, job_id, next_attempt_at)
        SELECT d.id, $1, d.webhook_id, $2, $3, $4, d.job_id, now()
        FROM unnest($5::uuid[], $6::uuid[], $7::uuid[]) AS d(id, webhook_id, job_id)
        "#,
        organization_id,
        event_id,
        event_type,
        payload,
        &ids,
        &webhooks,
        &jobs,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// A delivery as the API shows it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub response_status: Option<i16>,
    pub response_body_excerpt: Option<String>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One HTTP attempt of a delivery.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: Uuid,
    pub attempt: i32,
    pub response_status: Option<i16>,
    pub response_body_excerpt: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i32,
    pub created_at: DateTime<Utc>,
}

/// Delivery list filter and page.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub status: Option<String>,
    pub event_type: Option<String>,
    pub before_id: Option<Uuid>,
}

/// An endpoint's deliveries, newest first.
///
/// # Errors
/// Database errors.
pub async fn deliveries(
    conn: &mut PgConnection,
    proof: &Granted<ReadWebhooks>,
    webhook_id: Uuid,
    filter: &DeliveryFilter,
    limit: i64,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as!(
        Delivery,
        r#"
        SELECT id, webhook_id, event_id, event_type, payload, status, attempts, response_status,
               response_body_excerpt, last_error, next_attempt_at, delivered_at, job_id,
               created_at, updated_at
        FROM webhook_deliveries
        WHERE organization_id = $1 AND webhook_id = $2
          AND ($3::text IS NULL OR status = $3)
          AND ($4::text IS NULL OR event_type = $4)
          AND ($5::uuid IS NULL OR id < $5)
        ORDER BY id DESC
        LIMIT $6
        "#,
        proof.organization_id(),
        webhook_id,
        filter.status,
        filter.event_type,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One delivery of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn delivery<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Delivery>> {
    sqlx::query_as!(
        Delivery,
        r#"
        SELECT id, webhook_id, event_id, event_type, payload, status, attempts, response_status,
               response_body_excerpt, last_error, next_attempt_at, delivered_at, job_id,
               created_at, updated_at
        FROM webhook_deliveries WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// The attempts of these deliveries, oldest first.
///
/// # Errors
/// Database errors.
pub async fn attempts<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    delivery_ids: &[Uuid],
) -> sqlx::Result<Vec<Attempt>> {
    sqlx::query_as!(
        Attempt,
        r#"
        SELECT delivery_id, attempt, response_status, response_body_excerpt, error, duration_ms,
               created_at
        FROM webhook_delivery_attempts
        WHERE organization_id = $1 AND delivery_id = ANY($2)
        ORDER BY delivery_id, attempt
        "#,
        proof.organization_id(),
        delivery_ids,
    )
    .fetch_all(conn)
    .await
}

/// What the delivery job needs: the delivery, its endpoint and the sealed secret.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: Uuid,
    pub webhook_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub payload: serde_json::Value,
    pub status: String,
    pub attempts: i32,
    pub url: String,
    pub enabled: bool,
    pub secret_ciphertext: Vec<u8>,
}

/// Loads a delivery for sending (the worker's connection; `None` once the endpoint is deleted).
///
/// # Errors
/// Database errors.
pub async fn target(
    conn: &mut PgConnection,
    organization_id: Uuid,
    delivery_id: Uuid,
) -> sqlx::Result<Option<Target>> {
    sqlx::query_as!(
        Target,
        r#"
        SELECT d.id, d.webhook_id, d.event_id, d.event_type, d.payload, d.status, d.attempts,
               w.url, w.enabled, w.secret_ciphertext
        FROM webhook_deliveries d
        JOIN webhooks w ON w.organization_id = d.organization_id AND w.id = d.webhook_id
        WHERE d.organization_id = $1 AND d.id = $2
        "#,
        organization_id,
        delivery_id,
    )
    .fetch_optional(conn)
    .await
}

/// The outcome of one attempt, as recorded.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    /// `succeeded`, `retrying` or `failed`.
    pub status: &'static str,
    pub response_status: Option<i16>,
    /// At most 2000 characters.
    pub response_body_excerpt: Option<String>,
    pub error: Option<String>,
    pub duration_ms: i32,
    /// When the next attempt runs (`retrying` only).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Records one attempt (numbered after the delivery's previous ones) and the delivery's new
/// state; returns the attempt's number.
///
/// # Errors
/// Database errors.
pub async fn record_attempt(
    conn: &mut PgConnection,
    organization_id: Uuid,
    delivery_id: Uuid,
    outcome: &AttemptOutcome,
) -> sqlx::Result<Option<i32>> {
    sqlx::query_scalar!(
        r#"
        WITH d AS (
            UPDATE webhook_deliveries SET
                status = $3,
                attempts = attempts + 1,
                response_status = $4,
                response_body_excerpt = $5,
                last_error = $6,
                next_attempt_at = $7,
                delivered_at = CASE WHEN $3 = 'succeeded' THEN now() ELSE delivered_at END
            WHERE organization_id = $1 AND id = $2
            RETURNING id, attempts
        )
        INSERT INTO webhook_delivery_attempts (organization_id, delivery_id, attempt,
                                               response_status, response_body_excerpt, error,
                                               duration_ms)
        SELECT $1, d.id, d.attempts, $4, $5, $6, $8 FROM d
        RETURNING attempt
        "#,
        organization_id,
        delivery_id,
        outcome.status,
        outcome.response_status,
        outcome.response_body_excerpt,
        outcome.error,
        outcome.next_attempt_at,
        outcome.duration_ms,
    )
    .fetch_optional(conn)
    .await
}

/// Ends a delivery without an attempt (its endpoint was disabled meanwhile).
///
/// # Errors
/// Database errors.
pub async fn fail_unsent(
    conn: &mut PgConnection,
    organization_id: Uuid,
    delivery_id: Uuid,
    error: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        UPDATE webhook_deliveries SET status = 'failed', last_error = $3, next_attempt_at = NULL
        WHERE organization_id = $1 AND id = $2
        "#,
        organization_id,
        delivery_id,
        error,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Disables an endpoint that answered `410 Gone`.
///
/// # Errors
/// Database errors.
pub async fn disable(
    conn: &mut PgConnection,
    organization_id: Uuid,
    webhook_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE webhooks SET enabled = false WHERE organization_id = $1 AND id = $2",
        organization_id,
        webhook_id,
    )
    .execute(conn)
    .await
    .map(|_| ())
}
