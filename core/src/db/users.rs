//! Queries on `users`.

use sqlx::PgConnection;
use uuid::Uuid;

/// Inserts a user with an argon2id password hash and returns its id.
///
/// # Errors
/// Database errors, including the unique violation on the (case-insensitive) email.
pub async fn insert(
    conn: &mut PgConnection,
    email: &str,
    name: &str,
    password_hash: &str,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        "INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4) RETURNING id",
        Uuid::now_v7(),
        email,
        name,
        password_hash
    )
    .fetch_one(conn)
    .await
}

/// The id of the user with this email, compared case-insensitively.
///
/// # Errors
/// Database errors.
pub async fn find_id_by_email(conn: &mut PgConnection, email: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!("SELECT id FROM users WHERE lower(email) = lower($1)", email)
        .fetch_optional(conn)
        .await
}

/// The stored password hash of a user, if any.
///
/// # Errors
/// Database errors.
pub async fn password_hash(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT password_hash FROM users WHERE id = $1", user_id)
        .fetch_optional(conn)
        .await
        .map(Option::flatten)
}
