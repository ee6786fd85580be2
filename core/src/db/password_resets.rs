//! Single-use password reset tokens (stored as SHA-256, valid 30 minutes).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::crypto;

/// How long a reset link works.
pub const TTL: Duration = Duration::from_secs(30 * 60);
/// At most one new link per account in this interval, so the endpoint cannot flood an inbox.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);

/// A new token for `user_id`, or `None` when one was issued less than [`MIN_INTERVAL`] ago.
///
/// # Errors
/// Database errors.
pub async fn create(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> sqlx::Result<Option<(String, DateTime<Utc>)>> {
    // Serialise concurrent requests for the same user so the interval holds.
    sqlx::query!("SELECT id FROM users WHERE id = $1 FOR UPDATE", user_id)
        .fetch_optional(&mut *conn)
        .await?;
    let recent = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM password_reset_tokens
                          WHERE user_id = $1 AND created_at > now() - make_interval(secs => $2)) AS "recent!""#,
        user_id,
        MIN_INTERVAL.as_secs_f64(),
    )
    .fetch_one(&mut *conn)
    .await?;
    if recent {
        return Ok(None);
    }
    let token = crypto::random_token(32);
    let expires_at = Utc::now() + chrono::Duration::seconds(TTL.as_secs() as i64);
    sqlx::query!(
        "INSERT INTO password_reset_tokens (user_id, token_hash, expires_at) VALUES ($1, $2, $3)",
        user_id,
        crypto::token_digest(&token),
        expires_at,
    )
    .execute(conn)
    .await?;
    Ok(Some((token, expires_at)))
}

/// Spends a live token; returns its user. Every other live token of the user dies with it.
///
/// # Errors
/// Database errors.
/// The user a live token resets the password of, without using it up.
///
/// # Errors
/// Database errors.
pub async fn user_of(conn: &mut PgConnection, token: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"
        SELECT user_id FROM password_reset_tokens
        WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
        "#,
        crypto::token_digest(token),
    )
    .fetch_optional(conn)
    .await
}

pub async fn consume(conn: &mut PgConnection, token: &str) -> sqlx::Result<Option<Uuid>> {
    let user_id = sqlx::query_scalar!(
        r#"
        UPDATE password_reset_tokens SET used_at = now()
        WHERE token_hash = $1 AND used_at IS NULL AND expires_at > now()
        RETURNING user_id
        "#,
        crypto::token_digest(token),
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(user_id) = user_id {
        sqlx::query!(
            "UPDATE password_reset_tokens SET used_at = now() WHERE user_id = $1 AND used_at IS NULL",
            user_id
        )
        .execute(conn)
        .await?;
    }
    Ok(user_id)
}
