//! The development organization and its admin, created once by `cargo xtask dev`.

use sqlx::PgPool;

use crate::crypto;

pub const DEV_ORGANIZATION: &str = "Zoark Development";
pub const DEV_ADMIN_EMAIL: &str = "admin@zoark.localhost";

/// Credentials of a newly created development admin; the password exists only here.
#[derive(Debug)]
pub struct CreatedDevAdmin {
    pub organization_name: String,
    pub email: String,
    pub password: String,
}

/// Creates the development organization, its admin user and the admin membership, unless the
/// admin user exists already. Returns the credentials when it created them.
///
/// # Errors
/// Database errors, or hashing failure.
pub async fn ensure_dev_organization(pool: &PgPool) -> anyhow::Result<Option<CreatedDevAdmin>> {
    let mut tx = pool.begin().await?;
    // Serialises concurrent first runs.
    sqlx::query!("SELECT pg_advisory_xact_lock(7243011)")
        .execute(&mut *tx)
        .await?;
    if super::users::find_id_by_email(&mut tx, DEV_ADMIN_EMAIL)
        .await?
        .is_some()
    {
        return Ok(None);
    }
    let password = crypto::random_token(18);
    let hash = {
        let password = password.clone();
        tokio::task::spawn_blocking(move || crypto::hash_password(&password)).await??
    };
    let org_id = super::organizations::insert(&mut tx, DEV_ORGANIZATION).await?;
    let user_id =
        super::users::insert(&mut tx, DEV_ADMIN_EMAIL, "Development Admin", &hash).await?;
    super::memberships::insert(&mut tx, org_id, user_id, "admin").await?;
    // A development address receives no mail: counted as confirmed, so it can invite.
    super::email_verifications::mark_verified(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(Some(CreatedDevAdmin {
        organization_name: DEV_ORGANIZATION.into(),
        email: DEV_ADMIN_EMAIL.into(),
        password,
    }))
}
