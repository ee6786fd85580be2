//! Login sessions and their single-use, rotating refresh tokens.
//!
//! A session is one refresh-token family. Refreshing spends the presented token and issues its
//! successor; presenting a spent token again means it was stolen (or replayed), so the whole
//! session is revoked. Tokens are opaque (`zr_` + 256 random bits) and stored as SHA-256.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{access::Role, crypto, db::audit::Client};

/// A refresh token handed to the client once.
#[derive(Debug, Clone)]
pub struct IssuedRefresh {
    pub session_id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

fn new_token() -> String {
    format!("zr_{}", crypto::random_token(32))
}

fn expiry(ttl: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(30))
}

/// Inserts a session row; `cookie`, for a browser session, is the digest of its cookie.
async fn insert(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
    client: &Client,
    expires_at: DateTime<Utc>,
    cookie: Option<&[u8]>,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO sessions (organization_id, user_id, user_agent, ip_address, expires_at, cookie_sha256)
        VALUES ($1, $2, $3, $4::text::inet, $5, $6)
        RETURNING id
        "#,
        organization_id,
        user_id,
        client.user_agent(),
        client.ip(),
        expires_at,
        cookie,
    )
    .fetch_one(conn)
    .await
}

/// Opens a session for `user_id` in `organization_id` with its first refresh token.
///
/// # Errors
/// Database errors.
pub async fn create(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
    client: &Client,
    ttl: Duration,
) -> sqlx::Result<IssuedRefresh> {
    let expires_at = expiry(ttl);
    let session_id = insert(conn, organization_id, user_id, client, expires_at, None).await?;
    let token = new_token();
    sqlx::query!(
        "INSERT INTO refresh_tokens (organization_id, session_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
        organization_id,
        session_id,
        crypto::token_digest(&token),
        expires_at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(IssuedRefresh {
        session_id,
        token,
        expires_at,
    })
}

/// A browser session's cookie, handed to the browser once.
#[derive(Debug, Clone)]
pub struct IssuedCookie {
    pub session_id: Uuid,
    /// `zc_` + 256 random bits; only its SHA-256 is stored.
    pub cookie: String,
    pub expires_at: DateTime<Utc>,
}

/// Opens a browser session (the dashboard's), held by a cookie instead of refresh tokens.
///
/// # Errors
/// Database errors.
pub async fn create_browser(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
    client: &Client,
    ttl: Duration,
) -> sqlx::Result<IssuedCookie> {
    let expires_at = expiry(ttl);
    let cookie = format!("zc_{}", crypto::random_token(32));
    let digest = crypto::token_digest(&cookie);
    let session_id = insert(
        conn,
        organization_id,
        user_id,
        client,
        expires_at,
        Some(&digest),
    )
    .await?;
    Ok(IssuedCookie {
        session_id,
        cookie,
        expires_at,
    })
}

/// Who a live browser session belongs to.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub organization_id: Uuid,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub role: Role,
}

/// The live browser session holding `cookie`: `None` when unknown, revoked or expired, or when
/// its user is disabled or no longer a member of a live organization (as [`live_role`]).
///
/// # Errors
/// Database errors.
pub async fn live_browser(
    conn: &mut PgConnection,
    cookie: &str,
) -> sqlx::Result<Option<BrowserSession>> {
    let row = sqlx::query!(
        r#"
        SELECT s.organization_id, s.id, s.user_id, u.email, m.role
        FROM sessions s
        JOIN users u ON u.id = s.user_id
        JOIN memberships m ON m.organization_id = s.organization_id AND m.user_id = s.user_id
        JOIN organizations o ON o.id = s.organization_id
        WHERE s.cookie_sha256 = $1
          AND s.revoked_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL
          AND o.deleted_at IS NULL
        "#,
        crypto::token_digest(cookie),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|r| {
        Some(BrowserSession {
            organization_id: r.organization_id,
            session_id: r.id,
            user_id: r.user_id,
            email: r.email,
            role: r.role.parse().ok()?,
        })
    }))
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Refreshed {
    /// The token was live: here is its successor, and who the session belongs to.
    Rotated {
        organization_id: Uuid,
        user_id: Uuid,
        role: Role,
        refresh: IssuedRefresh,
    },
    /// The token had already been used: the session is now revoked.
    Reused {
        organization_id: Uuid,
        user_id: Uuid,
        session_id: Uuid,
    },
    /// Unknown, expired, or of a revoked session (or a user no longer a member).
    Invalid,
}

