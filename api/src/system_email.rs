//! The platform's own emails (invitations, password resets) from the API: their links and
//! dates, and enqueueing in the caller's transaction through
//! [`zoark_jobs::email::enqueue_system`] (which seals the parameters: they carry single-use
//! tokens).

use serde_json::Value;
use sqlx::PgConnection;
use zoark_core::Settings;
use zoark_jobs::{Opts, email::SystemTemplate};

use crate::error::ApiError;

pub use zoark_jobs::email::when;

/// A link to the web app's `page` carrying `token`.
pub fn link(settings: &Settings, page: &str, token: &str) -> String {
    zoark_jobs::email::link(&settings.http.public_url, page, token)
}

/// Enqueues `template` to `to` with `params`, in `conn`'s transaction.
///
/// # Errors
/// A missing parameter, sealing or enqueue failures (500).
pub async fn enqueue(
    conn: &mut PgConnection,
    settings: &Settings,
    to: &str,
    template: SystemTemplate,
    params: &Value,
    opts: Opts,
) -> Result<(), ApiError> {
    zoark_jobs::email::enqueue_system(conn, &settings.encryption_key, to, template, params, opts)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(())
}

/// Who acts, as emails name them: the user's name, or the organization's name for API keys.
///
/// # Errors
/// Database errors.
pub async fn actor_name<P>(
    conn: &mut PgConnection,
    granted: &zoark_core::access::Granted<P>,
) -> Result<String, ApiError> {
    if let Some(user_id) = granted.actor().user_id()
        && let Some(name) = zoark_core::db::users::name(conn, user_id).await?
    {
        return Ok(name);
    }
    let organization = zoark_core::db::organizations::get(conn, granted).await?;
    Ok(organization.display_name.unwrap_or(organization.name))
}
