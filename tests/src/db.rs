//! One Postgres database per test, cloned from a migrated template.
//!
//! The server comes from `ZOARK_TEST_DATABASE_URL` or `DATABASE_URL` (`cargo xtask test` sets
//! both). The template's name carries a digest of every migration, so a changed migration gets
//! a new template; an advisory lock makes concurrent test processes build it once. Each test database is dropped when its handle is dropped; `cargo xtask test` also
//! drops leftovers before a run.

use std::{hash::Hasher, time::Duration};

use anyhow::{Context, Result};
use sqlx::{AssertSqlSafe, Connection, Executor, PgConnection};

/// A database that lives as long as this value.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
    admin_url: String,
}

fn server_url() -> Result<String> {
    let url = std::env::var("ZOARK_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .context("set DATABASE_URL (or run `cargo xtask test`, which provisions Postgres)")?;
    Ok(url)
}

/// Replaces the database of a URL (keeping credentials and parameters).
pub fn with_database(url: &str, database: &str) -> Result<String> {
    let mut parsed = url::Url::parse(url).context("DATABASE_URL is not a URL")?;
    parsed.set_path(database);
    Ok(parsed.to_string())
}

fn template_name() -> String {
    // FNV-1a over every migration's version and checksum: stable across processes.
    let mut hasher = Fnv(0xcbf2_9ce4_8422_2325);
    for m in zoark_core::db::MIGRATOR.iter() {
        hasher.write(&m.version.to_le_bytes());
        hasher.write(&m.checksum);
    }
    format!("zoark_test_template_{:016x}", hasher.finish())
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

const TEMPLATE_LOCK: i64 = 0x7a6f_6172_6b74_706c;

/// A pool of platform connections (row-level security bypassed) on `url`, like a worker's.
///
/// # Panics
/// When the server is unreachable.
pub async fn platform_pool(url: &str) -> sqlx::PgPool {
    let options =
        zoark_core::db::platform_options(url).unwrap_or_else(|e| panic!("parsing {url}: {e}"));
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

impl TestDatabase {
    /// Creates a fresh, fully migrated database.
    ///
    /// # Errors
    /// When the server is unreachable or the migrations fail.
    pub async fn create() -> Result<Self> {
        Self::create_from(true).await
    }

    /// A fresh database with no schema at all (e.g. to restore a backup into), dropped with
    /// the value.
    ///
    /// # Errors
    /// When the server is unreachable.
    pub async fn create_empty() -> Result<Self> {
        Self::create_from(false).await
    }

    async fn create_from(migrated: bool) -> Result<Self> {
        let server = server_url()?;
        let admin_url = with_database(&server, "postgres")?;
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .context("connecting to the test server")?;
        let name = format!("zoark_test_{}", uuid::Uuid::now_v7().simple());
        let sql = if migrated {
            let template = template_name();
            ensure_template(&mut admin, &admin_url, &template).await?;
            format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"")
        } else {
            // template1 carries the extensions the application role cannot create itself.
            format!("CREATE DATABASE \"{name}\" TEMPLATE template1")
        };
        let mut attempt = 0;
        loop {
            match admin.execute(AssertSqlSafe(sql.clone())).await {
                Ok(_) => break,
                // "source database is being accessed by other users": another process is cloning.
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some("55006") && attempt < 50 =>
                {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).context("creating the test database"),
            }
        }
        admin.close().await?;
        let url = with_database(&server, &name)?;
        Ok(Self {
            name,
            url,
            admin_url,
        })
    }
}

async fn ensure_template(admin: &mut PgConnection, admin_url: &str, template: &str) -> Result<()> {
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut *admin)
        .await?;
    let result = async {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate)",
        )
        .bind(template)
        .fetch_one(&mut *admin)
        .await?;
        if exists {
            return Ok(());
        }
        admin
            .execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{template}\" WITH (FORCE)"
            )))
            .await?;
        admin
            .execute(AssertSqlSafe(format!("CREATE DATABASE \"{template}\"")))
            .await?;
        let url = with_database(admin_url, template)?;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(zoark_core::db::platform_options(&url)?)
            .await?;
        zoark_core::db::migrate_all(&pool)
            .await
            .context("migrating the template database")?;
        pool.close().await;
        admin
            .execute(AssertSqlSafe(format!(
                "ALTER DATABASE \"{template}\" WITH IS_TEMPLATE true"
            )))
            .await?;
        anyhow::Ok(())
    }
    .await;
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(TEMPLATE_LOCK)
        .execute(&mut *admin)
        .await?;
    result
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop runs outside async context: use a short-lived runtime on its own thread.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut admin) = PgConnection::connect(&admin_url).await {
                    let _ = admin
                        .execute(AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                        )))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}
