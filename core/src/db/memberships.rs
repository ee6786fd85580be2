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

/// The role of a user in an organization.
///
/// # Errors
/// Database errors.
pub async fn role(
    conn: &mut PgConnection,
    organization_id: Uuid,
    user_id: Uuid,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        "SELECT role FROM memberships WHERE organization_id = $1 AND user_id = $2",
        organization_id,
        user_id
    )
    .fetch_optional(conn)
    .await
}
