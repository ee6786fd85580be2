//! Database access: the pool, the one migration entry point, and plain sqlx query functions
//! taking `&mut PgConnection` so callers compose them in one transaction.



use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::{MigrateError, Migrator},
    postgres::PgPoolOptions,
};

use crate::settings::Settings;

/// Zoark's own migrations (`migrations/` at the workspace root).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Errors of [`migrate_all`].
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("applying Zoark's migrations failed")]
    Zoark(#[source] MigrateError),
    #[error("applying the job queue's (apalis) migrations failed")]
    Apalis(#[source] MigrateError),
}

/// Brings a database to the current schema: Zoark's tables, then the job queue's own schema.
/// `zoark-api migrate`, `cargo xtask dev` and the test harness all call exactly this.
///
/// # Errors
/// The first migration that fails, with the database's message.
pub async fn migrate_all(pool: &PgPool) -> Result<(), MigrationError> {
    MIGRATOR.run(pool).await.map_err(MigrationError::Zoark)?;
    apalis_postgres::PostgresStorage::<()>::migrations()
        .run(pool)
        .await
        .map_err(MigrationError::Apalis)?;
    Ok(())
}

/// A pool configured from settings. Connections are opened lazily, so a process starts (and
/// reports not-ready) while the database is down, and recovers without a restart.
///
/// # Errors
/// When the URL cannot be parsed.
pub fn pool(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    let options = settings.database_url().parse::<sqlx::postgres::PgConnectOptions>()?;
    Ok(PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .acquire_timeout(settings.database.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(options))
}

/// `true` when a connection can be acquired and answers a query within the pool's timeout.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(pool).await.map(|_| ())
}
