//! The harness itself: isolated databases per test, and `drain_jobs` reporting what it cannot drain.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use zoark_tests::{TestApp, db::TestDatabase};

async fn database_exists(name: &str) -> bool {
    let admin = zoark_tests::db::with_database(&std::env::var("DATABASE_URL").unwrap(), "postgres")
        .unwrap();
    let pool = sqlx::PgPool::connect(&admin).await.unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    exists
}

#[tokio::test]
async fn each_test_gets_its_own_migrated_database_which_is_dropped_afterwards() {
    let a = TestDatabase::create().await.unwrap();
    let b = TestDatabase::create().await.unwrap();
    assert_ne!(a.name, b.name);
    let pool = zoark_tests::db::platform_pool(&a.url).await;
    sqlx::query("INSERT INTO organizations (name) VALUES ('only in a')")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let pool = zoark_tests::db::platform_pool(&b.url).await;
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0, "databases are isolated");
    pool.close().await;

    let name = a.name.clone();
    assert!(database_exists(&name).await);
    drop(a);
    assert!(!database_exists(&name).await, "dropped with its handle");
}

#[tokio::test]
async fn drain_jobs_returns_at_once_when_nothing_is_queued() {
    let app = TestApp::spawn().await;
    app.drain_jobs(Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn drain_jobs_reports_a_job_that_no_worker_takes_instead_of_hanging_or_passing() {
    let app = TestApp::spawn().await;
    // A queue no worker serves: the job stays available.
    sqlx::query("INSERT INTO jobs (kind, queue, args, max_attempts) VALUES ('diag.noop', 'unserved', '{}', 1)")
        .execute(&app.pool)
        .await
        .unwrap();
    let err = app
        .drain_jobs(Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("1 job(s) still pending"), "{err}");
}

#[tokio::test]
async fn wiremock_peers_replace_every_external_http_service_in_the_settings() {
    let peers = zoark_tests::peers::Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let s = &app.settings;
    assert!(s.llm.base_url.as_str().starts_with(&peers.llm.uri()));
    assert!(
        s.embeddings
            .provider
            .base_url
            .as_str()
            .starts_with(&peers.embeddings.uri())
    );
    for url in [
        &s.oauth.google.authorize_url,
        &s.oauth.google.token_url,
        &s.oauth.google.api_base_url,
    ] {
        assert!(url.as_str().starts_with(&peers.google.uri()), "{url}");
    }
    for url in [
        &s.oauth.microsoft.authorize_url,
        &s.oauth.microsoft.token_url,
        &s.oauth.microsoft.api_base_url,
    ] {
        assert!(url.as_str().starts_with(&peers.microsoft.uri()), "{url}");
    }
}
