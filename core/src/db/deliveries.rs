//! Deliveries (one message to one recipient, with a timestamped history) and the suppression
//! list.
//!
//! Never twice: a send attempt first *claims* its delivery (`queued`/`retrying`/`failed` →
//! `sending`, stamping `claimed_at`), sends, then *marks* it — fenced on that stamp, so a mark
//! from an attempt whose claim was taken over changes nothing. A `sending` claim is taken over
//! only once it is older than the send job's timeout, i.e. once its attempt is certainly dead.
//! The one window left: the provider accepted the message and the process died before the
//! mark; the next attempt sends it again, with the same `Message-ID` (derived from the
//! delivery id) so that the receiving side can tell.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    access::{Granted, ManageBroadcasts, ReadBroadcasts},
    crypto,
    db::email_accounts::AccountStatus,
    settings::EncryptionKey,
};

const UNSUBSCRIBE: &str = "zoark unsubscribe link v1";

/// The token of a delivery's one-click unsubscribe link: the delivery id and 16 bytes of its
/// HMAC-SHA256, base64url.
pub fn unsubscribe_token(key: &EncryptionKey, delivery_id: Uuid) -> String {
    use base64::Engine as _;
    let mut bytes = delivery_id.as_bytes().to_vec();
    bytes.extend_from_slice(&crypto::sign(key, UNSUBSCRIBE, delivery_id.as_bytes())[..16]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The delivery an unsubscribe token names, if its signature holds.
pub fn unsubscribe_delivery(key: &EncryptionKey, token: &str) -> Option<Uuid> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()?;
    if bytes.len() != 32 {
        return None;
    }
    let id = Uuid::from_slice(&bytes[..16]).ok()?;
    let expected = crypto::sign(key, UNSUBSCRIBE, id.as_bytes());
    // Truncated MAC, compared in constant time.
    let mut diff = 0u8;
    for (a, b) in expected[..16].iter().zip(&bytes[16..]) {
        diff |= a ^ b;
    }
    (diff == 0).then_some(id)
}

/// A claimed delivery with what its message needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub broadcast_id: Option<Uuid>,
    pub email_account_id: Option<Uuid>,
    pub recipient: String,
    pub subject: String,
    pub body_text: Option<String>,
    pub body_html: Option<String>,
    /// The attempt number on the delivery (1 for the first).
    pub attempts: i32,
    /// The claim's stamp: the mark is fenced on it.
    pub claimed_at: DateTime<Utc>,
    /// The address was suppressed after the broadcast was sent.
    pub suppressed: bool,
    /// The sending account (`None`: the platform's transport).
    pub account: Option<AccountState>,
}

/// The sending account as the claim found it.
#[derive(Debug, Clone)]
pub struct AccountState {
    pub id: Uuid,
    /// `smtp`, `gmail` or `outlook`.
    pub provider: String,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
    /// Changes whenever the account's settings do: cached transports are keyed on it.
    pub version: DateTime<Utc>,
}

/// What a claim found.
#[derive(Debug, Clone)]
pub enum Claim {
    /// Ours to send.
    Claimed(Box<Claimed>),
    /// Another attempt claimed it at this time and may still be sending.
    Busy(DateTime<Utc>),
    /// Nothing to do: the delivery is already `sent`, `bounced`, `suppressed` or `cancelled`.
    Final(String),
    /// No such delivery.
    Missing,
}

