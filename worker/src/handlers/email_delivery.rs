//! Broadcast delivery: `email.send` (one delivery: claim, send, mark), `email.send_broadcast`
//! (a scheduled broadcast's time: a run of the broadcast sender agent fans it out,
//! `crate::agents::broadcasts`) and `email.finish_broadcast` (the final status).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use lettre::message::{Mailbox, header::HeaderName};
use uuid::Uuid;
use zoark_core::agents::{AgentKind, RunTrigger};
use zoark_core::db::{
    agent_runs::NewRun,
    agents, broadcasts,
    deliveries::{self, AccountState, Claim, Claimed, Outcome},
    email_accounts::{self, AccountStatus},
};
use zoark_core::webhooks::EventType;
use zoark_jobs::{
    Job as _,
    email::{FinishBroadcast, SendBroadcast, SendEmail},
    webhooks,
};

use crate::{
    WorkerContext,
    email::{Mailer, Rendered, SendError, build, inactive_account, mailbox},
    engine::{JobContext, JobError, JobResult, Registry},
};

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let senders = Arc::new(Senders::new(ctx.clone()));
    let (send_ctx, fan_ctx, finish_ctx) = (ctx.clone(), ctx.clone(), ctx.clone());
    registry
        .register(move |job: SendEmail, run: JobContext| {
            send(send_ctx.clone(), senders.clone(), job, run)
        })
        .register(move |job: SendBroadcast, run: JobContext| fan_out(fan_ctx.clone(), job, run))
        .register(move |job: FinishBroadcast, run: JobContext| finish(finish_ctx.clone(), job, run))
}

/// A claim older than this belongs to a dead attempt: the job's timeout plus the time the
/// engine takes to notice a dead worker.
fn stale_after(ctx: &WorkerContext) -> Duration {
    SendEmail::TIMEOUT + ctx.settings.worker.rescue_after + Duration::from_secs(10)
}

/// The delay before retry `attempt + 1`: the base doubled per attempt, plus up to 25 % jitter.
pub(crate) fn retry_delay(base: Duration, attempt: i32) -> Duration {
    let doubling = 2u32.saturating_pow(u32::try_from(attempt.clamp(1, 20) - 1).unwrap_or(0));
    let delay = base
        .saturating_mul(doubling)
        .min(Duration::from_secs(6 * 3600));
    delay + delay.mul_f64(rand::random_range(0.0..0.25))
}

async fn send(
    ctx: WorkerContext,
    senders: Arc<Senders>,
    job: SendEmail,
    run: JobContext,
) -> JobResult {
    let stale = stale_after(&ctx);
    let claim = {
        let mut conn = ctx.pool.acquire().await.context("acquiring a connection")?;
        deliveries::claim(&mut conn, job.delivery_id, run.id, stale)
            .await
            .context("claiming the delivery")?
    };
    let claimed = match claim {
        Claim::Claimed(claimed) => claimed,
        Claim::Busy(since) => {
            // Another attempt holds a fresh claim: look again once it would be stale.
            let until = since + chrono::Duration::from_std(stale).unwrap_or_default();
            let wait = (until - Utc::now()).to_std().unwrap_or_default();
            return Err(JobError::Snooze(wait.max(Duration::from_secs(1))));
        }
        Claim::Final(status) => {
            tracing::info!(email.delivery_id = %job.delivery_id, status, "delivery already final; nothing to send");
            return Ok(());
        }
        Claim::Missing => {
            return Err(JobError::Fatal(anyhow::anyhow!(
                "delivery {} no longer exists",
                job.delivery_id
            )));
        }
    };
    let outcome = if claimed.suppressed {
        Outcome::Suppressed
    } else {
        match deliver(&ctx, &senders, &claimed).await {
            Ok(provider_message_id) => Outcome::Sent {
                provider_message_id,
            },
            Err(SendError::Bounced(error)) => Outcome::Bounced { error },
            Err(SendError::Permanent(error)) => Outcome::Failed { error },
            Err(e @ SendError::Account(_)) => {
                if let Some(account) = &claimed.account {
                    crate::email::needs_attention(&ctx, claimed.organization_id, account.id, &e)
                        .await;
                }
                Outcome::Failed {
                    error: e.to_string(),
                }
            }
            Err(SendError::Transient(error)) if run.attempt < run.max_attempts => {
                Outcome::Retrying { error }
            }
            Err(SendError::Transient(error)) => Outcome::Failed {
                error: format!("gave up after {} attempts: {error}", run.attempt),
            },
        }
    };
    mark(&ctx, &claimed, &outcome).await?;
    match outcome {
        Outcome::Sent { .. } | Outcome::Bounced { .. } | Outcome::Suppressed => Ok(()),
        Outcome::Retrying { error } => Err(JobError::RetryAfter(
            anyhow::anyhow!(error),
            retry_delay(ctx.settings.email.retry_base, run.attempt),
        )),
        // The job ends with the delivery: discarded, its error kept.
        Outcome::Failed { error } => Err(JobError::Fatal(anyhow::anyhow!(error))),
    }
}

