//! Webhooks: [`emit`] turns one event into a pending delivery per subscribed endpoint and a
//! [`DeliverWebhook`] job per delivery, inside the caller's transaction.
//!
//! The payload every endpoint receives (Stripe's envelope):
//! `{"id": event_id, "type": "broadcast.finished", "created": <unix seconds>,
//!   "organization_id": ..., "data": {...}}`.

use std::time::Duration;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{db::webhooks as db, webhooks::EventType};

use crate::{EnqueueError, Job, NewJob, Opts, enqueue_many};

/// POSTs one delivery to its endpoint; records the attempt; retries with doubling delays.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliverWebhook {
    pub delivery_id: Uuid,
}

impl Job for DeliverWebhook {
    const NAME: &'static str = "webhook.deliver";
    const QUEUE: &'static str = "webhooks";
    /// Immediately, then after about 1, 2, 4, 8, 16, 32 and 64 × `ZOARK_WEBHOOKS_RETRY_BASE_MS`
    /// (about two hours in all with the default minute).
    const MAX_ATTEMPTS: i32 = 8;
    /// Longer than the longest allowed HTTP timeout (50 s) plus recording.
    const TIMEOUT: Duration = Duration::from_secs(70);
}

/// The event one [`emit`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    /// Shared by all the event's deliveries (`Zoark-Event-Id`, the payload's `id`).
    pub event_id: Uuid,
    /// One per endpoint that receives it; empty when none is subscribed.
    pub delivery_ids: Vec<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Emits `event_type` with `data` to every enabled endpoint of `organization_id` subscribed to
/// it (or to `*`): inserts one delivery per endpoint, all sharing one event id and payload,
/// and enqueues their jobs. Call it inside the transaction that makes the change the event
/// reports, so that both commit or neither does; with no subscriber it costs one query.
///
/// # Errors
/// Database errors; the caller's transaction should then be rolled back.
pub async fn emit(
    conn: &mut PgConnection,
    organization_id: Uuid,
    event_type: EventType,
    data: serde_json::Value,
) -> Result<Emitted, EmitError> {
    let webhooks = db::subscribers(conn, organization_id, event_type.as_str()).await?;
    deliver(conn, organization_id, &webhooks, event_type, data).await
}

/// Sends a `webhook.test` ping to one endpoint (enabled or not: a test is asked for).
///
/// # Errors
/// Database errors.
pub async fn ping(
    conn: &mut PgConnection,
    organization_id: Uuid,
    webhook_id: Uuid,
) -> Result<Emitted, EmitError> {
    let data = serde_json::json!({
        "webhook_id": webhook_id,
        "message": "A test event sent from the Zoark API.",
    });
    deliver(
        conn,
        organization_id,
        &[webhook_id],
        EventType::WebhookTest,
        data,
    )
    .await
}

/// The envelope of an event.
pub fn envelope(
    event_id: Uuid,
    organization_id: Uuid,
    event_type: EventType,
    data: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "id": event_id,
        "type": event_type.as_str(),
        "created": Utc::now().timestamp(),
        "organization_id": organization_id,
        "data": data,
    })
}

async fn deliver(
    conn: &mut PgConnection,
    organization_id: Uuid,
    webhooks: &[Uuid],
    event_type: EventType,
    data: serde_json::Value,
) -> Result<Emitted, EmitError> {
    let event_id = Uuid::now_v7();
    if webhooks.is_empty() {
        return Ok(Emitted {
            event_id,
            delivery_ids: Vec::new(),
        });
    }
    let payload = envelope(event_id, organization_id, event_type, data);
    let delivery_ids: Vec<Uuid> = webhooks.iter().map(|_| Uuid::now_v7()).collect();
    let jobs = delivery_ids
        .iter()
        .map(|&delivery_id| {
            NewJob::new(
                &DeliverWebhook { delivery_id },
                Opts::organization(organization_id),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let enqueued = enqueue_many(conn, jobs).await?;
    let rows: Vec<db::NewDelivery> = delivery_ids
        .iter()
        .zip(webhooks)
        .zip(&enqueued)
        .map(|((&id, &webhook_id), job)| db::NewDelivery {
            id,
            webhook_id,
            job_id: job.id,
        })
        .collect();
    db::insert_deliveries(
        conn,
        organization_id,
        event_id,
        event_type.as_str(),
        &payload,
        &rows,
    )
    .await?;
    Ok(Emitted {
        event_id,
        delivery_ids,
    })
}

/// Emits `job.discarded` for those of `job_ids` that this transaction discarded, belong to an
/// organization with a subscribed endpoint, and are not webhook deliveries themselves (a
/// failing endpoint must not feed itself events). Returns how many events were emitted.
///
/// # Errors
/// Database errors.
pub async fn emit_jobs_discarded(
    conn: &mut PgConnection,
    job_ids: &[Uuid],
) -> Result<usize, EmitError> {
    let jobs = sqlx::query!(
        r#"
        SELECT j.id, j.organization_id AS "organization_id!", j.kind, j.queue, j.attempt,
               j.max_attempts, j.errors -> -1 ->> 'error' AS error,
               j.errors -> -1 ->> 'kind' AS error_kind, j.finalized_at
        FROM jobs j
        WHERE j.id = ANY($1) AND j.state = 'discarded' AND j.finalized_at = now()
          AND j.organization_id IS NOT NULL AND j.kind <> $2
          AND EXISTS (SELECT 1 FROM webhooks w
                      WHERE w.organization_id = j.organization_id AND w.enabled
                        AND w.event_types && ARRAY['job.discarded', '*'])
        ORDER BY j.id
        "#,
        job_ids,
        DeliverWebhook::NAME,
    )
    .fetch_all(&mut *conn)
    .await?;
    for job in &jobs {
        let data = serde_json::json!({
            "job": {
                "id": job.id,
                "kind": job.kind,
                "queue": job.queue,
                "attempt": job.attempt,
                "max_attempts": job.max_attempts,
                "error": job.error,
                "error_kind": job.error_kind,
                "discarded_at": job.finalized_at,
            }
        });
        emit(conn, job.organization_id, EventType::JobDiscarded, data).await?;
    }
    Ok(jobs.len())
}
