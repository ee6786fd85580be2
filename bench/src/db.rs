//! Databases for the runs, and the query counter behind "idle queries/s".

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{AssertSqlSafe, PgPool, postgres::PgPoolOptions};

/// A connection to the server's `postgres` database.
pub async fn admin_pool(server: &str) -> anyhow::Result<PgPool> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url(server, "postgres"))
        .await
        .with_context(|| format!("connecting to {server}"))?;
    // Counting statements needs the library preloaded; without it, transactions are counted.
    let _ = sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&pool)
        .await;
    Ok(pool)
}

pub fn url(server: &str, database: &str) -> String {
    format!("{}/{database}", server.trim_end_matches('/'))
}

/// Drops and creates `name`; returns its URL.
pub async fn fresh(admin: &PgPool, server: &str, name: &str) -> anyhow::Result<String> {
    sqlx::query(AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
    )))
    .execute(admin)
    .await?;
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(admin)
        .await?;
    Ok(url(server, name))
}

/// A small pool on `url`, on platform connections (row-level security bypassed, like a worker).
pub async fn pool(url: &str) -> anyhow::Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(4)
        .connect_with(zoark_core::db::platform_options(url)?)
        .await?)
}

/// The one connection the finish checks are polled on: with `enable_seqscan` off, so that each
/// check walks an index wherever one fits (a table scan only where none does), whatever the
/// planner guesses about a table that was empty when last analyzed.
pub async fn poll_connection(url: &str) -> anyhow::Result<PgPool> {
    let options = zoark_core::db::platform_options(url)?.options([("enable_seqscan", "off")]);
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?)
}

/// How statements against one database are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QuerySource {
    /// `sum(calls)` of `pg_stat_statements` (top-level statements, utility statements such as
    /// BEGIN/COMMIT/LISTEN not tracked).
    PgStatStatements,
    /// `xact_commit + xact_rollback` of `pg_stat_database`.
    PgStatDatabase,
}

pub async fn query_source(admin: &PgPool) -> QuerySource {
    let statements = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_statements")
        .fetch_one(admin)
        .await;
    if statements.is_ok() {
        QuerySource::PgStatStatements
    } else {
        QuerySource::PgStatDatabase
    }
}

/// Statements (or transactions) run so far against `database`.
pub async fn queries(admin: &PgPool, source: QuerySource, database: &str) -> anyhow::Result<i64> {
    let sql = match source {
        QuerySource::PgStatStatements => {
            "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_statements s \
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1"
        }
        QuerySource::PgStatDatabase => {
            "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = $1"
        }
    };
    Ok(sqlx::query_scalar(sql)
        .bind(database)
        .fetch_one(admin)
        .await?)
}

/// Milliseconds spent executing statements against `database` so far (`pg_stat_statements`;
/// `None` without it).
pub async fn exec_ms(admin: &PgPool, database: &str) -> Option<f64> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements s \
         JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .ok()
}

/// Polls each of `checks` (a `SELECT EXISTS …` of unfinished work, indexed) in turn every 10 ms
/// until it is false, and returns when the last one was sent before it answered false: its
/// snapshot, taken as it started, already saw every job done. A later check is only asked once
/// the ones before it are false (it may be dearer: see `Peer::unfinished_sql`).
pub async fn wait_until_none(
    pool: &PgPool,
    checks: &[&'static str],
    limit: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + limit;
    let mut done = Instant::now();
    for &check in checks {
        loop {
            let sent = Instant::now();
            let left: bool = sqlx::query_scalar(check).fetch_one(pool).await?;
            if !left {
                done = sent;
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the queue did not drain within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Ok(done)
}

/// Prints how Postgres runs each finish check on the table as it is (full, after a bulk
/// enqueue), so that a reader sees which index it walks.
pub async fn explain(pool: &PgPool, checks: &[&'static str]) -> anyhow::Result<()> {
    for &check in checks {
        let plan: Vec<String> = sqlx::query_scalar(AssertSqlSafe(format!("EXPLAIN {check}")))
            .fetch_all(pool)
            .await?;
        let scans: Vec<&str> = plan
            .iter()
            .filter(|line| line.contains("Scan"))
            .map(|line| line.trim().trim_start_matches("-> ").trim())
            .map(|line| line.split("  (").next().unwrap_or(line))
            .collect();
        println!("finish check: {}", scans.join("; "));
    }
    Ok(())
}
