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
        },
    )
    .await
    .unwrap_or_else(|e| panic!("inserting an API key: {e}"));
    key
}
