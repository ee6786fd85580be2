//! Each binary of the Procfile starts on its own against DATABASE_URL and stops cleanly on
//! SIGTERM; production refuses development defaults, naming the variable.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use zoark_tests::{binary, db::TestDatabase, process::start};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn zoark_api_serves_on_port_and_exits_cleanly_on_sigterm() {
    let db = TestDatabase::create().await.unwrap();
    let port = free_port().to_string();
    let mut api = start(
        "zoark-api",
        &["serve"],
        &[
            ("DATABASE_URL", &db.url),
            ("PORT", &port),
            ("ZOARK_HOST", "127.0.0.1"),
        ],
    );
    api.wait_for_line("zoark-api listening", Duration::from_secs(20));
    zoark_core::telemetry::install_crypto_provider();
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/health/ready"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let status = api.terminate_and_wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn zoark_worker_starts_and_exits_cleanly_on_sigterm() {
    let db = TestDatabase::create().await.unwrap();
    let mut worker = start("zoark-worker", &[], &[("DATABASE_URL", &db.url)]);
    let line = worker.wait_for_line("zoark-worker started", Duration::from_secs(20));
    let log: serde_json::Value =
        serde_json::from_str(&line).expect("ZOARK_LOG_FORMAT=json writes one JSON object per line");
    assert_eq!(log["level"], "INFO");
    assert_eq!(log["target"], "zoark_worker");
    assert!(log["timestamp"].is_string());
    let status = worker.terminate_and_wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn zoark_scheduler_takes_leadership_and_exits_cleanly_on_sigterm() {
    let db = TestDatabase::create().await.unwrap();
    let mut scheduler = start("zoark-scheduler", &[], &[("DATABASE_URL", &db.url)]);
    scheduler.wait_for_line("is the leader", Duration::from_secs(20));
    let status = scheduler.terminate_and_wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn zoark_api_migrate_brings_an_empty_database_to_the_current_schema() {
    let db = TestDatabase::create().await.unwrap();
    // A fresh, empty database next to the template-cloned one.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(
        &zoark_tests::db::with_database(&db.url, "postgres").unwrap(),
    )
    .await
    .unwrap();
    let name = format!("{}_empty", db.name);
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")),
    )
    .await
    .unwrap();
    let url = zoark_tests::db::with_database(&db.url, &name).unwrap();

    let worker = start("zoark-worker", &[], &[("DATABASE_URL", &url)]);
    let refused = worker.wait_for_line("zoark-api migrate", Duration::from_secs(20));
    assert!(
        refused.contains("schema"),
        "the worker refuses an unmigrated database: {refused}"
    );

    let out = Command::new(binary("zoark-api"))
        .arg("migrate")
        .env("ZOARK_ENV", "development")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = Command::new(binary("zoark-api"))
        .arg("migrate")
        .env("ZOARK_ENV", "development")
        .env("DATABASE_URL", &url)
        .output()
        .unwrap();
    assert!(again.status.success(), "migrate is idempotent");

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let jobs: bool = sqlx::query_scalar("SELECT to_regclass('public.jobs') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(jobs, "the job queue's schema is migrated too");
    pool.close().await;
    sqlx::Executor::execute(
        &mut admin,
        sqlx::AssertSqlSafe(format!("DROP DATABASE \"{name}\" WITH (FORCE)")),
    )
    .await
    .unwrap();
}

#[test]
fn production_refuses_development_defaults_and_names_the_variable() {
    for bin in ["zoark-api", "zoark-worker", "zoark-scheduler"] {
        let out = Command::new(binary(bin))
            .env_clear()
            .env("ZOARK_ENV", "production")
            .env(
                "DATABASE_URL",
                "postgres://zoark@db.internal/zoark?sslmode=verify-full",
            )
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ZOARK_JWT_SECRET"), "{bin}: {stderr}");
    }
}

#[test]
fn a_worker_of_the_indexing_queue_refuses_to_start_without_its_model_and_names_the_file() {
    let dir = std::env::temp_dir().join(format!("zoark-no-model-{}", std::process::id()));
    let out = Command::new(binary("zoark-worker"))
        .env_clear()
        .env("ZOARK_ENV", "development")
        .env("DATABASE_URL", "postgres://zoark@127.0.0.1:1/zoark")
        .env("ZOARK_EMBED_MODEL_DIR", &dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&dir.join("config.json").display().to_string())
            && stderr.contains("cargo xtask models"),
        "{stderr}"
    );
    // Without the `indexing` queue it needs no model: it starts (and waits for its database).
    let mut running = start(
        "zoark-worker",
        &[],
        &[
            ("DATABASE_URL", "postgres://zoark@127.0.0.1:1/zoark"),
            ("ZOARK_EMBED_MODEL_DIR", dir.to_str().unwrap()),
            ("ZOARK_WORKER_QUEUES", "default=2"),
        ],
    );
    running.wait_for_line("database", Duration::from_secs(20));
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "it kept running"
    );
}

