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
