//! Queries on `api_keys`: keys are looked up by the SHA-256 digest of the presented key.

use sqlx::PgConnection;
use uuid::Uuid;

/// The organization and role an API key acts as.
#[derive(Debug, Clone)]
pub struct ApiKeyCaller {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub role: String,
}

/// The live (not revoked, not expired) key with this digest, marking it used.
///
/// # Errors
/// Database errors.
pub async fn authenticate(
    conn: &mut PgConnection,
    key_digest: &[u8],
) -> sqlx::Result<Option<ApiKeyCaller>> {
    sqlx::query_as!(
        ApiKeyCaller,
        r#"
        UPDATE api_keys SET last_used_at = now()
        WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
        RETURNING id, organization_id, role
        "#,
        key_digest,
    )
    .fetch_optional(conn)
    .await
}

/// Creates a key; the caller shows `key` once and never stores it.
///
/// # Errors
/// Database errors (unknown role, prefix collision).
pub async fn insert(
    conn: &mut PgConnection,
    organization_id: Uuid,
    name: &str,
    role: &str,
    key: &str,
) -> sqlx::Result<Uuid> {
    let prefix: String = key.chars().take(11).collect();
    sqlx::query_scalar!(
        "INSERT INTO api_keys (organization_id, name, prefix, key_hash, role) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        organization_id,
        name,
        prefix,
        crate::crypto::token_digest(key),
        role,
    )
    .fetch_one(conn)
    .await
}

/// A fresh key: `zk_` + 8 characters of visible prefix + 32 random characters.
pub fn generate() -> String {
    let random: String = crate::crypto::random_token(32)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("zk_{random}")
}
