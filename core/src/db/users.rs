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

/// What sign-in needs to know about a user.
#[derive(Debug, Clone)]
pub struct LoginUser {
    pub id: Uuid,
    pub password_hash: Option<String>,
    pub disabled: bool,
}

/// The user with this email (case-insensitive), for sign-in.
///
/// # Errors
/// Database errors.
pub async fn for_login(conn: &mut PgConnection, email: &str) -> sqlx::Result<Option<LoginUser>> {
    sqlx::query_as!(
        LoginUser,
        r#"SELECT id, password_hash, disabled_at IS NOT NULL AS "disabled!" FROM users WHERE lower(email) = lower($1)"#,
        email,
    )
    .fetch_optional(conn)
    .await
}

/// A user's profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// Whether the account proved it receives mail at `email`.
    pub email_verified: bool,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub last_login_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// The profile of `user_id`.
///
/// # Errors
/// Database errors; `RowNotFound` for an unknown user.
pub async fn profile(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Profile> {
    sqlx::query_as!(
        Profile,
        r#"
        SELECT id, email, name, email_verified_at IS NOT NULL AS "email_verified!", created_at,
               last_login_at
        FROM users WHERE id = $1
        "#,
        user_id,
    )
    .fetch_one(conn)
    .await
}

/// Records a successful sign-in.
///
/// # Errors
/// Database errors.
pub async fn touch_login(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET last_login_at = now() WHERE id = $1",
        user_id
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Replaces a user's password hash.
///
/// # Errors
/// Database errors.
pub async fn set_password(conn: &mut PgConnection, user_id: Uuid, hash: &str) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE users SET password_hash = $2 WHERE id = $1",
        user_id,
        hash
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// The user's display name.
///
/// # Errors
/// Database errors.
pub async fn name(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT name FROM users WHERE id = $1", user_id)
        .fetch_optional(conn)
        .await
}
