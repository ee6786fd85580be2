//! Stored first responses of requests carrying an `Idempotency-Key` (the API's
//! `idempotency` module has the rules).

use sqlx::PgConnection;
use uuid::Uuid;

/// Takes `key` for a new request (a fresh key, or one whose previous use expired); `false`
/// when it is held by an earlier request, whose row this call waited on if it was in flight.
///
/// # Errors
/// Database errors.
pub async fn take(
    conn: &mut PgConnection,
    organization_id: Uuid,
    key: &str,
    operation: &str,
    request_hash: &[u8],
) -> sqlx::Result<bool> {
    let taken = sqlx::query_scalar!(
        r#"
        INSERT INTO idempotency_keys (organization_id, key, method, path, request_hash, locked_at)
        VALUES ($1, $2, 'POST', $3, $4, now())
        ON CONFLICT (organization_id, key) DO UPDATE SET
            path = EXCLUDED.path, request_hash = EXCLUDED.request_hash, locked_at = now(),
            response_status = NULL, response_headers = NULL, response_body = NULL,
            created_at = now(), expires_at = now() + interval '24 hours'
        WHERE idempotency_keys.expires_at < now()
        RETURNING id
        "#,
        organization_id,
        key,
        operation,
        request_hash,
    )
    .fetch_optional(conn)
    .await?;
    Ok(taken.is_some())
}

/// The earlier use of a key.
#[derive(Debug, Clone)]
pub struct Stored {
    pub operation: String,
    pub request_hash: Vec<u8>,
    pub response_body: Option<Vec<u8>>,
}

/// The earlier use of `key`.
///
/// # Errors
/// Database errors.
pub async fn stored(
    conn: &mut PgConnection,
    organization_id: Uuid,
    key: &str,
) -> sqlx::Result<Option<Stored>> {
    sqlx::query_as!(
        Stored,
        r#"
        SELECT path AS operation, request_hash, response_body FROM idempotency_keys
        WHERE organization_id = $1 AND key = $2
        "#,
        organization_id,
        key,
    )
    .fetch_optional(conn)
    .await
}

/// Stores the response of the request that took `key`.
///
/// # Errors
/// Database errors.
pub async fn store(
    conn: &mut PgConnection,
    organization_id: Uuid,
    key: &str,
    status: u16,
    body: &[u8],
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        UPDATE idempotency_keys SET response_status = $3, response_body = $4, locked_at = NULL
        WHERE organization_id = $1 AND key = $2
        "#,
        organization_id,
        key,
        i16::try_from(status).unwrap_or(200),
        body,
    )
    .execute(conn)
    .await
    .map(|_| ())
}
