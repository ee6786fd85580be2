//! Email jobs. [`SendSystemEmail`] carries one message the platform itself sends (invitation,
//! password reset, task and approval notices, reminders), enqueued with [`enqueue_system`]; the
//! email issue adds organization accounts, broadcasts and delivery rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use zoark_core::{crypto, settings::EncryptionKey};

use crate::{EnqueueError, Enqueued, Job, Opts};

/// Which system email; each has a subject, a text and an HTML template in
/// `worker/src/email/templates/`, and renders with the branding of the job's organization.
///
/// Parameters are strings unless noted; optional ones may be absent or `null`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemTemplate {
    /// Params: `inviter_name`, `organization_name`, `role`, `accept_url`, `expires_at`.
    Invitation,
    /// Params: `name`, `reset_url`, `expires_at`.
    PasswordReset,
    /// Confirm the account's address. Params: `name`, `verify_url`, `expires_at`.
    EmailVerification,
    /// Params: `display_name`, `from_address`, `requested_by`.
    AccountTest,
    /// A task was assigned to the recipient. Params: `assignee_name`, `assigner_name`,
    /// `task_title`, `project_name`, `task_url`; optional `due_date`.
    TaskAssignment,
    /// An item waits for the recipient's approval at one stage of its pipeline. Params:
    /// `approver_name`, `requester_name`, `item_title`, `item_kind` (e.g. "invoice"),
    /// `stage_name`, `approve_url`; optional `amount` (formatted, e.g. "€1,200.00").
    ApprovalRequest,
    /// An approval still waits. Params: `approver_name`, `item_title`, `item_kind`,
    /// `waiting_since`, `escalated` (bool: the approval passed to the recipient, the next
    /// approver, which changes the subject and wording), `approve_url`.
    ApprovalNudge,
    /// A reminder someone set. Params: `recipient_name`, `title`, `body` (plain text); optional
    /// `due_at`, `url`.
    Reminder,
    /// Log your hours. Params: `recipient_name`, `period` (e.g. "week of 2026-11-23"),
    /// `hours_logged`, `hours_expected` (numbers or strings), `timesheet_url`.
    TimesheetReminder,
}

impl SystemTemplate {
    /// The name in templates, job payloads and `email_deliveries.template`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invitation => "invitation",
            Self::PasswordReset => "password_reset",
            Self::EmailVerification => "email_verification",
            Self::AccountTest => "account_test",
            Self::TaskAssignment => "task_assignment",
            Self::ApprovalRequest => "approval_request",
            Self::ApprovalNudge => "approval_nudge",
            Self::Reminder => "reminder",
            Self::TimesheetReminder => "timesheet_reminder",
        }
    }

    /// The parameters the template cannot do without (see each variant); a message without
    /// one of them is refused rather than sent with a blank.
    pub fn required_params(self) -> &'static [&'static str] {
        match self {
            Self::Invitation => &[
                "inviter_name",
                "organization_name",
                "role",
                "accept_url",
                "expires_at",
            ],
            Self::PasswordReset => &["name", "reset_url", "expires_at"],
            Self::EmailVerification => &["name", "verify_url", "expires_at"],
            Self::AccountTest => &["display_name", "from_address", "requested_by"],
            Self::TaskAssignment => &[
                "assignee_name",
                "assigner_name",
                "task_title",
                "project_name",
                "task_url",
            ],
            Self::ApprovalRequest => &[
                "approver_name",
                "requester_name",
                "item_title",
                "item_kind",
                "stage_name",
                "approve_url",
            ],
            Self::ApprovalNudge => &[
                "approver_name",
                "item_title",
                "item_kind",
                "waiting_since",
                "escalated",
                "approve_url",
            ],
            Self::Reminder => &["recipient_name", "title", "body"],
            Self::TimesheetReminder => &[
                "recipient_name",
                "period",
                "hours_logged",
                "hours_expected",
                "timesheet_url",
            ],
        }
    }

    /// The first required parameter `params` lacks (absent or `null`), or the reason it is
    /// not an object.
    ///
    /// # Errors
    /// [`ParamsError`] naming what is wrong.
    pub fn check_params(self, params: &serde_json::Value) -> Result<(), ParamsError> {
        let object = params.as_object().ok_or(ParamsError::NotAnObject)?;
        if let Some(name) = self
            .required_params()
            .iter()
            .find(|name| object.get(**name).is_none_or(serde_json::Value::is_null))
        {
            return Err(ParamsError::Missing(self.as_str(), name));
        }
        // A flag that switches wording must be a real boolean: the string "false" is truthy.
        if self == Self::ApprovalNudge && object.get("escalated").is_some_and(|v| !v.is_boolean()) {
            return Err(ParamsError::NotBoolean(self.as_str(), "escalated"));
        }
        Ok(())
    }
}

