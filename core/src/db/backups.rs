//! The platform's database backups as operators see them (written by the worker's
//! `maintenance.backup_database`).

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// One backup.
#[derive(Debug, Clone)]
pub struct Backup {
    pub id: Uuid,
    pub kind: String,
    pub status: String,
    pub destination: String,
    pub storage_key: Option<String>,
    pub size_bytes: Option<i64>,
    pub sha256: Option<Vec<u8>>,
    pub encrypted: bool,
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// The newest `limit` backups, newest first. Platform transactions only (row security).
///
/// # Errors
/// A database error.
pub async fn recent(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Backup>> {
    sqlx::query_as!(
        Backup,
        r#"SELECT id, kind, status, destination, storage_key, size_bytes, sha256, encrypted, error,
                  started_at, finished_at
           FROM backups ORDER BY started_at DESC LIMIT $1"#,
        limit,
    )
    .fetch_all(conn)
    .await
}
