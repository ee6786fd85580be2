//! Documents of team members (timesheets, reports, contracts): a name and kind over a stored
//! file.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageDocuments, ReadDocuments};

/// A document with its file's metadata.
#[derive(Debug, Clone)]
pub struct Document {
    pub id: Uuid,
    pub team_member_id: Uuid,
    pub name: String,
    pub kind: String,
    pub file_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: Vec<u8>,
    pub storage_key: String,
    pub uploaded_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// Adds a document over an already recorded file; returns its id.
///
/// # Errors
/// Database errors.
pub async fn insert(
    conn: &mut PgConnection,
    proof: &Granted<ManageDocuments>,
    team_member_id: Uuid,
    file_id: Uuid,
    name: &str,
    kind: &str,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO team_documents (organization_id, team_member_id, file_id, name, kind)
        VALUES ($1, $2, $3, $4, $5)
        RETURNING id
        "#,
        proof.organization_id(),
        team_member_id,
        file_id,
        name,
        kind,
    )
    .fetch_one(conn)
    .await
}

/// A member's documents, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadDocuments>,
    team_member_id: Uuid,
    kind: Option<&str>,
    before_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Document>> {
    sqlx::query_as!(
        Document,
        r#"
        SELECT d.id, d.team_member_id, d.name, d.kind, d.file_id, f.filename, f.content_type,
               f.size_bytes, f.sha256, f.storage_key, f.uploaded_by, d.created_at
        FROM team_documents d
        JOIN stored_files f ON f.organization_id = d.organization_id AND f.id = d.file_id
        WHERE d.organization_id = $1 AND d.team_member_id = $2
          AND ($3::text IS NULL OR d.kind = $3)
          AND ($4::uuid IS NULL OR d.id < $4)
        ORDER BY d.id DESC
        LIMIT $5
        "#,
        proof.organization_id(),
        team_member_id,
        kind,
        before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One document of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Document>> {
    sqlx::query_as!(
        Document,
        r#"
        SELECT d.id, d.team_member_id, d.name, d.kind, d.file_id, f.filename, f.content_type,
               f.size_bytes, f.sha256, f.storage_key, f.uploaded_by, d.created_at
        FROM team_documents d
        JOIN stored_files f ON f.organization_id = d.organization_id AND f.id = d.file_id
        WHERE d.organization_id = $1 AND d.id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Removes a document's row (its file row is the caller's, after the object); `false` when a
/// concurrent delete was first.
///
/// # Errors
/// Database errors.
pub async fn delete(
    conn: &mut PgConnection,
    proof: &Granted<ManageDocuments>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "DELETE FROM team_documents WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}