/// Parameters a template cannot render.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("the template parameters are not a JSON object")]
    NotAnObject,
    #[error("the {0} email needs the `{1}` parameter")]
    Missing(&'static str, &'static str),
    #[error("the {0} email's `{1}` parameter must be true or false")]
    NotBoolean(&'static str, &'static str),
}

/// Why a system email could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum SystemEmailError {
    #[error(transparent)]
    Params(#[from] ParamsError),
    #[error("sealing the parameters: {0}")]
    Seal(#[from] crypto::CryptoError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
}

/// Enqueues `template` to `to` with `params` (a JSON object holding at least the template's
/// [required parameters](SystemTemplate::required_params)) in `conn`'s transaction, the
/// parameters sealed with `key`. `opts` names the organization whose branding the message
/// carries ([`Opts::platform`] for Zoark's own).
///
/// # Errors
/// A missing parameter, a sealing failure, or an enqueue (database) error.
pub async fn enqueue_system(
    conn: &mut sqlx::PgConnection,
    key: &EncryptionKey,
    to: &str,
    template: SystemTemplate,
    params: &serde_json::Value,
    opts: Opts,
) -> Result<Enqueued, SystemEmailError> {
    template.check_params(params)?;
    let plain = serde_json::to_vec(params).map_err(EnqueueError::Payload)?;
    let job = SendSystemEmail {
        to: to.to_owned(),
        template,
        sealed_params: crypto::seal_text(key, &plain)?,
    };
    Ok(crate::enqueue(conn, &job, opts).await?)
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

/// A link to the web app's `page` carrying `token` (a single-use token of a system email).
pub fn link(public_url: &url::Url, page: &str, token: &str) -> String {
    let mut url = public_url.clone();
    url.set_path(page);
    url.query_pairs_mut().clear().append_pair("token", token);
    url.to_string()
}

/// How expiry times read in emails.
pub fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Someone asked for a password reset link for `email` (`POST /auth/password-reset`). The
/// request only enqueues this, whether the address has an account or not, so that its answer
/// and its time say nothing about which addresses exist; the worker looks the account up and,
/// when there is one, sends the link.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestPasswordReset {
    pub email: String,
    /// The requester's address and user agent, for the account's audit log.
    pub ip: Option<std::net::IpAddr>,
    pub user_agent: Option<String>,
}

impl Job for RequestPasswordReset {
    const NAME: &'static str = "auth.password_reset";
    const QUEUE: &'static str = "email";
    const MAX_ATTEMPTS: i32 = 5;
    const TIMEOUT: Duration = Duration::from_secs(30);
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

    use crate::{NewJob, enqueue, enqueue_many};

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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parameters_are_checked_before_enqueueing() {
        let nudge = json!({"approver_name": "A", "item_title": "Invoice 7", "item_kind": "invoice",
                           "waiting_since": "2026-11-20", "escalated": false,
                           "approve_url": "https://x/a"});
        assert_eq!(SystemTemplate::ApprovalNudge.check_params(&nudge), Ok(()));
        let mut escalated = nudge.clone();
        escalated["escalated"] = json!(true);
        assert_eq!(
            SystemTemplate::ApprovalNudge.check_params(&escalated),
            Ok(())
        );
        escalated["escalated"] = json!("false");
        assert_eq!(
            SystemTemplate::ApprovalNudge.check_params(&escalated),
            Err(ParamsError::NotBoolean("approval_nudge", "escalated"))
        );
        let mut missing = nudge;
        missing["approve_url"] = serde_json::Value::Null;
        assert_eq!(
            SystemTemplate::ApprovalNudge.check_params(&missing),
            Err(ParamsError::Missing("approval_nudge", "approve_url"))
        );
        assert_eq!(
            SystemTemplate::Reminder.check_params(&json!([])),
            Err(ParamsError::NotAnObject)
        );
    }
}