/// Marks the delivery, retrying the write a few times: once the provider has the message, a
/// lost mark is the one way to send it twice.
async fn mark(ctx: &WorkerContext, claimed: &Claimed, outcome: &Outcome) -> Result<(), JobError> {
    let mut wait = Duration::from_millis(200);
    for attempt in 1..=5 {
        let result = async {
            let mut conn = ctx.pool.acquire().await?;
            deliveries::mark(&mut conn, claimed, outcome).await
        }
        .await;
        match result {
            Ok(true) => return Ok(()),
            Ok(false) => {
                tracing::warn!(email.delivery_id = %claimed.id, "the delivery's claim was taken over; outcome not recorded");
                return Ok(());
            }
            Err(error) if attempt < 5 => {
                tracing::warn!(%error, email.delivery_id = %claimed.id, "recording the delivery failed; trying again");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            Err(error) => {
                return Err(JobError::Retry(
                    anyhow::Error::new(error).context("recording the delivery's outcome"),
                ));
            }
        }
    }
    Ok(())
}

/// Builds the delivery's message and hands it to its account's transport; returns the
/// provider's message id.
async fn deliver(
    ctx: &WorkerContext,
    senders: &Senders,
    claimed: &Claimed,
) -> Result<String, SendError> {
    if let Some(account) = &claimed.account
        && account.status != AccountStatus::Active
    {
        return Err(inactive_account(
            account.status,
            account.status_reason.as_deref(),
        ));
    }
    let sender = senders.get(claimed).await?;
    let to: Mailbox = claimed.recipient.parse().map_err(|e| {
        SendError::Permanent(format!("`{}` is not an address: {e}", claimed.recipient))
    })?;
    let from = sender.from().clone();
    let message_id = format!("<{}@{}>", claimed.id, from.email.domain());
    let unsubscribe = unsubscribe_url(ctx, claimed.id);
    let content = content(claimed, &unsubscribe);
    let headers = vec![
        (
            HeaderName::new_from_ascii_str("List-Unsubscribe"),
            format!("<{unsubscribe}>"),
        ),
        (
            HeaderName::new_from_ascii_str("List-Unsubscribe-Post"),
            "List-Unsubscribe=One-Click".to_owned(),
        ),
    ];
    let email = build(from, to, &content, &message_id, &headers)?;
    match &*sender {
        Sender::Transport(mailer) => mailer.send_message(email).await.map(|()| message_id),
        Sender::OAuth { account_id, .. } => {
            ctx.oauth
                .send(claimed.organization_id, *account_id, email)
                .await
        }
    }
}

fn unsubscribe_url(ctx: &WorkerContext, delivery_id: Uuid) -> String {
    let mut url = ctx.settings.http.public_url.clone();
    url.set_path(&format!(
        "/api/v1/unsubscribe/{}",
        deliveries::unsubscribe_token(&ctx.settings.encryption_key, delivery_id)
    ));
    url.to_string()
}

/// The broadcast's text and HTML with the unsubscribe footer. A broadcast without HTML gets
/// its text, escaped, as HTML paragraphs.
fn content(claimed: &Claimed, unsubscribe: &str) -> Rendered {
    let text = claimed.body_text.clone().unwrap_or_default();
    let html = claimed.body_html.clone().unwrap_or_else(|| {
        text.split("\n\n")
            .map(|p| format!("<p>{}</p>", escape(p).replace('\n', "<br>\n")))
            .collect::<Vec<_>>()
            .join("\n")
    });
    Rendered {
        subject: claimed.subject.replace(['\r', '\n'], " "),
        text: format!("{text}\n\n--\nUnsubscribe: {unsubscribe}\n"),
        html: format!(
            "{html}\n<p style=\"font-size:12px;color:#6b7280\"><a href=\"{}\">Unsubscribe</a></p>\n",
            escape(unsubscribe)
        ),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// How a delivery leaves.
enum Sender {
    /// SMTP (an organization's account, pooled) or the platform's transport.
    Transport(Mailer),
    /// A connected Gmail or Outlook account (tokens refreshed by the OAuth sender).
    OAuth { account_id: Uuid, from: Mailbox },
}

impl Sender {
    fn from(&self) -> &Mailbox {
        match self {
            Self::Transport(mailer) => mailer.from(),
            Self::OAuth { from, .. } => from,
        }
    }
}

/// A cached transport and the account version it was built from.
type Cached = (DateTime<Utc>, Arc<Sender>);

/// Transports per account, kept while the account's settings do not change (each SMTP
/// transport holds a connection pool).
struct Senders {
    ctx: WorkerContext,
    platform: Mutex<Option<Arc<Sender>>>,
    accounts: Mutex<HashMap<Uuid, Cached>>,
}

impl Senders {
    fn new(ctx: WorkerContext) -> Self {
        Self {
            ctx,
            platform: Mutex::new(None),
            accounts: Mutex::new(HashMap::new()),
        }
    }

    async fn get(&self, claimed: &Claimed) -> Result<Arc<Sender>, SendError> {
        let Some(account) = &claimed.account else {
            return self.platform();
        };
        if let Ok(cache) = self.accounts.lock()
            && let Some((version, sender)) = cache.get(&account.id)
            && *version == account.version
        {
            return Ok(sender.clone());
        }
        let sender = Arc::new(self.load(claimed.organization_id, account).await?);
        if let Ok(mut cache) = self.accounts.lock() {
            cache.insert(account.id, (account.version, sender.clone()));
        }
        Ok(sender)
    }

    fn platform(&self) -> Result<Arc<Sender>, SendError> {
        let mut platform = self
            .platform
            .lock()
            .map_err(|_| SendError::Transient("the transport cache is poisoned".into()))?;
        if let Some(sender) = &*platform {
            return Ok(sender.clone());
        }
        let mailer = Mailer::from_settings(&self.ctx.settings.email).map_err(|e| {
            SendError::Permanent(format!("the email transport is misconfigured: {e:#}"))
        })?;
        let sender = Arc::new(Sender::Transport(mailer));
        *platform = Some(sender.clone());
        Ok(sender)
    }

    async fn load(
        &self,
        organization_id: Uuid,
        account: &AccountState,
    ) -> Result<Sender, SendError> {
        if account.provider != "smtp" {
            let mut conn = self
                .ctx
                .pool
                .acquire()
                .await
                .map_err(|e| SendError::Transient(format!("loading the account: {e}")))?;
            let oauth = email_accounts::oauth_for_sending(&mut conn, organization_id, account.id)
                .await
                .map_err(|e| SendError::Transient(format!("loading the account: {e}")))?
                .ok_or_else(|| {
                    SendError::Permanent("the sending account no longer exists".into())
                })?;
            let from = mailbox(&oauth.display_name, &oauth.from_address)?;
            return Ok(Sender::OAuth {
                account_id: account.id,
                from,
            });
        }
        let smtp = {
            let mut conn = self
                .ctx
                .pool
                .acquire()
                .await
                .map_err(|e| SendError::Transient(format!("loading the account: {e}")))?;
            email_accounts::smtp_for_sending(&mut conn, organization_id, account.id)
                .await
                .map_err(|e| SendError::Transient(format!("loading the account: {e}")))?
                .ok_or_else(|| {
                    SendError::Permanent("the sending account no longer exists".into())
                })?
        };
        Mailer::for_account(&self.ctx.settings, organization_id, &smtp).map(Sender::Transport)
    }
}

async fn fan_out(ctx: WorkerContext, job: SendBroadcast, run: JobContext) -> JobResult {
    let organization_id = run
        .organization_id
        .ok_or_else(|| JobError::Fatal(anyhow::anyhow!("a broadcast job needs an organization")))?;
    let mut tx = ctx.pool.begin().await.context("beginning a transaction")?;
    let Some(broadcast) = broadcasts::lock(&mut tx, organization_id, job.broadcast_id)
        .await
        .context("loading the broadcast")?
    else {
        return Err(JobError::Fatal(anyhow::anyhow!(
            "broadcast {} no longer exists",
            job.broadcast_id
        )));
    };
    if broadcast.status != "scheduled" {
        // Sent by hand or cancelled meanwhile.
        tracing::info!(broadcast.id = %broadcast.id, status = broadcast.status, "broadcast no longer scheduled");
        return Ok(());
    }
    // The broadcast sender agent sends it: a run of its own, visible with its steps.
    let sender = agents::builtin(&mut tx, organization_id, AgentKind::BroadcastSender)
        .await
        .context("finding the broadcast sender")?
        .context("the organization has no broadcast sender agent")
        .map_err(JobError::Fatal)?;
    let input = serde_json::json!({ "broadcast_id": broadcast.id });
    let new = NewRun {
        agent_id: sender,
        schedule_id: None,
        trigger: RunTrigger::Schedule,
        triggered_by: broadcast.created_by,
        max_role: None,
        input: &input,
    };
    let run_id = zoark_jobs::agents::start(&mut tx, organization_id, &new)
        .await
        .context("starting the broadcast sender's run")?;
    tx.commit().await.context("committing the run")?;
    tracing::info!(broadcast.id = %broadcast.id, agent_run.id = ?run_id, "scheduled broadcast handed to the broadcast sender");
    Ok(())
}

/// The `data` of `broadcast.finished`: the broadcast's final status and its deliveries
/// counted by status.
async fn broadcast_finished(
    conn: &mut sqlx::PgConnection,
    organization_id: Uuid,
    broadcast_id: Uuid,
    status: &str,
) -> sqlx::Result<serde_json::Value> {
    let broadcast = broadcasts::get(conn, organization_id, broadcast_id).await?;
    let counts: serde_json::Map<String, serde_json::Value> =
        broadcasts::counts(conn, organization_id, &[broadcast_id])
            .await?
            .into_iter()
            .map(|(_, status, n)| (status, n.into()))
            .collect();
    Ok(serde_json::json!({
        "broadcast": {
            "id": broadcast_id,
            "subject": broadcast.as_ref().map(|b| b.subject.clone()),
            "status": status,
            "recipient_count": broadcast.as_ref().map(|b| b.recipient_count),
            "started_at": broadcast.as_ref().and_then(|b| b.started_at),
            "finished_at": broadcast.as_ref().and_then(|b| b.finished_at),
            "deliveries": counts,
        }
    }))
}

async fn finish(ctx: WorkerContext, job: FinishBroadcast, run: JobContext) -> JobResult {
    let organization_id = run
        .organization_id
        .ok_or_else(|| JobError::Fatal(anyhow::anyhow!("a broadcast job needs an organization")))?;
    let mut tx = ctx.pool.begin().await.context("beginning a transaction")?;
    if let Some(status) = broadcasts::finish(&mut tx, organization_id, job.broadcast_id)
        .await
        .context("finishing the broadcast")?
    {
        // The event commits with the final status, or neither does.
        let data = broadcast_finished(&mut tx, organization_id, job.broadcast_id, &status)
            .await
            .context("loading the finished broadcast")?;
        webhooks::emit(&mut tx, organization_id, EventType::BroadcastFinished, data)
            .await
            .context("emitting broadcast.finished")?;
        tx.commit().await.context("committing the final status")?;
        tracing::info!(broadcast.id = %job.broadcast_id, status, "broadcast finished");
        return Ok(());
    }
    tx.commit().await.context("ending the transaction")?;
    let mut conn = ctx.pool.acquire().await.context("acquiring a connection")?;
    let Some(broadcast) = broadcasts::get(&mut conn, organization_id, job.broadcast_id)
        .await
        .context("loading the broadcast")?
    else {
        return Ok(());
    };
    if broadcast.status != "sending" {
        return Ok(());
    }
    // Deliveries still pending: look again, soon at first, then less often (retries wait).
    let running = broadcast
        .started_at
        .map(|t| (Utc::now() - t).num_seconds())
        .unwrap_or_default();
    let wait = match running {
        ..60 => 1,
        60..600 => 10,
        _ => 60,
    };
    Err(JobError::Snooze(Duration::from_secs(wait)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_with_bounded_jitter() {
        let base = Duration::from_secs(30);
        for attempt in 1..=8 {
            let d = retry_delay(base, attempt);
            let floor = base * 2u32.pow(u32::try_from(attempt - 1).unwrap());
            assert!(
                d >= floor && d <= floor + floor / 4,
                "attempt {attempt}: {d:?}"
            );
        }
        assert!(retry_delay(base, 30) <= Duration::from_secs(6 * 3600 * 5 / 4));
    }

    #[test]
    fn text_only_broadcasts_get_escaped_html_and_an_unsubscribe_footer() {
        let claimed = Claimed {
            id: Uuid::now_v7(),
            organization_id: Uuid::now_v7(),
            broadcast_id: None,
            email_account_id: None,
            recipient: "a@example.com".into(),
            subject: "Hi\r\nBcc: x@evil".into(),
            body_text: Some("Tom & <Jerry>\nline two\n\nsecond".into()),
            body_html: None,
            attempts: 1,
            claimed_at: Utc::now(),
            suppressed: false,
            account: None,
        };
        let c = content(&claimed, "https://z.example/api/v1/unsubscribe/t?x=1&y=2");
        assert_eq!(c.subject, "Hi  Bcc: x@evil");
        assert!(
            c.html
                .contains("<p>Tom &amp; &lt;Jerry&gt;<br>\nline two</p>\n<p>second</p>")
        );
        assert!(
            c.html
                .contains("href=\"https://z.example/api/v1/unsubscribe/t?x=1&amp;y=2\"")
        );
        assert!(
            c.text
                .ends_with("Unsubscribe: https://z.example/api/v1/unsubscribe/t?x=1&y=2\n")
        );
    }
}