#[test]
fn no_process_starts_without_saying_where_it_runs_and_a_missing_database_url_is_named() {
    for bin in ["zoark-api", "zoark-worker", "zoark-scheduler"] {
        let out = Command::new(binary(bin))
            .env_clear()
            .env("DATABASE_URL", "postgres://zoark@127.0.0.1:1/zoark")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bin}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("ZOARK_ENV is not set"), "{bin}: {stderr}");
    }
    let out = Command::new(binary("zoark-worker"))
        .env_clear()
        .env("ZOARK_ENV", "development")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DATABASE_URL is not set"));
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_before_zoark_api_exits() {
    let db = TestDatabase::create().await.unwrap();
    let url = url::Url::parse(&db.url).unwrap();
    let proxy = zoark_tests::proxy::TcpProxy::start(format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port().unwrap()
    ))
    .await
    .unwrap();
    proxy.stall();
    let mut proxied = url.clone();
    proxied.set_port(Some(proxy.port)).unwrap();
    let port = free_port().to_string();
    let mut api = start(
        "zoark-api",
        &["serve"],
        &[
            ("DATABASE_URL", proxied.as_str()),
            ("PORT", &port),
            ("ZOARK_HOST", "127.0.0.1"),
            ("ZOARK_DATABASE_ACQUIRE_TIMEOUT_SECS", "3"),
        ],
    );
    api.wait_for_line("zoark-api listening", Duration::from_secs(20));

    // The readiness check hangs on the stalled database for the 3 s acquire timeout.
    zoark_core::telemetry::install_crypto_provider();
    // One answered request first: the server is accepting, and the readiness check below
    // travels on that connection, so no signal can catch it waiting in the listen queue.
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let live = client
        .get(format!("{base}/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let in_flight = tokio::spawn(client.get(format!("{base}/health/ready")).send());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let status =
        tokio::task::spawn_blocking(move || api.terminate_and_wait(Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(status.success(), "exit status {status}");

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request got its answer, not a reset");
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "the process waited for the request"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_run_loses_no_job_and_repeats_only_those_in_flight() {
    let app = zoark_tests::TestApp::spawn().await;
    let mut conn = app.pool.acquire().await.unwrap();
    let jobs: Vec<zoark_jobs::NewJob> = (0..10_000)
        .map(|i| {
            let job = zoark_jobs::diag::Record {
                marker: format!("crash-{i}"),
                sleep_ms: 20,
                notify: false,
            };
            zoark_jobs::NewJob::new(&job, zoark_jobs::Opts::platform()).unwrap()
        })
        .collect();
    zoark_jobs::enqueue_many(&mut conn, jobs).await.unwrap();
    let env = [
        ("DATABASE_URL", app.database.url.as_str()),
        ("ZOARK_ENV", "development"),
        ("ZOARK_WORKER_QUEUES", "diagnostics=50"),
        ("ZOARK_WORKER_HEARTBEAT_SECS", "1"),
        ("ZOARK_WORKER_RESCUE_AFTER_SECS", "3"),
    ];
    let mut first = start("zoark-worker", &[], &env);
    first.wait_for_line("job engine started", Duration::from_secs(20));
    let recorded = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_diagnostics")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };
    while recorded().await < 2_000 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let in_flight: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE state = 'running'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(!in_flight.is_empty(), "the kill happened mid-run");
    let done_at_kill = recorded().await;
    assert!(done_at_kill < 10_000, "the kill happened mid-run");

    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let mut second_env = env.to_vec();
    second_env.push(("ZOARK_WORKER_METRICS_PORT", &metrics_port));
    let second = start("zoark-worker", &[], &second_env);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let completed: i64 =
            sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        if completed == 10_000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{completed} of 10000 completed after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            r#"zoark_jobs_total{kind="diag.record",queue="diagnostics",state="completed"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("zoark_job_duration_seconds_bucket"),
        "{metrics}"
    );
    drop(second);
    let missing: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs j WHERE NOT EXISTS (SELECT 1 FROM job_diagnostics d WHERE d.job_id = j.id)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(missing, 0, "every job ran");
    let repeated: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT job_id FROM job_diagnostics GROUP BY job_id HAVING count(*) > 1",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let stray: Vec<_> = repeated
        .iter()
        .filter(|id| !in_flight.contains(id))
        .collect();
    assert!(
        stray.is_empty(),
        "jobs repeated that were not in flight at the kill: {stray:?}"
    );
    // Rescued attempts say so in their history.
    let rescued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE errors @> '[{\"kind\": \"rescued\"}]'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(rescued as usize, in_flight.len());
}

/// With `SENTRY_DSN` set, a discarded job reaches Sentry as an error event with its kind and
/// error (Sentry's ingestion endpoint is a wiremock server here).
#[tokio::test]
async fn a_discarded_job_is_reported_to_sentry() {
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

    let sentry = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&sentry)
        .await;
    let app = zoark_tests::TestApp::spawn().await;
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, queue, args, max_attempts) \
         VALUES ('nobody.handles_this', 'default', '{}', 1) RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let dsn = format!("http://public@{}/42", sentry.address());
    let worker = start(
        "zoark-worker",
        &[],
        &[
            ("DATABASE_URL", app.database.url.as_str()),
            ("SENTRY_DSN", &dsn),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let requests = sentry.received_requests().await.unwrap_or_default();
        let bodies: Vec<String> = requests
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        if let Some(body) = bodies.into_iter().find(|b| b.contains("job discarded")) {
            break body;
        }
        assert!(Instant::now() < deadline, "no Sentry event within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("unknown_kind"), "{body}");
    assert!(body.contains("nobody.handles_this"), "{body}");
    assert!(
        body.contains(&id.to_string()),
        "the event carries the job's span: {body}"
    );
    // The event is sent as the outcome is decided; the row is written by the batched
    // completer a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if state == "discarded" {
            break;
        }
        assert!(Instant::now() < deadline, "the job is still {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(worker);
}