/// Claims a delivery for sending (see the module documentation).
///
/// # Errors
/// Database errors.
pub async fn claim(
    conn: &mut PgConnection,
    id: Uuid,
    job_id: Uuid,
    stale_after: Duration,
) -> sqlx::Result<Claim> {
    let stale = stale_after.as_secs_f64();
    let row = sqlx::query!(
        r#"
        WITH target AS (
            SELECT id, status, claimed_at FROM email_deliveries WHERE id = $1 FOR UPDATE
        ), claimed AS (
            UPDATE email_deliveries d SET status = 'sending', claimed_at = clock_timestamp(),
                                          attempts = d.attempts + 1, job_id = $2
            FROM target t
            WHERE d.id = t.id
              AND (t.status IN ('queued', 'retrying', 'failed')
                   OR (t.status = 'sending' AND t.claimed_at < now() - make_interval(secs => $3)))
            RETURNING d.*
        ), history AS (
            INSERT INTO email_delivery_events (organization_id, delivery_id, status, detail)
            SELECT organization_id, id, 'sending', format('attempt %s', attempts) FROM claimed
        )
        SELECT t.status AS "previous!", t.claimed_at AS previous_claim,
               c.id AS "id?", c.organization_id AS "organization_id?", c.broadcast_id, c.email_account_id,
               c.recipient AS "recipient?", c.subject AS "subject?", c.attempts AS "attempts?",
               c.claimed_at AS claimed_at, b.body_text AS "body_text?", b.body_html,
               EXISTS (SELECT 1 FROM email_suppressions s
                       WHERE s.organization_id = c.organization_id AND lower(s.email) = lower(c.recipient))
                   AS "suppressed!",
               a.provider AS "account_provider?", a.status AS "account_status?: AccountStatus", a.status_reason AS account_reason,
               a.updated_at AS "account_version?"
        FROM target t
        LEFT JOIN claimed c ON c.id = t.id
        LEFT JOIN broadcasts b ON b.organization_id = c.organization_id AND b.id = c.broadcast_id
        LEFT JOIN email_accounts a ON a.organization_id = c.organization_id AND a.id = c.email_account_id
        "#,
        id,
        job_id,
        stale,
    )
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(Claim::Missing);
    };
    match (
        row.id,
        row.organization_id,
        row.recipient,
        row.subject,
        row.attempts,
        row.claimed_at,
    ) {
        (
            Some(id),
            Some(organization_id),
            Some(recipient),
            Some(subject),
            Some(attempts),
            Some(claimed_at),
        ) => Ok(Claim::Claimed(Box::new(Claimed {
            id,
            organization_id,
            broadcast_id: row.broadcast_id,
            email_account_id: row.email_account_id,
            recipient,
            subject,
            body_text: row.body_text,
            body_html: row.body_html,
            attempts,
            claimed_at,
            suppressed: row.suppressed,
            account: match (
                row.email_account_id,
                row.account_provider,
                row.account_status,
                row.account_version,
            ) {
                (Some(id), Some(provider), Some(status), Some(version)) => Some(AccountState {
                    id,
                    provider,
                    status,
                    status_reason: row.account_reason,
                    version,
                }),
                _ => None,
            },
        }))),
        _ if row.previous == "sending" => {
            Ok(Claim::Busy(row.previous_claim.unwrap_or_else(Utc::now)))
        }
        _ => Ok(Claim::Final(row.previous)),
    }
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        provider_message_id: String,
    },
    /// Will be retried by the job.
    Retrying {
        error: String,
    },
    Failed {
        error: String,
    },
    /// The mailbox does not exist; the address is suppressed too.
    Bounced {
        error: String,
    },
    Suppressed,
}

/// Marks a claimed delivery with the attempt's outcome (no-op if the claim was taken over).
/// Returns whether the mark applied.
///
/// # Errors
/// Database errors.
pub async fn mark(
    conn: &mut PgConnection,
    claimed: &Claimed,
    outcome: &Outcome,
) -> sqlx::Result<bool> {
    let (status, message_id, error, detail) = match outcome {
        Outcome::Sent {
            provider_message_id,
        } => (
            "sent",
            Some(provider_message_id.as_str()),
            None,
            Some(provider_message_id.as_str()),
        ),
        Outcome::Retrying { error } => {
            ("retrying", None, Some(error.as_str()), Some(error.as_str()))
        }
        Outcome::Failed { error } => ("failed", None, Some(error.as_str()), Some(error.as_str())),
        Outcome::Bounced { error } => ("bounced", None, Some(error.as_str()), Some(error.as_str())),
        Outcome::Suppressed => (
            "suppressed",
            None,
            None,
            Some("the address was suppressed after the broadcast was sent"),
        ),
    };
    let marked = sqlx::query_scalar!(
        r#"
        WITH marked AS (
            UPDATE email_deliveries SET
                status = $3,
                provider_message_id = coalesce($4, provider_message_id),
                last_error = coalesce($5, last_error),
                sent_at = CASE WHEN $3 = 'sent' THEN now() END
            WHERE id = $1 AND status = 'sending' AND claimed_at = $2
            RETURNING id, organization_id, recipient, broadcast_id
        ), history AS (
            INSERT INTO email_delivery_events (organization_id, delivery_id, status, detail)
            SELECT organization_id, id, $3, $6 FROM marked
        ), suppressed AS (
            INSERT INTO email_suppressions (organization_id, email, reason, source_broadcast_id)
            SELECT organization_id, recipient, 'hard_bounce', broadcast_id FROM marked WHERE $3 = 'bounced'
            ON CONFLICT DO NOTHING
        )
        SELECT count(*) AS "count!" FROM marked
        "#,
        claimed.id,
        claimed.claimed_at,
        status,
        message_id,
        error,
        detail,
    )
    .fetch_one(conn)
    .await?;
    Ok(marked > 0)
}

/// A delivery as listed.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub id: Uuid,
    pub recipient: String,
    pub status: String,
    pub provider_message_id: Option<String>,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One entry of a delivery's history.
