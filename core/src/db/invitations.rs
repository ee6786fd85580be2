//! Invitations to join an organization with a role: a single-use token (stored as SHA-256),
//! valid 7 days, at most one pending per address and organization.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    access::{Granted, InviteMembers, Role},
    crypto,
};

/// How long an invitation link works.
pub const TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// A created invitation and its token (for the email only).
#[derive(Debug, Clone)]
pub struct Created {
    pub id: Uuid,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum InviteError {
    #[error("this address already belongs to a member")]
    AlreadyMember,
    #[error("an invitation to this address is already pending")]
    Pending,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Invites `email` to the proof's organization as `role`.
///
/// # Errors
/// [`InviteError::AlreadyMember`], [`InviteError::Pending`], database errors.
pub async fn create(
    conn: &mut PgConnection,
    proof: &Granted<InviteMembers>,
    email: &str,
    role: Role,
) -> Result<Created, InviteError> {
    let org = proof.organization_id();
    let member = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM memberships m JOIN users u ON u.id = m.user_id
                          WHERE m.organization_id = $1 AND lower(u.email) = lower($2)) AS "member!""#,
        org,
        email,
    )
    .fetch_one(&mut *conn)
    .await?;
    if member {
        return Err(InviteError::AlreadyMember);
    }
    // An expired pending invitation no longer blocks a new one.
    sqlx::query!(
        r#"UPDATE invitations SET revoked_at = now()
           WHERE organization_id = $1 AND lower(email) = lower($2) AND accepted_at IS NULL
             AND revoked_at IS NULL AND expires_at <= now()"#,
        org,
        email,
    )
    .execute(&mut *conn)
    .await?;
    let token = crypto::random_token(32);
    let expires_at = Utc::now() + chrono::Duration::seconds(TTL.as_secs() as i64);
    let id = sqlx::query_scalar!(
        r#"
        INSERT INTO invitations (organization_id, email, role, token_hash, invited_by, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6)
        RETURNING id
        "#,
        org,
        email,
        role.as_str(),
        crypto::token_digest(&token),
        proof.actor().user_id(),
        expires_at,
    )
    .fetch_one(conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => InviteError::Pending,
        _ => InviteError::Database(e),
    })?;
    Ok(Created {
        id,
        token,
        expires_at,
    })
}

/// A live invitation being accepted.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub organization_name: String,
    pub email: String,
    pub role: Role,
}

/// Locks the live invitation with this token, if any.
///
/// # Errors
/// Database errors.
pub async fn pending(conn: &mut PgConnection, token: &str) -> sqlx::Result<Option<Pending>> {
    let row = sqlx::query!(
        r#"
        SELECT i.id, i.organization_id, o.name AS organization_name, i.email, i.role
        FROM invitations i JOIN organizations o ON o.id = i.organization_id
        WHERE i.token_hash = $1 AND i.accepted_at IS NULL AND i.revoked_at IS NULL
          AND i.expires_at > now() AND o.deleted_at IS NULL
        FOR UPDATE OF i
        "#,
        crypto::token_digest(token),
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|r| {
        Some(Pending {
            id: r.id,
            organization_id: r.organization_id,
            organization_name: r.organization_name,
            email: r.email,
            role: r.role.parse().ok()?,
        })
    }))
}

/// Marks an invitation accepted by `user_id`.
///
/// # Errors
/// Database errors.
pub async fn mark_accepted(conn: &mut PgConnection, id: Uuid, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE invitations SET accepted_at = now(), accepted_user_id = $2 WHERE id = $1",
        id,
        user_id,
    )
    .execute(conn)
    .await
    .map(|_| ())
}
