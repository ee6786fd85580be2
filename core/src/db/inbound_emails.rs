//! Inbound email: each organization's secret token (hashed) and the raw messages posted with
//! it, each parsed by a run of the email parser agent.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageAgents};

/// Replaces the organization's token with one whose SHA-256 is `sha256`, made by the proof's
/// user (the parser acts as them).
///
/// # Errors
/// Database errors.
pub async fn rotate_token(
    conn: &mut PgConnection,
    proof: &Granted<ManageAgents>,
    sha256: &[u8],
) -> sqlx::Result<DateTime<Utc>> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO inbound_email_tokens (organization_id, token_sha256, created_by)
        VALUES ($1, $2, $3)
        ON CONFLICT (organization_id) DO UPDATE
            SET token_sha256 = EXCLUDED.token_sha256, created_by = EXCLUDED.created_by,
                created_at = now()
        RETURNING created_at
        "#,
        proof.organization_id(),
        sha256,
        proof.actor().user_id(),
    )
    .fetch_one(conn)
    .await
}

/// Whose token has this SHA-256: the organization and the token's maker. Call it on a system
/// transaction (the caller is not signed in).
///
/// # Errors
/// Database errors.
pub async fn by_token(
    conn: &mut PgConnection,
    sha256: &[u8],
) -> sqlx::Result<Option<(Uuid, Option<Uuid>)>> {
    let row = sqlx::query!(
        "SELECT organization_id, created_by FROM inbound_email_tokens WHERE token_sha256 = $1",
        sha256,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.organization_id, r.created_by)))
}

/// A message as received.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    pub message_id: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub raw: &'a [u8],
}

/// Records a message; `None` when the organization has one with its `Message-ID` already (a
/// redelivery).
///
/// # Errors
/// Database errors.
pub async fn insert(
    conn: &mut PgConnection,
    organization_id: Uuid,
    message: &NewMessage<'_>,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO inbound_emails (organization_id, message_id, sender, subject, raw)
        VALUES ($1, $2, $3, $4, $5)
        ON CONFLICT (organization_id, message_id) WHERE message_id IS NOT NULL DO NOTHING
        RETURNING id
        "#,
        organization_id,
        message.message_id,
        message.sender,
        message.subject,
        message.raw,
    )
    .fetch_optional(conn)
    .await
}

/// The message with this `Message-ID` and its run.
///
/// # Errors
/// Database errors.
pub async fn by_message_id(
    conn: &mut PgConnection,
    organization_id: Uuid,
    message_id: &str,
) -> sqlx::Result<Option<(Uuid, Option<Uuid>)>> {
    let row = sqlx::query!(
        "SELECT id, run_id FROM inbound_emails WHERE organization_id = $1 AND message_id = $2",
        organization_id,
        message_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| (r.id, r.run_id)))
}

/// Records the run that parses a message.
///
/// # Errors
/// Database errors.
pub async fn set_run(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    run_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE inbound_emails SET run_id = $3 WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
        run_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A message's raw bytes (the worker's read).
///
/// # Errors
/// Database errors.
pub async fn raw(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar!(
        "SELECT raw FROM inbound_emails WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await
}
