//! Email jobs. [`SendSystemEmail`] carries one message the platform itself sends (invitation,
//! password reset); the email issue adds organization accounts, broadcasts and delivery rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

/// Which system email; each has a text and an HTML template in `worker/src/email/templates/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemTemplate {
    /// Params: `inviter_name`, `organization_name`, `role`, `accept_url`, `expires_at`.
    Invitation,
    /// Params: `name`, `reset_url`, `expires_at`.
    PasswordReset,
    /// Params: `display_name`, `from_address`, `requested_by`.
    AccountTest,
}

impl SystemTemplate {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invitation => "invitation",
            Self::PasswordReset => "password_reset",
            Self::AccountTest => "account_test",
        }
    }
}

/// One system email to one address. The template parameters hold a secret (the link's
/// single-use token), so they travel sealed with `ZOARK_ENCRYPTION_KEY`: the jobs table, its
/// API and its logs never show them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendSystemEmail {
    pub to: String,
    pub template: SystemTemplate,
    /// base64 of the AES-256-GCM sealed JSON object of template parameters.
    pub sealed_params: String,
}

impl Job for SendSystemEmail {
    const NAME: &'static str = "email.send_system";
    const QUEUE: &'static str = "email";
    const MAX_ATTEMPTS: i32 = 10;
    const TIMEOUT: Duration = Duration::from_secs(60);
}

/// A test message through one of the organization's sending accounts, to prove its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendTestEmail {
    pub account_id: uuid::Uuid,
    pub to: String,
    /// Who asked, for the message's text.
    pub requested_by: String,
}

impl Job for SendTestEmail {
    const NAME: &'static str = "email.send_test";
    const QUEUE: &'static str = "email";
    const MAX_ATTEMPTS: i32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(60);
}

/// Sends one delivery (a broadcast's message to one recipient). The delivery row is claimed
/// and marked around the send, so the message goes out once even if this job runs twice.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendEmail {
    pub delivery_id: uuid::Uuid,
}

impl Job for SendEmail {
    const NAME: &'static str = "email.send";
    const QUEUE: &'static str = "email";
    /// With `ZOARK_EMAIL_RETRY_BASE_SECS` (30 s) doubling: the last try comes about an hour
    /// after the first failure.
    const MAX_ATTEMPTS: i32 = 8;
    const TIMEOUT: Duration = Duration::from_secs(120);
}

/// Sends a scheduled broadcast at its `scheduled_for`: the same fan-out as `POST
/// /broadcasts/{id}/send`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendBroadcast {
    pub broadcast_id: uuid::Uuid,
}

impl Job for SendBroadcast {
    const NAME: &'static str = "email.send_broadcast";
    const QUEUE: &'static str = "email";
    const MAX_ATTEMPTS: i32 = 10;
    const TIMEOUT: Duration = Duration::from_secs(300);

    fn unique_key(&self) -> Option<String> {
        Some(format!("broadcast:{}:send", self.broadcast_id))
    }
}

/// Gives a sending broadcast its final status once every delivery is final (snoozing until
/// then, without spending attempts).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishBroadcast {
    pub broadcast_id: uuid::Uuid,
}

impl Job for FinishBroadcast {
    const NAME: &'static str = "email.finish_broadcast";
    const QUEUE: &'static str = "email";
    const MAX_ATTEMPTS: i32 = 20;
    const TIMEOUT: Duration = Duration::from_secs(60);

    fn unique_key(&self) -> Option<String> {
        Some(format!("broadcast:{}:finish", self.broadcast_id))
    }
}

/// What sending a broadcast created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FanOut {
    pub queued: usize,
    pub suppressed: usize,
}

/// Sends a locked `draft` or `scheduled` broadcast, in the caller's transaction: one delivery
/// per recipient and one [`SendEmail`] job per unsuppressed delivery (bulk enqueue), the
/// broadcast `sending`, and its [`FinishBroadcast`] job.
///
/// # Errors
/// Database errors; the caller rolls back.
pub async fn send_broadcast(
    conn: &mut sqlx::PgConnection,
    broadcast: &zoark_core::db::broadcasts::Broadcast,
) -> Result<FanOut, crate::EnqueueError> {
    use zoark_core::db::broadcasts;

    use crate::{NewJob, Opts, enqueue, enqueue_many};

    let recipients = broadcasts::resolve_recipients(conn, broadcast).await?;
    let fanned = broadcasts::fan_out(conn, broadcast, &recipients).await?;
    let queued: Vec<uuid::Uuid> = fanned
        .iter()
        .filter(|d| d.status == "queued")
        .map(|d| d.id)
        .collect();
    let jobs = queued
        .iter()
        .map(|&delivery_id| {
            NewJob::new(
                &SendEmail { delivery_id },
                Opts::organization(broadcast.organization_id),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    let enqueued = enqueue_many(conn, jobs).await?;
    let job_ids: Vec<uuid::Uuid> = enqueued.iter().map(|e| e.id).collect();
    broadcasts::set_delivery_jobs(conn, broadcast.organization_id, &queued, &job_ids).await?;
    enqueue(
        conn,
        &FinishBroadcast {
            broadcast_id: broadcast.id,
        },
        Opts::organization(broadcast.organization_id)
            .run_at(chrono::Utc::now() + chrono::Duration::seconds(1)),
    )
    .await?;
    Ok(FanOut {
        queued: queued.len(),
        suppressed: fanned.len() - queued.len(),
    })
}