/// Spends `token` and issues its successor (extending the session by `ttl`, never past
/// `max_age` from its sign-in), or revokes the session when `token` was spent before. Run it in
/// a transaction and commit whatever it returns.
///
/// # Errors
/// Database errors.
pub async fn refresh(
    conn: &mut PgConnection,
    token: &str,
    ttl: Duration,
    max_age: Duration,
) -> sqlx::Result<Refreshed> {
    let Some(row) = sqlx::query!(
        r#"
        SELECT rt.id, rt.organization_id, rt.session_id, rt.used_at, rt.expires_at,
               s.user_id, s.revoked_at, s.expires_at AS session_expires_at, s.created_at AS session_created_at,
               u.disabled_at,
               m.role AS "role?"
        FROM refresh_tokens rt
        JOIN sessions s ON s.organization_id = rt.organization_id AND s.id = rt.session_id
        JOIN users u ON u.id = s.user_id
        LEFT JOIN memberships m ON m.organization_id = s.organization_id AND m.user_id = s.user_id
        WHERE rt.token_hash = $1
        FOR UPDATE OF rt, s
        "#,
        crypto::token_digest(token),
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(Refreshed::Invalid);
    };
    if row.used_at.is_some() {
        if row.revoked_at.is_none() {
            revoke(
                conn,
                row.organization_id,
                row.session_id,
                "refresh_token_reuse",
            )
            .await?;
        }
        return Ok(Refreshed::Reused {
            organization_id: row.organization_id,
            user_id: row.user_id,
            session_id: row.session_id,
        });
    }
    let now = Utc::now();
    let role = row.role.as_deref().and_then(|r| r.parse::<Role>().ok());
    let (Some(role), None) = (role, row.revoked_at) else {
        return Ok(Refreshed::Invalid);
    };
    let ends = row.session_created_at
        + chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::days(30));
    if row.expires_at <= now
        || row.session_expires_at <= now
        || ends <= now
        || row.disabled_at.is_some()
    {
        return Ok(Refreshed::Invalid);
    }
    let expires_at = expiry(ttl).min(ends);
    let token = new_token();
    sqlx::query!(
        r#"
        WITH next AS (
            INSERT INTO refresh_tokens (organization_id, session_id, token_hash, expires_at)
            VALUES ($1, $2, $3, $4)
            RETURNING id
        )
        UPDATE refresh_tokens SET used_at = now(), replaced_by = (SELECT id FROM next) WHERE id = $5
        "#,
        row.organization_id,
        row.session_id,
        crypto::token_digest(&token),
        expires_at,
        row.id,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE sessions SET last_used_at = now(), expires_at = $3 WHERE organization_id = $1 AND id = $2",
        row.organization_id,
        row.session_id,
        expires_at,
    )
    .execute(&mut *conn)
    .await?;
    Ok(Refreshed::Rotated {
        organization_id: row.organization_id,
        user_id: row.user_id,
        role,
        refresh: IssuedRefresh {
            session_id: row.session_id,
            token,
            expires_at,
        },
    })
}

/// Revokes one session (all its refresh tokens die with it; access tokens are checked against
/// it on every request). Returns whether it was live.
///
/// # Errors
/// Database errors.
pub async fn revoke(
    conn: &mut PgConnection,
    organization_id: Uuid,
    session_id: Uuid,
    reason: &str,
) -> sqlx::Result<bool> {
    sqlx::query!(
        r#"
        UPDATE sessions SET revoked_at = now(), revoked_reason = $3
        WHERE organization_id = $1 AND id = $2 AND revoked_at IS NULL
        "#,
        organization_id,
        session_id,
        reason,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Revokes one of the proof holder's own sessions. `false` when they have no such live session.
///
/// # Errors
/// Database errors.
pub async fn revoke_own(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::OwnAccount>,
    user_id: Uuid,
    session_id: Uuid,
    reason: &str,
) -> sqlx::Result<bool> {
    sqlx::query!(
        r#"
        UPDATE sessions SET revoked_at = now(), revoked_reason = $4
        WHERE organization_id = $1 AND id = $2 AND user_id = $3 AND revoked_at IS NULL
        "#,
        proof.organization_id(),
        session_id,
        user_id,
        reason,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Revokes every live session of a user (in every organization). Returns how many.
///
/// # Errors
/// Database errors.
pub async fn revoke_all_of_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    reason: &str,
) -> sqlx::Result<u64> {
    sqlx::query!(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2 WHERE user_id = $1 AND revoked_at IS NULL",
        user_id,
        reason,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected())
}

/// The role of a live session's user, checked on every request made with its access tokens:
/// `None` once the session is revoked or expired, the user disabled or no longer a member.
///
/// # Errors
/// Database errors.
pub async fn live_role(
    conn: &mut PgConnection,
    organization_id: Uuid,
    session_id: Uuid,
    user_id: Uuid,
) -> sqlx::Result<Option<Role>> {
    let role = sqlx::query_scalar!(
        r#"
        SELECT m.role
        FROM sessions s
        JOIN users u ON u.id = s.user_id
        JOIN memberships m ON m.organization_id = s.organization_id AND m.user_id = s.user_id
        JOIN organizations o ON o.id = s.organization_id
        WHERE s.organization_id = $1 AND s.id = $2 AND s.user_id = $3
          AND s.revoked_at IS NULL AND s.expires_at > now() AND u.disabled_at IS NULL
          AND o.deleted_at IS NULL
        "#,
        organization_id,
        session_id,
        user_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(role.and_then(|r| r.parse().ok()))
}

/// One session as listed to its user.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: Uuid,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// The user's live sessions in the proof's organization, newest first.
///
/// # Errors
/// Database errors.
pub async fn list_live(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::OwnAccount>,
    user_id: Uuid,
) -> sqlx::Result<Vec<SessionInfo>> {
    sqlx::query_as!(
        SessionInfo,
        r#"
        SELECT id, user_agent, host(ip_address) AS ip_address, created_at, last_used_at, expires_at
        FROM sessions
        WHERE organization_id = $1 AND user_id = $2 AND revoked_at IS NULL AND expires_at > now()
        ORDER BY created_at DESC
        "#,
        proof.organization_id(),
        user_id,
    )
    .fetch_all(conn)
    .await
}
