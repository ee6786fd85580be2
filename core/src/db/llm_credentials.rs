//! An organization's OpenAI-compatible providers. Keys are stored only sealed with
//! `ZOARK_ENCRYPTION_KEY`; nothing here returns them except [`for_calling`], for the process
//! that calls the provider.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageLlmCredentials, ReadLlmCredentials};

/// A credential as shown: never its key.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: Uuid,
    pub name: String,
    pub base_url: String,
    pub default_model: String,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a create writes (every field) and a patch changes (the `Some` ones).
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub name: Option<String>,
    pub base_url: Option<String>,
    /// `nonce || ciphertext`.
    pub sealed_api_key: Option<Vec<u8>>,
    pub default_model: Option<String>,
}

/// Where API keys are sealed (bound to their credential: [`crate::crypto::Binding`]).
pub const API_KEY: (&str, &str) = ("llm_credentials", "api_key_ciphertext");

/// A credential for calling its provider: the key still sealed.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub id: Uuid,
    pub base_url: String,
    pub sealed_api_key: Vec<u8>,
    pub default_model: String,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no such LLM credential")]
    NotFound,
    #[error("another LLM credential of this organization has this name")]
    DuplicateName,
    #[error("agents still use this LLM credential")]
    InUse,
    #[error("a new credential needs every field")]
    Incomplete,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn write_error(e: sqlx::Error) -> WriteError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            WriteError::DuplicateName
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => WriteError::InUse,
        _ => WriteError::Database(e),
    }
}

/// Creates a credential; returns its id.
///
/// # Errors
/// [`WriteError::DuplicateName`], [`WriteError::Incomplete`]; database errors.
pub async fn insert(
    conn: &mut PgConnection,
    proof: &Granted<ManageLlmCredentials>,
    id: Uuid,
    fields: Fields,
) -> Result<Uuid, WriteError> {
    let (Some(name), Some(base_url), Some(key), Some(model)) = (
        fields.name,
        fields.base_url,
        fields.sealed_api_key,
        fields.default_model,
    ) else {
        return Err(WriteError::Incomplete);
    };
    sqlx::query_scalar!(
        r#"
        INSERT INTO llm_credentials
            (id, organization_id, name, base_url, api_key_ciphertext, default_model, created_by)
        VALUES ($7, $1, $2, $3, $4, $5, $6)
        RETURNING id
        "#,
        proof.organization_id(),
        name,
        base_url,
        key,
        model,
        proof.actor().user_id(),
        id,
    )
    .fetch_one(conn)
    .await
    .map_err(write_error)
}

/// The organization's credentials, by name.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadLlmCredentials>,
) -> sqlx::Result<Vec<Credential>> {
    select(conn, proof.organization_id(), None).await
}

/// One credential of the proof's organization (any proof: a write shows what it wrote).
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Credential>> {
    Ok(select(conn, proof.organization_id(), Some(id)).await?.pop())
}

async fn select(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Option<Uuid>,
) -> sqlx::Result<Vec<Credential>> {
    sqlx::query_as!(
        Credential,
        r#"
        SELECT id, name, base_url, default_model, last_used_at, created_by, created_at, updated_at
        FROM llm_credentials
        WHERE organization_id = $1 AND ($2::uuid IS NULL OR id = $2)
        ORDER BY name, id
        "#,
        organization_id,
        id,
    )
    .fetch_all(conn)
    .await
}

/// Changes the `Some` fields.
///
/// # Errors
/// [`WriteError::NotFound`], [`WriteError::DuplicateName`]; database errors.
pub async fn update(
    conn: &mut PgConnection,
    proof: &Granted<ManageLlmCredentials>,
    id: Uuid,
    fields: Fields,
) -> Result<(), WriteError> {
    let updated = sqlx::query!(
        r#"
        UPDATE llm_credentials SET
            name = coalesce($3, name),
            base_url = coalesce($4, base_url),
            api_key_ciphertext = coalesce($5, api_key_ciphertext),
            default_model = coalesce($6, default_model)
        WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
        fields.name,
        fields.base_url,
        fields.sealed_api_key,
        fields.default_model,
    )
    .execute(conn)
    .await
    .map_err(write_error)?;
    if updated.rows_affected() == 0 {
        return Err(WriteError::NotFound);
    }
    Ok(())
}

/// Deletes a credential no agent uses.
///
/// # Errors
/// [`WriteError::NotFound`], [`WriteError::InUse`]; database errors.
pub async fn delete(
    conn: &mut PgConnection,
    proof: &Granted<ManageLlmCredentials>,
    id: Uuid,
) -> Result<(), WriteError> {
    let deleted = sqlx::query!(
        "DELETE FROM llm_credentials WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map_err(write_error)?;
    if deleted.rows_affected() == 0 {
        return Err(WriteError::NotFound);
    }
    Ok(())
}

/// A credential with its sealed key: `id`, or without one the organization's oldest (its
/// default provider).
///
/// # Errors
/// Database errors.
pub async fn for_calling(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Option<Uuid>,
) -> sqlx::Result<Option<Sealed>> {
    sqlx::query_as!(
        Sealed,
        r#"
        SELECT id, base_url, api_key_ciphertext AS sealed_api_key, default_model
        FROM llm_credentials WHERE organization_id = $1 AND ($2::uuid IS NULL OR id = $2)
        ORDER BY created_at, id
        LIMIT 1
        "#,
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await
}
