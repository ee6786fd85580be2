//! Queries on `memberships`.

use sqlx::PgConnection;
use uuid::Uuid;

/// Adds a user to an organization with a role (`admin`, `manager`, `lead`, `member`, `viewer`).
///
/// # Errors
/// Database errors (unknown role, duplicate membership).
pub async fn insert(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
    role: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "INSERT INTO memberships (id, organization_id, user_id, role) VALUES ($1, $2, $3, $4)",
        Uuid::now_v7(),
        organization_id,
        user_id,
        role
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// A member as listed.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: String,
    pub joined_at: chrono::DateTime<chrono::Utc>,
}

/// The organization's members, by join date.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::ReadMembers>,
) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as!(
        Member,
        r#"
        SELECT u.id AS user_id, u.email, u.name, m.role, m.created_at AS joined_at
        FROM memberships m JOIN users u ON u.id = m.user_id
        WHERE m.organization_id = $1
        ORDER BY m.created_at, m.id
        "#,
        proof.organization_id(),
    )
    .fetch_all(conn)
    .await
}

/// One member of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<P>,
    user_id: Uuid,
) -> sqlx::Result<Option<Member>> {
    sqlx::query_as!(
        Member,
        r#"
        SELECT u.id AS user_id, u.email, u.name, m.role, m.created_at AS joined_at
        FROM memberships m JOIN users u ON u.id = m.user_id
        WHERE m.organization_id = $1 AND m.user_id = $2
        "#,
        proof.organization_id(),
        user_id,
    )
    .fetch_optional(conn)
    .await
}

/// Why a membership change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("no such member")]
    NotFound,
    #[error("the organization's last admin can be neither demoted nor removed")]
    LastAdmin,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Locks the organization's admin memberships (so two concurrent demotions cannot leave it
/// without an admin) and returns `user_id`'s current role.
async fn lock_for_change(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
) -> Result<(String, i64), ChangeError> {
    let admins = sqlx::query_scalar!(
        "SELECT user_id FROM memberships WHERE organization_id = $1 AND role = 'admin' ORDER BY user_id FOR UPDATE",
        organization_id,
    )
    .fetch_all(&mut *conn)
    .await?;
    let role = sqlx::query_scalar!(
        "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2 FOR UPDATE",
        organization_id,
        user_id,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(ChangeError::NotFound)?;
    Ok((role, admins.len() as i64))
}

/// Gives `user_id` the role `role`; returns the previous role.
///
/// # Errors
/// [`ChangeError::LastAdmin`] when it would leave the organization without an admin.
pub async fn change_role(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::ManageMembers>,
    user_id: Uuid,
    role: crate::access::Role,
) -> Result<String, ChangeError> {
    let org = proof.organization_id();
    let (previous, admins) = lock_for_change(conn, org, user_id).await?;
    if previous == "admin" && role != crate::access::Role::Admin && admins <= 1 {
        return Err(ChangeError::LastAdmin);
    }
    sqlx::query!(
        "UPDATE memberships SET role = $3 WHERE organization_id = $1 AND user_id = $2",
        org,
        user_id,
        role.as_str(),
    )
    .execute(&mut *conn)
    .await?;
    Ok(previous)
}

/// Removes `user_id` from the organization and revokes their sessions in it; returns the role
/// they had.
///
/// # Errors
/// [`ChangeError::LastAdmin`] for the last admin.
pub async fn remove(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::ManageMembers>,
    user_id: Uuid,
) -> Result<String, ChangeError> {
    let org = proof.organization_id();
    let (previous, admins) = lock_for_change(conn, org, user_id).await?;
    if previous == "admin" && admins <= 1 {
        return Err(ChangeError::LastAdmin);
    }
    sqlx::query!(
        r#"
        UPDATE sessions SET revoked_at = now(), revoked_reason = 'member_removed'
        WHERE organization_id = $1 AND user_id = $2 AND revoked_at IS NULL
        "#,
        org,
        user_id,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM memberships WHERE organization_id = $1 AND user_id = $2",
        org,
        user_id,
    )
    .execute(&mut *conn)
    .await?;
    Ok(previous)
}

/// The organization a user signs in to.
#[derive(Debug, Clone)]
pub struct LoginMembership {
    pub organization_id: Uuid,
    pub organization_name: String,
    pub role: crate::access::Role,
}

/// The organization a user signs in to: `organization_id` when they are a member of it,
/// otherwise (when `None`) their oldest membership.
///
/// # Errors
/// Database errors.
pub async fn for_login(
    conn: &mut PgConnection,
    user_id: Uuid,
    organization_id: Option<Uuid>,
) -> sqlx::Result<Option<LoginMembership>> {
    let row = sqlx::query!(
        r#"
        SELECT m.organization_id, o.name, m.role
        FROM memberships m JOIN organizations o ON o.id = m.organization_id
        WHERE m.user_id = $1 AND ($2::uuid IS NULL OR m.organization_id = $2) AND o.deleted_at IS NULL
        ORDER BY m.created_at, m.id
        LIMIT 1
        "#,
        user_id,
        organization_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|r| {
        Some(LoginMembership {
            organization_id: r.organization_id,
            organization_name: r.name,
            role: r.role.parse().ok()?,
        })
    }))
}

/// A person to write to: name and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub name: String,
    pub email: String,
}

/// The organization's members with exactly `role` (the platform's read, for agents' alerts).
///
/// # Errors
/// Database errors.
pub async fn with_role(
    conn: &mut PgConnection,
    organization_id: Uuid,
    role: crate::access::Role,
) -> sqlx::Result<Vec<Contact>> {
    sqlx::query_as!(
        Contact,
        r#"
        SELECT u.name, u.email FROM memberships ms JOIN users u ON u.id = ms.user_id
        WHERE ms.organization_id = $1 AND ms.role = $2
        ORDER BY u.email
        "#,
        organization_id,
        role.as_str(),
    )
    .fetch_all(conn)
    .await
}
