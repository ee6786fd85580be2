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

/// The live (not revoked, not expired) key with this digest, marking it used (at most once a
/// minute).
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
        WITH live AS (
            SELECT id, organization_id, role, last_used_at FROM api_keys
            WHERE key_hash = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
              AND organization_id IN (SELECT id FROM organizations WHERE deleted_at IS NULL)
        ), touched AS (
            -- At most one write a minute per key, however busy it is.
            UPDATE api_keys SET last_used_at = now()
            WHERE id IN (SELECT id FROM live
                         WHERE last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
        )
        SELECT id AS "id!", organization_id AS "organization_id!", role AS "role!" FROM live
        "#,
        key_digest,
    )
    .fetch_optional(conn)
    .await
}

/// Creates a key; the caller shows `key` once and never stores it. Returns its id.
///
/// # Errors
/// Database errors (unknown role, prefix collision).
pub async fn insert(
    conn: &mut PgConnection,
    organization_id: Uuid,
    new: &NewKey<'_>,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO api_keys (organization_id, created_by, name, prefix, key_hash, role, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING id
        "#,
        organization_id,
        new.created_by,
        new.name,
        prefix(new.key),
        crate::crypto::token_digest(new.key),
        new.role.as_str(),
        new.expires_at,
    )
    .fetch_one(conn)
    .await
}

/// A key to create.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    pub name: &'a str,
    pub role: crate::access::Role,
    pub key: &'a str,
    pub created_by: Option<Uuid>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The visible part of a key (`zk_` + 8 characters), stored to recognise it in lists.
pub fn prefix(key: &str) -> String {
    key.chars().take(11).collect()
}

/// A key as listed (never the key itself).
#[derive(Debug, Clone)]
pub struct KeyInfo {
    pub id: Uuid,
    pub name: String,
    pub prefix: String,
    pub role: String,
    pub created_by: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The organization's keys, newest first, revoked ones included.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::ManageApiKeys>,
) -> sqlx::Result<Vec<KeyInfo>> {
    sqlx::query_as!(
        KeyInfo,
        r#"
        SELECT id, name, prefix, role, created_by, created_at, expires_at, last_used_at, revoked_at
        FROM api_keys WHERE organization_id = $1 ORDER BY created_at DESC, id DESC
        "#,
        proof.organization_id(),
    )
    .fetch_all(conn)
    .await
}

/// Revokes a key at once. `None` when the organization has no such key; `Some(false)` when it
/// was already revoked.
///
/// # Errors
/// Database errors.
pub async fn revoke(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::ManageApiKeys>,
    id: Uuid,
) -> sqlx::Result<Option<bool>> {
    let org = proof.organization_id();
    let found = sqlx::query_scalar!(
        "SELECT revoked_at FROM api_keys WHERE organization_id = $1 AND id = $2 FOR UPDATE",
        org,
        id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    match found {
        None => Ok(None),
        Some(Some(_)) => Ok(Some(false)),
        Some(None) => {
            sqlx::query!(
                "UPDATE api_keys SET revoked_at = now() WHERE organization_id = $1 AND id = $2",
                org,
                id,
            )
            .execute(conn)
            .await?;
            Ok(Some(true))
        }
    }
}

/// A fresh key: `zk_` + 8 characters of visible prefix + 32 random characters.
pub fn generate() -> String {
    let random: String = crate::crypto::random_token(32)
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    format!("zk_{random}")
}

/// The role of key `key_id` of `organization_id` while it is live (not revoked, not expired, its
/// organization not deleted): what a long-lived connection re-checks.
///
/// # Errors
/// Database errors.
pub async fn live_role(
    conn: &mut PgConnection,
    organization_id: Uuid,
    key_id: Uuid,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        r#"
        SELECT k.role FROM api_keys k JOIN organizations o ON o.id = k.organization_id
        WHERE k.organization_id = $1 AND k.id = $2 AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > now()) AND o.deleted_at IS NULL
        "#,
        organization_id,
        key_id,
    )
    .fetch_optional(conn)
    .await
}
