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
        INSERT INTO api_keys
            (organization_id, created_by, name, prefix, key_hash, role, expires_at, parent_key_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        RETURNING id
        "#,
        organization_id,
        new.created_by,
        new.name,
        prefix(new.key),
        crate::crypto::token_digest(new.key),
        new.role.as_str(),
        new.expires_at,
        new.parent_key_id,
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
    /// The key creating this one, when a key does.
    pub parent_key_id: Option<Uuid>,
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
    pub parent_key_id: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub last_used_at: Option<chrono::DateTime<chrono::Utc>>,
    pub revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// `revoked` (by hand) or `creator_removed`.
    pub revoked_reason: Option<String>,
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
        SELECT id, name, prefix, role, created_by, parent_key_id, created_at, expires_at,
               last_used_at, revoked_at, revoked_reason
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
                r#"
                UPDATE api_keys SET revoked_at = now(), revoked_reason = 'revoked'
                WHERE organization_id = $1 AND id = $2
                "#,
                org,
                id,
            )
            .execute(conn)
            .await?;
            Ok(Some(true))
        }
    }
}

/// What happened to a member whose keys follow them.
#[derive(Debug, Clone, Copy)]
pub enum CreatorChange {
    /// Removed from the organization: their keys are revoked.
    Removed,
    /// Given this role: their keys above it come down to it.
    Role(crate::access::Role),
}

/// Makes the live keys `user_id` created in the organization, and the keys those keys created
/// (and so on), follow the member: revoked with them, or no higher than their new role.
/// Returns how many keys changed.
///
/// # Errors
/// Database errors.
pub async fn follow_creator(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
    change: CreatorChange,
) -> sqlx::Result<u64> {
    // Lowest first: a key's role may only move down this list.
    let ranks: Vec<String> = crate::access::Role::ALL
        .iter()
        .rev()
        .map(|r| r.as_str().to_owned())
        .collect();
    let (revoke, role) = match change {
        CreatorChange::Removed => (true, None),
        CreatorChange::Role(role) => (false, Some(role.as_str())),
    };
    let changed = sqlx::query!(
        r#"
        WITH RECURSIVE owned AS (
            SELECT id FROM api_keys
            WHERE organization_id = $1 AND created_by = $2 AND revoked_at IS NULL
            UNION
            SELECT k.id FROM api_keys k JOIN owned o ON k.parent_key_id = o.id
            WHERE k.organization_id = $1 AND k.revoked_at IS NULL
        )
        UPDATE api_keys SET
            revoked_at = CASE WHEN $3 THEN now() ELSE revoked_at END,
            revoked_reason = CASE WHEN $3 THEN 'creator_removed' ELSE revoked_reason END,
            role = CASE WHEN $3 THEN role ELSE $4 END
        WHERE organization_id = $1 AND id IN (SELECT id FROM owned)
          AND ($3 OR array_position($5::text[], role) > array_position($5::text[], $4))
        "#,
        organization_id,
        user_id,
        revoke,
        role,
        &ranks,
    )
    .execute(conn)
    .await?;
    Ok(changed.rows_affected())
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
