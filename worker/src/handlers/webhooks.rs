//! `webhook.deliver`: POSTs one delivery's signed payload to its endpoint, records the attempt
//! (status, response excerpt, error) and retries with doubling delays until the contract's last
//! attempt, after which the delivery is `failed`.
//!
//! Deliveries reach only the addresses the platform's outbound policy permits
//! ([`zoark_core::outbound`], widened by `ZOARK_WEBHOOKS_ALLOW_PRIVATE` in development): IP
//! literals are checked before sending, and host names through a resolver that drops the rest,
//! so the address checked is the address connected to (no DNS rebinding).

use std::{sync::Arc, time::Instant};

use anyhow::Context as _;
use chrono::Utc;
use zoark_core::{
    crypto,
    db::webhooks::{self as db, AttemptOutcome, Target},
    webhooks::{AddressPolicy, EndpointUrl, signature_header},
};
use zoark_jobs::webhooks::DeliverWebhook;

use crate::{
    WorkerContext,
    email::chain,
    engine::{JobContext, JobError, JobResult, Registry},
    handlers::email_delivery::retry_delay,
};

/// The most of a response body kept with an attempt.
const EXCERPT_CHARS: usize = 2000;
/// The most of a response body read (the rest is not waited for).
const READ_BYTES: usize = 16 * 1024;

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let http = Arc::new(client(ctx).map_err(|e| chain(&e)));
    let ctx = ctx.clone();
    registry.register(move |job: DeliverWebhook, run: JobContext| {
        deliver(ctx.clone(), http.clone(), job, run)
    })
}

