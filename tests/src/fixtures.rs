//! Rows tests start from, written on the platform pool (row-level security bypassed).

use sqlx::PgPool;
use uuid::Uuid;
use zoark_core::{access::Role, db::api_keys};

/// A new organization named `name`.
///
/// # Panics
/// On a database error.
pub async fn organization(pool: &PgPool, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO organizations (name) VALUES ($1) RETURNING id")
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("inserting organization {name}: {e}"))
}

/// A live API key of `organization_id` with `role`; returns the key.
///
/// # Panics
/// On a database error.
pub async fn api_key(pool: &PgPool, organization_id: Uuid, role: Role) -> String {
    let key = api_keys::generate();
    let mut conn = pool
        .acquire()
        .await
        .unwrap_or_else(|e| panic!("acquiring: {e}"));
    api_keys::insert(
        &mut conn,
        organization_id,
        &api_keys::NewKey {
            name: role.as_str(),
            role,
            key: &key,
            created_by: None,
            expires_at: None,
            parent_key_id: None,
        },
    )
    .await
    .unwrap_or_else(|e| panic!("inserting an API key: {e}"));
    key
}

/// A password strong enough for registration.
pub const PASSWORD: &str = "quietly orbiting walrus 42";

/// A signed-in user, as registration or sign-in returned them.
#[derive(Debug, Clone)]
pub struct Account {
    pub user_id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl Account {
    /// # Panics
    /// When `body` is not a token pair.
    pub fn from_tokens(email: &str, body: &serde_json::Value) -> Self {
        let uuid = |v: &serde_json::Value| {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("not a token pair: {body}"))
        };
        let text = |v: &serde_json::Value| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("not a token pair: {body}"))
        };
        Self {
            user_id: uuid(&body["user"]["id"]),
            organization_id: uuid(&body["organization"]["id"]),
            email: email.to_owned(),
            access_token: text(&body["access_token"]),
            refresh_token: text(&body["refresh_token"]),
        }
    }
}

/// Registers `email` with a new organization through the API.
///
/// # Panics
/// When registration fails.
pub async fn register(app: &crate::TestApp, email: &str, organization: &str) -> Account {
    let response = app
        .post_json(
            "/api/v1/auth/register",
            &serde_json::json!({
                "email": email,
                "password": PASSWORD,
                "name": "Test User",
                "organization_name": organization,
            }),
        )
        .await;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("registration body: {e}"));
    assert_eq!(status, 201, "registration failed: {body}");
    // Its owner follows the confirmation link (straight to the database: the endpoint is tested
    // on its own, and its requests would count against the rate-limit tests' budgets).
    let token = verification_token(app, email).await;
    let mut conn = app.pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
    sqlx::query("SET LOCAL zoark.rls = 'bypass'")
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let confirmed = zoark_core::db::email_verifications::consume(&mut conn, &token)
        .await
        .unwrap_or_else(|e| panic!("confirming {email}: {e}"));
    assert!(confirmed.is_some(), "confirming {email}");
    conn.commit().await.unwrap_or_else(|e| panic!("{e}"));
    Account::from_tokens(email, &body)
}

/// The token of the newest confirmation link emailed to `email`, read from the queued message's
/// sealed parameters as its owner would read the email; the message leaves the queue (read), so
/// tests counting their own emails do not see it.
///
/// # Panics
/// When no such message is queued.
pub async fn verification_token(app: &crate::TestApp, email: &str) -> String {
    let (job_id, args): (Uuid, serde_json::Value) = sqlx::query_as(
        "SELECT id, args FROM jobs WHERE kind = 'email.send_system'
           AND args->>'template' = 'email_verification' AND lower(args->>'to') = lower($1)
         ORDER BY id DESC LIMIT 1",
    )
    .bind(email.trim())
    .fetch_one(&app.pool)
    .await
    .unwrap_or_else(|e| panic!("the confirmation email to {email}: {e}"));
    let sealed = args["sealed_params"].as_str().unwrap_or_default();
    let params = zoark_core::crypto::open_text(&app.settings.encryption_key, sealed)
        .unwrap_or_else(|e| panic!("opening the confirmation email: {e}"));
    let params: serde_json::Value =
        serde_json::from_slice(&params).unwrap_or_else(|e| panic!("its parameters: {e}"));
    let link = url::Url::parse(params["verify_url"].as_str().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the confirmation link: {e}"));
    let token = link
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(job_id)
        .execute(&app.pool)
        .await
        .unwrap_or_else(|e| panic!("taking the read email out: {e}"));
    token
}

/// Adds a user with `role` to `organization_id` (directly in the database) and signs them in.
///
/// # Panics
/// On a database error or a failed sign-in.
pub async fn member(
    app: &crate::TestApp,
    organization_id: Uuid,
    email: &str,
    role: Role,
) -> Account {
    let hash =
        zoark_core::crypto::hash_password(PASSWORD).unwrap_or_else(|e| panic!("hashing: {e}"));
    let mut conn = app
        .pool
        .acquire()
        .await
        .unwrap_or_else(|e| panic!("acquiring: {e}"));
    let user_id = zoark_core::db::users::insert(&mut conn, email, "Member", &hash)
        .await
        .unwrap_or_else(|e| panic!("inserting a user: {e}"));
    zoark_core::db::memberships::insert(&mut conn, organization_id, user_id, role.as_str())
        .await
        .unwrap_or_else(|e| panic!("inserting a membership: {e}"));
    // As if they had joined through an invitation, which proves the address.
    zoark_core::db::email_verifications::mark_verified(&mut conn, user_id)
        .await
        .unwrap_or_else(|e| panic!("verifying the address: {e}"));
    drop(conn);
    login(app, email, Some(organization_id)).await
}

/// Signs `email` in with [`PASSWORD`].
///
/// # Panics
/// When sign-in fails.
pub async fn login(app: &crate::TestApp, email: &str, organization_id: Option<Uuid>) -> Account {
    let response = app
        .post_json(
            "/api/v1/auth/login",
            &serde_json::json!({
                "email": email,
                "password": PASSWORD,
                "organization_id": organization_id,
            }),
        )
        .await;
    let status = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("login body: {e}"));
    assert_eq!(status, 200, "login failed: {body}");
    Account::from_tokens(email, &body)
}

/// A project of `organization_id`, written with SQL until projects have an API; tests that need
/// one call this, so it is the one place to swap for the API later.
///
/// # Panics
/// On a database error.
pub async fn project(pool: &PgPool, organization_id: Uuid, name: &str) -> Uuid {
    sqlx::query_scalar("INSERT INTO projects (organization_id, name) VALUES ($1, $2) RETURNING id")
        .bind(organization_id)
        .bind(name)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("inserting project {name}: {e}"))
}

/// The state of job `id`, read as the platform.
///
/// # Panics
/// When the job does not exist.
pub async fn job_state(pool: &PgPool, id: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|e| panic!("reading job {id}: {e}"))
}
