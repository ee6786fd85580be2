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

/// A file no team document, invoice or knowledge base document names any more.
#[derive(Debug, Clone)]
pub struct Unreferenced {
    pub id: Uuid,
    pub storage_key: String,
}

/// Up to `limit` files of any organization that no team document, invoice or knowledge base
/// document names, created more than `grace` ago (so an upload still in its transaction is
/// never taken), oldest first.
/// A platform query: the connection must bypass row-level security.
///
/// # Errors
/// Database errors.
pub async fn unreferenced(
    conn: &mut PgConnection,
    grace: std::time::Duration,
    limit: i64,
) -> sqlx::Result<Vec<Unreferenced>> {
    sqlx::query_as!(
        Unreferenced,
        r#"
        SELECT f.id, f.storage_key FROM stored_files f
        WHERE f.created_at < now() - make_interval(secs => $1)
          AND NOT EXISTS (SELECT 1 FROM team_documents d
                          WHERE d.organization_id = f.organization_id AND d.file_id = f.id)
          AND NOT EXISTS (SELECT 1 FROM invoices i
                          WHERE i.organization_id = f.organization_id AND i.pdf_file_id = f.id)
          AND NOT EXISTS (SELECT 1 FROM rag_documents r
                          WHERE r.organization_id = f.organization_id AND r.file_id = f.id
                            AND r.source_type = 'knowledge')
        ORDER BY f.created_at
        LIMIT $2
        "#,
        grace.as_secs_f64(),
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Removes an unreferenced file's row (after its object); a row that something names again is
/// kept. Returns whether the row went.
///
/// # Errors
/// Database errors.
pub async fn delete_unreferenced(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<bool> {
    sqlx::query!(
        r#"
        DELETE FROM stored_files f WHERE f.id = $1
          AND NOT EXISTS (SELECT 1 FROM team_documents d
                          WHERE d.organization_id = f.organization_id AND d.file_id = f.id)
          AND NOT EXISTS (SELECT 1 FROM invoices i
                          WHERE i.organization_id = f.organization_id AND i.pdf_file_id = f.id)
          AND NOT EXISTS (SELECT 1 FROM rag_documents r
                          WHERE r.organization_id = f.organization_id AND r.file_id = f.id
                            AND r.source_type = 'knowledge')
        "#,
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}