#[derive(Debug, Clone)]
pub struct Event {
    pub delivery_id: Uuid,
    pub status: String,
    pub detail: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// A broadcast's deliveries (optionally of one status), oldest first, after `after_id`.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadBroadcasts>,
    broadcast_id: Uuid,
    status: Option<&str>,
    after_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Delivery>> {
    sqlx::query_as!(
        Delivery,
        r#"
        SELECT id, recipient, status, provider_message_id, attempts, last_error, sent_at, created_at, updated_at
        FROM email_deliveries
        WHERE organization_id = $1 AND broadcast_id = $2 AND ($3::text IS NULL OR status = $3)
          AND ($4::uuid IS NULL OR id > $4)
        ORDER BY id
        LIMIT $5
        "#,
        proof.organization_id(),
        broadcast_id,
        status,
        after_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// The history of the given deliveries, in order.
///
/// # Errors
/// Database errors.
pub async fn history(
    conn: &mut PgConnection,
    proof: &Granted<ReadBroadcasts>,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Event>> {
    sqlx::query_as!(
        Event,
        r#"
        SELECT delivery_id, status, detail, occurred_at FROM email_delivery_events
        WHERE organization_id = $1 AND delivery_id = ANY($2)
        ORDER BY occurred_at, id
        "#,
        proof.organization_id(),
        ids,
    )
    .fetch_all(conn)
    .await
}

/// Who a delivery went to (platform connection: the unsubscribe link names only the delivery).
#[derive(Debug, Clone)]
pub struct Recipient {
    pub organization_id: Uuid,
    pub broadcast_id: Option<Uuid>,
    pub email: String,
}

/// The recipient of a delivery.
///
/// # Errors
/// Database errors.
pub async fn recipient(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Recipient>> {
    sqlx::query_as!(
        Recipient,
        r#"SELECT organization_id, broadcast_id, recipient AS email FROM email_deliveries WHERE id = $1"#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// An entry of the suppression list.
#[derive(Debug, Clone)]
pub struct Suppression {
    pub id: Uuid,
    pub email: String,
    pub reason: String,
    pub source_broadcast_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// Adds an address to an organization's suppression list (no-op if it is there); returns the
/// entry.
///
/// # Errors
/// Database errors.
pub async fn suppress(
    conn: &mut PgConnection,
    organization_id: Uuid,
    email: &str,
    reason: &str,
    source_broadcast_id: Option<Uuid>,
) -> sqlx::Result<Suppression> {
    sqlx::query_as!(
        Suppression,
        r#"
        WITH inserted AS (
            INSERT INTO email_suppressions (organization_id, email, reason, source_broadcast_id)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT DO NOTHING
            RETURNING id, email, reason, source_broadcast_id, created_at
        )
        SELECT id AS "id!", email AS "email!", reason AS "reason!", source_broadcast_id, created_at AS "created_at!"
        FROM inserted
        UNION ALL
        SELECT id, email, reason, source_broadcast_id, created_at FROM email_suppressions
        WHERE organization_id = $1 AND lower(email) = lower($2) AND NOT EXISTS (SELECT 1 FROM inserted)
        "#,
        organization_id,
        email,
        reason,
        source_broadcast_id,
    )
    .fetch_one(conn)
    .await
}

/// The suppression list, newest first.
///
/// # Errors
/// Database errors.
pub async fn suppressions(
    conn: &mut PgConnection,
    proof: &Granted<ReadBroadcasts>,
    before_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Suppression>> {
    sqlx::query_as!(
        Suppression,
        r#"
        SELECT id, email, reason, source_broadcast_id, created_at FROM email_suppressions
        WHERE organization_id = $1 AND ($2::uuid IS NULL OR id < $2)
        ORDER BY id DESC
        LIMIT $3
        "#,
        proof.organization_id(),
        before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Removes an entry from the suppression list; returns whether it existed.
///
/// # Errors
/// Database errors.
pub async fn unsuppress(
    conn: &mut PgConnection,
    proof: &Granted<ManageBroadcasts>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "DELETE FROM email_suppressions WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Deliveries left `queued`, `retrying` or `sending` whose send job is gone or finished (a job
/// discarded by a timeout or a crash on its last attempt never marked its delivery) become
/// `failed`, so every delivery ends in a visible state. Returns how many.
///
/// # Errors
/// Database errors.
pub async fn fail_orphans(conn: &mut PgConnection) -> sqlx::Result<u64> {
    sqlx::query!(
        r#"
        WITH orphans AS (
            UPDATE email_deliveries d SET status = 'failed',
                last_error = coalesce(d.last_error, 'its send job ended without a result')
            WHERE d.status IN ('queued', 'retrying', 'sending') AND d.job_id IS NOT NULL
              AND d.updated_at < now() - interval '1 minute'
              AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = d.job_id
                              AND j.state IN ('scheduled', 'available', 'retryable', 'running'))
            RETURNING d.id, d.organization_id, d.last_error
        )
        INSERT INTO email_delivery_events (organization_id, delivery_id, status, detail)
        SELECT organization_id, id, 'failed', last_error FROM orphans
        "#,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribe_tokens_name_their_delivery_and_refuse_tampering() {
        let key = EncryptionKey::from_bytes([7; 32]);
        let other = EncryptionKey::from_bytes([8; 32]);
        let id = Uuid::now_v7();
        let token = unsubscribe_token(&key, id);
        assert_eq!(token.len(), 43);
        assert_eq!(unsubscribe_delivery(&key, &token), Some(id));
        assert_eq!(unsubscribe_delivery(&other, &token), None);
        // Another delivery's id with this signature, a flipped byte, a short or foreign token.
        use base64::Engine as _;
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&token)
            .unwrap();
        bytes[3] ^= 1;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(unsubscribe_delivery(&key, &forged), None);
        assert_eq!(unsubscribe_delivery(&key, &token[..40]), None);
        assert_eq!(unsubscribe_delivery(&key, "not a token!"), None);
    }
}
