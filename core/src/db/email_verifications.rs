//! Single-use email verification links (stored as SHA-256, valid 48 hours). A link verifies the
//! address it was sent to: if the account's address changed since, it verifies nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto;

/// How long a verification link works.
pub const TTL: Duration = Duration::from_secs(48 * 3600);

/// A new link's token for `user_id`'s current address, and when it expires.
///
/// # Errors
/// Database errors.
pub async fn create(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<(String, DateTime<Utc>)> {
    let token = crypto::random_token(32);
    let expires_at = Utc::now() + chrono::Duration::seconds(TTL.as_secs() as i64);
    sqlx::query!(
        r#"
        INSERT INTO email_verification_tokens (user_id, email, token_hash, expires_at)
        SELECT id, email, $2, $3 FROM users WHERE id = $1
        "#,
        user_id,
        crypto::token_digest(&token),
        expires_at,
    )
    .execute(conn)
    .await?;
    Ok((token, expires_at))
}

/// Spends a live token and verifies the address it was sent to; returns the user, or `None`
/// for an unknown, used or expired token (or an address that changed since).
///
/// # Errors
/// Database errors.
pub async fn consume(conn: &mut PgConnection, token: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"
        WITH spent AS (
            UPDATE email_verification_tokens SET used_at = now()
            WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
            RETURNING user_id, email
        )
        UPDATE users u SET email_verified_at = coalesce(u.email_verified_at, now())
        FROM spent s WHERE u.id = s.user_id AND lower(u.email) = lower(s.email)
        RETURNING u.id
        "#,
        crypto::token_digest(token),
    )
    .fetch_optional(conn)
    .await
}

/// Marks `user_id`'s address verified by another proof of the mailbox (an accepted invitation
/// or a password reset, both links sent to it).
///
/// # Errors
/// Database errors.
pub async fn mark_verified(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET email_verified_at = now() WHERE id = $1 AND email_verified_at IS NULL",
        user_id,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Whether `user_id`'s address is verified.
///
/// # Errors
/// Database errors.
pub async fn is_verified(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT email_verified_at IS NOT NULL AS "verified!" FROM users WHERE id = $1"#,
        user_id,
    )
    .fetch_optional(conn)
    .await
    .map(|v| v.unwrap_or(false))
}