fn client(ctx: &WorkerContext) -> Result<reqwest::Client, reqwest::Error> {
    let settings = &ctx.settings.webhooks;
    policy(ctx)
        .outbound
        .http_client()
        .timeout(settings.timeout)
        .user_agent(concat!("Zoark-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

fn policy(ctx: &WorkerContext) -> AddressPolicy {
    AddressPolicy::new(&ctx.settings.outbound, &ctx.settings.webhooks)
}

/// What one HTTP attempt gave.
struct Attempted {
    response_status: Option<u16>,
    excerpt: Option<String>,
    error: Option<String>,
    /// Trying again cannot help (refused address, `410 Gone`, a URL the settings now refuse).
    permanent: bool,
}

async fn deliver(
    ctx: WorkerContext,
    http: Arc<Result<reqwest::Client, String>>,
    job: DeliverWebhook,
    run: JobContext,
) -> JobResult {
    let organization_id = run
        .organization_id
        .ok_or_else(|| JobError::Fatal(anyhow::anyhow!("a webhook job needs an organization")))?;
    let target = {
        let mut conn = ctx.pool.acquire().await.context("acquiring a connection")?;
        db::target(&mut conn, organization_id, job.delivery_id)
            .await
            .context("loading the delivery")?
    };
    let Some(target) = target else {
        // The endpoint was deleted, and its delivery log with it.
        tracing::info!(webhook.delivery_id = %job.delivery_id, "the delivery's endpoint was deleted; nothing to send");
        return Ok(());
    };
    if target.status == "succeeded" {
        tracing::info!(webhook.delivery_id = %target.id, "delivery already succeeded");
        return Ok(());
    }
    if !target.enabled && target.event_type != "webhook.test" {
        let mut conn = ctx.pool.acquire().await.context("acquiring a connection")?;
        db::fail_unsent(
            &mut conn,
            organization_id,
            target.id,
            "the endpoint was disabled before this delivery was sent",
        )
        .await
        .context("recording the delivery's end")?;
        tracing::info!(webhook.delivery_id = %target.id, "endpoint disabled; delivery failed unsent");
        return Ok(());
    }
    let http = match &*http {
        Ok(http) => http,
        Err(e) => {
            return Err(JobError::Retry(anyhow::anyhow!(
                "the webhook HTTP client could not be built: {e}"
            )));
        }
    };
    let started = Instant::now();
    let attempted = attempt(&ctx, http, organization_id, &target).await;
    let duration_ms = i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX);
    let succeeded = attempted
        .response_status
        .is_some_and(|s| (200..300).contains(&s));
    let gone = attempted.response_status == Some(410);
    let last = attempted.permanent || run.attempt >= run.max_attempts;
    let delay = retry_delay(ctx.settings.webhooks.retry_base, run.attempt);
    let (status, error, next_attempt_at) = if succeeded {
        ("succeeded", None, None)
    } else {
        let error = attempted.error.clone().unwrap_or_default();
        if last {
            let error = if attempted.permanent {
                error
            } else {
                format!("gave up after {} attempts: {error}", run.attempt)
            };
            ("failed", Some(error), None)
        } else {
            let at = Utc::now() + chrono::Duration::from_std(delay).unwrap_or_default();
            ("retrying", Some(error), Some(at))
        }
    };
    let outcome = AttemptOutcome {
        status,
        response_status: attempted
            .response_status
            .and_then(|s| i16::try_from(s).ok()),
        response_body_excerpt: attempted.excerpt,
        error: error
            .clone()
            .map(|e| e.chars().take(EXCERPT_CHARS).collect()),
        duration_ms,
        next_attempt_at,
    };
    record(&ctx, organization_id, &target, &outcome, gone).await?;
    tracing::info!(
        webhook.delivery_id = %target.id,
        webhook.id = %target.webhook_id,
        http.status = attempted.response_status,
        status,
        "webhook attempt recorded"
    );
    match (status, error) {
        ("succeeded", _) => Ok(()),
        ("retrying", Some(error)) => Err(JobError::RetryAfter(anyhow::anyhow!(error), delay)),
        (_, error) => Err(JobError::Fatal(anyhow::anyhow!(
            error.unwrap_or_else(|| "the delivery failed".into())
        ))),
    }
}

/// Records the attempt (and disables an endpoint that answered `410 Gone`) in one transaction.
async fn record(
    ctx: &WorkerContext,
    organization_id: uuid::Uuid,
    target: &Target,
    outcome: &AttemptOutcome,
    gone: bool,
) -> Result<(), JobError> {
    let mut tx = ctx.pool.begin().await.context("beginning a transaction")?;
    db::record_attempt(&mut tx, organization_id, target.id, outcome)
        .await
        .context("recording the attempt")?;
    if gone {
        db::disable(&mut tx, organization_id, target.webhook_id)
            .await
            .context("disabling the endpoint")?;
        tracing::warn!(webhook.id = %target.webhook_id, "endpoint answered 410 Gone; disabled");
    }
    tx.commit().await.context("committing the attempt")?;
    Ok(())
}

async fn attempt(
    ctx: &WorkerContext,
    http: &reqwest::Client,
    organization_id: uuid::Uuid,
    target: &Target,
) -> Attempted {
    let failed = |error: String, permanent: bool| Attempted {
        response_status: None,
        excerpt: None,
        error: Some(error),
        permanent,
    };
    let url = match EndpointUrl::parse(&target.url, &policy(ctx)) {
        Ok(url) => url,
        Err(e) => return failed(format!("the endpoint URL {}", e.0), true),
    };
    let binding = crypto::Binding::new(db::SECRET, organization_id, target.webhook_id);
    let secret = match crypto::open_bound(
        &ctx.settings.encryption_key,
        &target.secret_ciphertext,
        &binding,
    ) {
        Ok(secret) => String::from_utf8_lossy(&secret).into_owned(),
        Err(e) => return failed(format!("the signing secret cannot be opened: {e}"), true),
    };
    let body = match serde_json::to_vec(&target.payload) {
        Ok(body) => body,
        Err(e) => return failed(format!("the payload does not serialize: {e}"), true),
    };
    let signature = signature_header(&secret, Utc::now().timestamp(), &body);
    let sent = http
        .post(url.url().clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("Zoark-Signature", signature)
        .header("Zoark-Event-Id", target.event_id.to_string())
        .header("Zoark-Event-Type", &target.event_type)
        .header("Zoark-Delivery-Id", target.id.to_string())
        .body(body)
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return transport_error(&e, ctx),
    };
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    // A body that does not arrive in time does not change the status's verdict.
    while bytes.len() < READ_BYTES {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text: String = String::from_utf8_lossy(&bytes)
        .chars()
        .take(EXCERPT_CHARS)
        .collect();
    let excerpt = (!text.is_empty()).then_some(text);
    let error = match status {
        200..=299 => None,
        410 => Some("the endpoint answered 410 Gone; it has been disabled".to_owned()),
        300..=399 => Some(format!(
            "the endpoint answered {status} (redirects are not followed)"
        )),
        _ => Some(format!("the endpoint answered {status}")),
    };
    Attempted {
        response_status: Some(status),
        excerpt,
        error,
        permanent: status == 410,
    }
}

fn transport_error(e: &reqwest::Error, ctx: &WorkerContext) -> Attempted {
    let refused = zoark_core::outbound::refusal(e).map(ToString::to_string);
    let (error, permanent) = match refused {
        Some(refused) => (refused, true),
        None if e.is_timeout() => (
            format!(
                "no answer within {} ms",
                ctx.settings.webhooks.timeout.as_millis()
            ),
            false,
        ),
        None => (chain(e), false),
    };
    Attempted {
        response_status: None,
        excerpt: None,
        error: Some(error),
        permanent,
    }
}
