//! Metadata of uploaded files; the bytes live in object storage under `storage_key`.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::Granted;

/// A file as stored.
#[derive(Debug, Clone)]
pub struct StoredFile {
    pub id: Uuid,
    pub storage_key: String,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: Vec<u8>,
    pub uploaded_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// What an upload wrote to object storage.
#[derive(Debug, Clone)]
pub struct NewFile<'a> {
    pub storage_key: &'a str,
    pub filename: &'a str,
    pub content_type: &'a str,
    pub size_bytes: i64,
    pub sha256: &'a [u8],
}

/// Records a file of the proof's organization; returns its id.
///
/// # Errors
/// Database errors.
pub async fn insert<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    file: &NewFile<'_>,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO stored_files (organization_id, storage_key, filename, content_type, size_bytes,
                                  sha256, uploaded_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7)
        RETURNING id
        "#,
        proof.organization_id(),
        file.storage_key,
        file.filename,
        file.content_type,
        file.size_bytes,
        file.sha256,
        proof.actor().user_id(),
    )
    .fetch_one(conn)
    .await
}

/// One file of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<StoredFile>> {
    sqlx::query_as!(
        StoredFile,
        r#"
        SELECT id, storage_key, filename, content_type, size_bytes, sha256, uploaded_by, created_at
        FROM stored_files WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Removes a file's row (after its object, by the caller).
///
/// # Errors
/// Database errors (a row still referenced is a foreign-key violation).
pub async fn delete<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "DELETE FROM stored_files WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}
