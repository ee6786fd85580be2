//! Approval emails both the API (a step became pending) and the approval nudger agent (a step
//! waits too long) enqueue in their transaction, and the former nudge pass ([`NudgeOverdue`]),
//! superseded by that agent.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;
use zoark_core::{
    db::approvals::{Recipient, Subject},
    settings::EncryptionKey,
};

use crate::{
    Job, Opts,
    email::{SystemEmailError, SystemTemplate, enqueue_system},
};

/// Superseded by the approval nudger agent: completes without doing anything, so that a job
/// enqueued by an older scheduler does not fail.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NudgeOverdue {}

impl Job for NudgeOverdue {
    const NAME: &'static str = "approvals.nudge_overdue";
    const MAX_ATTEMPTS: i32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(300);

    fn unique_key(&self) -> Option<String> {
        Some("approvals_nudge".into())
    }
}

/// The approvable item as the emails name it.
#[derive(Debug, Clone)]
pub struct Item {
    /// `invoice`, `task` or `document`.
    pub kind: String,
    pub title: String,
    /// Invoices: formatted, e.g. `1,200.00 EUR`.
    pub amount: Option<String>,
    /// Where the approver reviews and decides.
    pub approve_url: String,
}

impl Item {
    /// The item of an instance on `kind`; a subject deleted since is named by its kind only.
    pub fn new(kind: &str, subject: Option<Subject>, public_url: &str, instance_id: Uuid) -> Self {
        let approve_url = format!(
            "{}/approvals/{instance_id}",
            public_url.trim_end_matches('/')
        );
        match subject {
            Some(s) => Self {
                kind: kind.to_owned(),
                title: s.title,
                amount: s
                    .amount
                    .map(|(minor, currency)| format_amount(minor, &currency)),
                approve_url,
            },
            None => Self {
                kind: kind.to_owned(),
                title: format!("{kind} {instance_id}"),
                amount: None,
                approve_url,
            },
        }
    }
}

/// `1234567` minor units of `EUR` → `12,345.67 EUR`.
pub fn format_amount(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let minor = minor.unsigned_abs();
    let units = (minor / 100).to_string();
    let mut grouped = String::new();
    for (i, c) in units.chars().enumerate() {
        if i > 0 && (units.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(c);
    }
    format!("{sign}{grouped}.{:02} {currency}", minor % 100)
}

/// Enqueues the approval-request email of a step that just became pending, once per
/// approver (unique per step and address).
///
/// # Errors
/// Sealing or enqueue (database) errors.
#[allow(clippy::too_many_arguments)]
pub async fn enqueue_requests(
    conn: &mut sqlx::PgConnection,
    key: &EncryptionKey,
    organization_id: Uuid,
    step_id: Uuid,
    stage_name: &str,
    requester_name: &str,
    item: &Item,
    recipients: &[Recipient],
) -> Result<(), SystemEmailError> {
    for to in recipients {
        let mut params = json!({
            "approver_name": to.name,
            "requester_name": requester_name,
            "item_title": item.title,
            "item_kind": item.kind,
            "stage_name": stage_name,
            "approve_url": item.approve_url,
        });
        if let Some(amount) = &item.amount {
            params["amount"] = json!(amount);
        }
        let unique = format!("approval_request:{step_id}:{}", to.email.to_lowercase());
        enqueue_system(
            &mut *conn,
            key,
            &to.email,
            SystemTemplate::ApprovalRequest,
            &params,
            Opts::organization(organization_id).unique_key(unique),
        )
        .await?;
    }
    Ok(())
}

/// Enqueues nudge number `nudge` of a step to `recipients`; `escalated` when they are the
/// people the approval was passed on to. Unique per step, nudge number and address.
///
/// # Errors
/// Sealing or enqueue (database) errors.
#[allow(clippy::too_many_arguments)]
pub async fn enqueue_nudges(
    conn: &mut sqlx::PgConnection,
    key: &EncryptionKey,
    organization_id: Uuid,
    step_id: Uuid,
    nudge: i32,
    waiting_since: &str,
    item: &Item,
    recipients: &[Recipient],
    escalated: bool,
) -> Result<(), SystemEmailError> {
    for to in recipients {
        let params = json!({
            "approver_name": to.name,
            "item_title": item.title,
            "item_kind": item.kind,
            "waiting_since": waiting_since,
            "escalated": escalated,
            "approve_url": item.approve_url,
        });
        let unique = format!(
            "approval_nudge:{step_id}:{nudge}:{}",
            to.email.to_lowercase()
        );
        enqueue_system(
            &mut *conn,
            key,
            &to.email,
            SystemTemplate::ApprovalNudge,
            &params,
            Opts::organization(organization_id).unique_key(unique),
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_with_thousands_separators_and_two_decimals() {
        assert_eq!(format_amount(120_000, "EUR"), "1,200.00 EUR");
        assert_eq!(format_amount(5, "USD"), "0.05 USD");
        assert_eq!(format_amount(123_456_789, "USD"), "1,234,567.89 USD");
        assert_eq!(format_amount(-100, "USD"), "-1.00 USD");
    }
}
