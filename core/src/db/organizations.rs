//! Queries on `organizations`.

use sqlx::PgConnection;
use uuid::Uuid;

/// Inserts an organization and returns its id.
///
/// # Errors
/// Database errors (e.g. a CHECK on the name).
pub async fn insert(conn: &mut PgConnection, name: &str) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        "INSERT INTO organizations (id, name) VALUES ($1, $2) RETURNING id",
        Uuid::now_v7(),
        name
    )
    .fetch_one(conn)
    .await
}
