//! Enqueueing the platform's own emails (invitations, password resets) in the caller's
//! transaction, with their parameters sealed (they carry single-use tokens).

use serde_json::Value;
use sqlx::PgConnection;
use zoark_core::{Settings, crypto};
use zoark_jobs::{
    Opts,
    email::{SendSystemEmail, SystemTemplate},
};

use crate::error::ApiError;

/// A link to the web app's `page` carrying `token`.
pub fn link(settings: &Settings, page: &str, token: &str) -> String {
    let mut url = settings.http.public_url.clone();
    url.set_path(page);
    url.query_pairs_mut().clear().append_pair("token", token);
    url.to_string()
}

/// How expiry times read in emails.
pub fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// Enqueues `template` to `to` with `params`, in `conn`'s transaction.
///
/// # Errors
/// Sealing or enqueue failures (500).
pub async fn enqueue(
    conn: &mut PgConnection,
    settings: &Settings,
    to: &str,
    template: SystemTemplate,
    params: &Value,
    opts: Opts,
) -> Result<(), ApiError> {
    let plain = serde_json::to_vec(params).map_err(|e| ApiError::Internal(e.into()))?;
    let sealed_params = crypto::seal_text(&settings.encryption_key, &plain)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let job = SendSystemEmail {
        to: to.to_owned(),
        template,
        sealed_params,
    };
    zoark_jobs::enqueue(conn, &job, opts)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(())
}
