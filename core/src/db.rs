//! Database access: the pool, the one migration entry point, and plain sqlx query functions
//! taking `&mut PgConnection` so callers compose them in one transaction.

pub mod agent_runs;
pub mod agents;
pub mod api_keys;
pub mod approvals;
pub mod audit;
pub mod backups;
pub mod broadcasts;
pub mod deliveries;
pub mod dev_seed;
pub mod email_accounts;
pub mod email_verifications;
pub mod idempotency;
pub mod inbound_emails;
pub mod invitations;
pub mod invoices;
pub mod knowledge;
pub mod llm_credentials;
pub mod login_throttle;
pub mod memberships;
pub mod organizations;
pub mod password_resets;
pub mod projects;
pub mod reminders;
pub mod rotation;
pub mod sessions;
pub mod stored_files;
pub mod tasks;
pub mod team_documents;
pub mod team_members;
pub mod tenant;
pub mod users;
pub mod webhooks;

use std::time::Duration;

use sqlx::{
    PgPool,
    migrate::{MigrateError, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};

use crate::settings::Settings;

/// Escapes `%`, `_` and `\\` so that a search term matches them literally in `ILIKE`.
pub fn like_literal(q: &str) -> String {
    q.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// Zoark's own migrations (`migrations/` at the workspace root).
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Errors of [`migrate_all`].
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error("applying Zoark's migrations failed")]
    Zoark(#[source] MigrateError),
}

/// Brings a database to the current schema: Zoark's migrations, the job engine's tables among
/// them. `zoark-api migrate`, `cargo xtask dev` and the test harness all call exactly this.
///
/// # Errors
/// The first migration that fails, with the database's message.
pub async fn migrate_all(pool: &PgPool) -> Result<(), MigrationError> {
    MIGRATOR.run(pool).await.map_err(MigrationError::Zoark)
}

/// A platform pool (workers, scheduler, migrations, tools): its connections see every
/// organization's rows (`zoark.rls = bypass`, see the row-level security migration).
/// Connections are opened lazily, so a process starts (and reports not-ready) while the
/// database is down, and recovers without a restart.
///
/// # Errors
/// When the URL cannot be parsed.
pub fn pool(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    Ok(pool_options(settings).connect_lazy_with(platform_options(settings.database_url())?))
}

/// The API's pool: row-level security applies. Tenant requests run in [`tenant::begin`]
/// transactions; authentication in [`tenant::system`] ones.
///
/// # Errors
/// When the URL cannot be parsed.
pub fn api_pool(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    // Listing queries take optional filters (`$1 IS NULL OR column = $1`): planned for the
    // values of each call, they use the index the given filters allow, where a cached generic
    // plan would have to serve every combination.
    let options = settings
        .database_url()
        .parse::<PgConnectOptions>()?
        .options([("plan_cache_mode", "force_custom_plan")]);
    Ok(pool_options(settings).connect_lazy_with(options))
}

/// Connection options of a platform connection to `url` (see [`pool`]).
///
/// # Errors
/// When the URL cannot be parsed.
pub fn platform_options(url: &str) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(url
        .parse::<PgConnectOptions>()?
        .options([("zoark.rls", "bypass")]))
}

fn pool_options(settings: &Settings) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .acquire_timeout(settings.database.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
}

/// `true` when a connection can be acquired and answers a query within the pool's timeout.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(pool)
        .await
        .map(|_| ())
}

/// Errors of [`wait_until_migrated`].
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the database schema is at version {found:?} but this build needs {needed}; run `zoark-api migrate` (the release phase) first"
    )]
    Behind { found: Option<i64>, needed: i64 },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Waits for the database to answer (logging while it does not), then checks that every migration
/// this build knows is applied, so a worker or scheduler never runs against an older schema.
///
/// # Errors
/// [`SchemaError::Behind`] when migrations are missing; database errors other than unavailability.
pub async fn wait_until_migrated(
    pool: &PgPool,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), SchemaError> {
    let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    let mut delay = Duration::from_millis(500);
    loop {
        match ping(pool).await {
            Ok(()) => break,
            Err(error) => {
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "database not reachable yet");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.cancelled() => return Ok(()),
                }
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    let found: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await
            .or_else(|e| match &e {
                // No migrations table at all: nothing was ever applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(e),
            })?;
    if needed > 0 && found.is_none_or(|v| v < needed) {
        return Err(SchemaError::Behind { found, needed });
    }
    Ok(())
}
