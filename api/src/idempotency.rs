//! `Idempotency-Key` on creating POSTs, Stripe's way: the first request with a key runs and its
//! response is stored in the same transaction as what it created; a retry with the same key and
//! the same body replays that response (with `Idempotent-Replayed: true`); the same key with
//! another body is a 400. A concurrent retry waits on the first one's row and then replays it.
//! Keys belong to the organization and expire after 24 hours.

use serde::{Serialize, de::DeserializeOwned};
use sha2::{Digest as _, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::db::idempotency;

use crate::error::{ApiError, FieldError};

/// A validated key for one operation.
pub struct Key {
    key: String,
    operation: &'static str,
    request_hash: Vec<u8>,
}

fn invalid(message: &str) -> ApiError {
    ApiError::InvalidParameter(FieldError {
        field: "Idempotency-Key".into(),
        message: message.into(),
    })
}

impl Key {
    /// The key of a request to `operation` with `body`, if it sent one.
    ///
    /// # Errors
    /// 400 for a key that is empty, longer than 255 bytes or not printable ASCII.
    pub fn parse(
        raw: Option<&str>,
        operation: &'static str,
        body: &impl Serialize,
    ) -> Result<Option<Self>, ApiError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        if raw.is_empty() || raw.len() > 255 || !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid("must be 1 to 255 printable ASCII characters"));
        }
        let body = serde_json::to_vec(body).map_err(|e| ApiError::Internal(e.into()))?;
        let mut hash = Sha256::new();
        hash.update(operation.as_bytes());
        hash.update([0]);
        hash.update(&body);
        Ok(Some(Self {
            key: raw.to_owned(),
            operation,
            request_hash: hash.finalize().to_vec(),
        }))
    }

    /// Takes the key in the caller's transaction. `Some(response)` is the stored response of
    /// an earlier request to replay; `None` means this request runs and must [`Self::store`]
    /// its response before committing.
    ///
    /// # Errors
    /// 400 when the key was used for another request; database errors.
    pub async fn begin<T: DeserializeOwned>(
        &self,
        conn: &mut PgConnection,
        organization_id: Uuid,
    ) -> Result<Option<T>, ApiError> {
        if idempotency::take(
            conn,
            organization_id,
            &self.key,
            self.operation,
            &self.request_hash,
        )
        .await?
        {
            return Ok(None);
        }
        let stored = idempotency::stored(conn, organization_id, &self.key)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("idempotency key vanished")))?;
        if stored.operation != self.operation || stored.request_hash != self.request_hash {
            return Err(invalid(
                "was already used with another request; use a new key for a new request",
            ));
        }
        let body = stored.response_body.ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!("idempotency key without a response"))
        })?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ApiError::Internal(e.into()))
    }

    /// Stores the response of the request that took the key.
    ///
    /// # Errors
    /// Database errors.
    pub async fn store(
        &self,
        conn: &mut PgConnection,
        organization_id: Uuid,
        status: u16,
        response: &impl Serialize,
    ) -> Result<(), ApiError> {
        let body = serde_json::to_vec(response).map_err(|e| ApiError::Internal(e.into()))?;
        idempotency::store(conn, organization_id, &self.key, status, &body).await?;
        Ok(())
    }
}
