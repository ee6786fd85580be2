//! The jobs API: tenant-scoped listing, inspection, cancel, retry, queue statistics, and the
//! WebSocket of job events fed by workers through LISTEN/NOTIFY.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use uuid::Uuid;
use zoark_core::access::Role;
use zoark_jobs::{Opts, diag::Record, enqueue};
use zoark_tests::{TestApp, fixtures};

struct Tenant {
    id: Uuid,
    lead: String,
    viewer: String,
}

async fn tenant(app: &TestApp, name: &str) -> Tenant {
    let id = fixtures::organization(&app.pool, name).await;
    let lead = fixtures::api_key(&app.pool, id, Role::Lead).await;
    let viewer = fixtures::api_key(&app.pool, id, Role::Viewer).await;
    Tenant { id, lead, viewer }
}

async fn job_of(app: &TestApp, org: Uuid, marker: &str) -> Uuid {
    let mut conn = app.pool.acquire().await.unwrap();
    let job = Record {
        marker: marker.into(),
        ..Record::default()
    };
    enqueue(&mut conn, &job, Opts::organization(org))
        .await
        .unwrap()
        .id
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = app.client.request(method, app.url(path));
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    if status >= 400 {
        assert_eq!(
            res.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{path}"
        );
    }
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_tenant_sees_filters_pages_cancels_and_retries_only_its_own_jobs() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "A").await;
    let b = tenant(&app, "B").await;
    let first = job_of(&app, a.id, "one").await;
    let second = job_of(&app, a.id, "two").await;
    let theirs = job_of(&app, b.id, "theirs").await;
    sqlx::query(
        "UPDATE jobs SET state = 'discarded', attempt = 1, finalized_at = now(),
                errors = '[{\"attempt\": 1, \"kind\": \"fatal\", \"error\": \"bad address\"}]' WHERE id = $1",
    )
    .bind(first)
    .execute(&app.pool)
    .await
    .unwrap();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    let (status, body) = call(&app, get.clone(), "/api/v1/jobs", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = call(&app, get.clone(), "/api/v1/jobs", Some("zk_notakey0000")).await;
    assert_eq!(status, 401);

    let (status, page) = call(&app, get.clone(), "/api/v1/jobs?limit=1", Some(&a.viewer)).await;
    assert_eq!(status, 200);
    assert_eq!(page["items"][0]["id"], second.to_string(), "newest first");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, page) = call(
        &app,
        get.clone(),
        &format!("/api/v1/jobs?limit=1&cursor={cursor}"),
        Some(&a.viewer),
    )
    .await;
    assert_eq!(page["items"][0]["id"], first.to_string());
    assert!(page["next_cursor"].is_null(), "two jobs, two pages");

    let (_, page) = call(
        &app,
        get.clone(),
        "/api/v1/jobs?state=discarded",
        Some(&a.lead),
    )
    .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["errors"][0]["error"], "bad address");
    let (status, body) = call(
        &app,
        get.clone(),
        "/api/v1/jobs?state=exploded",
        Some(&a.viewer),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = call(
        &app,
        get.clone(),
        "/api/v1/jobs?limit=1000",
        Some(&a.viewer),
    )
    .await;
    assert_eq!(status, 400);

    let (status, job) = call(
        &app,
        get.clone(),
        &format!("/api/v1/jobs/{second}"),
        Some(&a.lead),
    )
    .await;
    assert_eq!((status, job["args"]["marker"].as_str()), (200, Some("two")));
    for path in [format!("/api/v1/jobs/{theirs}")] {
        let (status, body) = call(&app, get.clone(), &path, Some(&a.lead)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("job_not_found"))
        );
    }
    for action in ["retry", "cancel"] {
        let (status, _) = call(
            &app,
            post.clone(),
            &format!("/api/v1/jobs/{theirs}/{action}"),
            Some(&a.lead),
        )
        .await;
        assert_eq!(status, 404, "another tenant's job cannot be {action}ed");
    }
    let (_, theirs_now) = call(
        &app,
        get.clone(),
        &format!("/api/v1/jobs/{theirs}"),
        Some(&b.viewer),
    )
    .await;
    assert_eq!(theirs_now["state"], "available", "untouched");

    let (status, _) = call(
        &app,
        post.clone(),
        &format!("/api/v1/jobs/{first}/retry"),
        Some(&a.viewer),
    )
    .await;
    assert_eq!(status, 403, "viewers cannot retry");
    let (status, job) = call(
        &app,
        post.clone(),
        &format!("/api/v1/jobs/{first}/retry"),
        Some(&a.lead),
    )
    .await;
    assert_eq!((status, job["state"].as_str()), (200, Some("available")));
    let (status, job) = call(
        &app,
        post.clone(),
        &format!("/api/v1/jobs/{second}/cancel"),
        Some(&a.lead),
    )
    .await;
    assert_eq!((status, job["state"].as_str()), (200, Some("cancelled")));
    let (status, body) = call(
        &app,
        post.clone(),
        &format!("/api/v1/jobs/{second}/cancel"),
        Some(&a.lead),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("job_state_conflict"))
    );

    let (status, queues) = call(&app, get.clone(), "/api/v1/queues", Some(&a.viewer)).await;
    assert_eq!(status, 200);
    let q = &queues["items"][0];
    assert_eq!(
        (
            q["queue"].as_str(),
            q["available"].as_i64(),
            q["cancelled"].as_i64()
        ),
        (Some("diagnostics"), Some(1), Some(1)),
        "only A's jobs are counted: {queues}"
    );
}

#[tokio::test]
async fn the_event_socket_streams_a_workers_state_changes_to_the_jobs_own_tenant_only() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "A").await;
    let b = tenant(&app, "B").await;
    let mut ours = zoark_tests::event_socket(&app, &a.viewer).await;
    let mut others = zoark_tests::event_socket(&app, &b.viewer).await;
    // Unauthenticated upgrades are refused with a problem.
    let anonymous =
        tokio_tungstenite::connect_async(app.url("/api/v1/events").replace("http://", "ws://"))
            .await;
    assert!(anonymous.is_err());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let id = job_of(&app, a.id, "watched").await;
    app.drain_jobs(Duration::from_secs(10)).await.unwrap();
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("completed") {
        let msg = tokio::time::timeout(Duration::from_secs(5), ours.next())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(event["id"], id.to_string());
        assert_eq!(event["type"], "job");
        states.push(event["state"].as_str().unwrap().to_owned());
    }
    assert_eq!(states, ["available", "running", "completed"]);
    let leaked = tokio::time::timeout(Duration::from_millis(500), others.next()).await;
    assert!(leaked.is_err(), "another tenant received {leaked:?}");
}

/// A probe the pause test's engine runs: it records which organization's job ran.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Paused {}

impl zoark_jobs::Job for Paused {
    const NAME: &'static str = "test.paused";
    const QUEUE: &'static str = "test";
}

async fn push_paused(app: &TestApp, opts: Opts) -> Uuid {
    let mut conn = app.pool.acquire().await.unwrap();
    enqueue(&mut conn, &Paused {}, opts).await.unwrap().id
}

async fn state_of(app: &TestApp, id: Uuid) -> String {
    fixtures::job_state(&app.pool, id).await
}

async fn wait_completed(app: &TestApp, id: Uuid) {
    for _ in 0..100 {
        if state_of(app, id).await == "completed" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {id} is {} after 2 s", state_of(app, id).await);
}

#[tokio::test]
async fn an_admin_pauses_and_resumes_its_own_jobs_in_a_queue_and_an_operator_the_whole_queue() {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "A").await;
    let b = tenant(&app, "B").await;
    let a_admin = fixtures::api_key(&app.pool, a.id, Role::Admin).await;
    let post = reqwest::Method::POST;
    let get = reqwest::Method::GET;

    let (status, _) = call(
        &app,
        post.clone(),
        "/api/v1/queues/test/pause",
        Some(&a.lead),
    )
    .await;
    assert_eq!(status, 403, "a lead may not pause");
    let (status, problem) = call(
        &app,
        post.clone(),
        "/api/v1/queues/Not%20a%20queue/pause",
        Some(&a_admin),
    )
    .await;
    assert_eq!(
        (status, problem["errors"][0]["field"].as_str()),
        (422, Some("name"))
    );
    let (status, paused) = call(
        &app,
        post.clone(),
        "/api/v1/queues/test/pause",
        Some(&a_admin),
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(
        (paused["queue"].as_str(), paused["paused"].as_bool()),
        (Some("test"), Some(true))
    );
    let (status, again) = call(
        &app,
        post.clone(),
        "/api/v1/queues/test/pause",
        Some(&a_admin),
    )
    .await;
    assert_eq!(
        (status, &again["paused_at"]),
        (200, &paused["paused_at"]),
        "idempotent"
    );

    let registry = zoark_worker::engine::Registry::new()
        .register(|_: Paused, _: zoark_worker::engine::JobContext| async { Ok(()) });
    let engine = app.start_engine(zoark_tests::engine_config(&[("test", 4)]), registry);
    let a_job = push_paused(&app, Opts::organization(a.id)).await;
    let b_job = push_paused(&app, Opts::organization(b.id)).await;
    let platform_job = push_paused(&app, Opts::platform()).await;
    wait_completed(&app, b_job).await;
    wait_completed(&app, platform_job).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        state_of(&app, a_job).await,
        "available",
        "A's jobs wait while A's queue is paused"
    );
    let (_, queues) = call(&app, get.clone(), "/api/v1/queues", Some(&a.viewer)).await;
    let test = queues["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "test")
        .unwrap();
    assert_eq!(
        (test["paused"].as_bool(), test["available"].as_i64()),
        (Some(true), Some(1))
    );
    let (_, theirs) = call(&app, get.clone(), "/api/v1/queues", Some(&b.viewer)).await;
    assert!(
        theirs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["paused"] == false),
        "{theirs}"
    );

    // Resuming wakes the workers at once (no poll: the test engine polls every 60 s).
    let (status, resumed) = call(
        &app,
        post.clone(),
        "/api/v1/queues/test/resume",
        Some(&a_admin),
    )
    .await;
    assert_eq!((status, resumed["paused"].as_bool()), (200, Some(false)));
    wait_completed(&app, a_job).await;
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE organization_id = $1 AND action LIKE 'queue.%' ORDER BY created_at",
    )
    .bind(a.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        ["queue.paused", "queue.resumed"],
        "changes are audited"
    );

    // An operator pauses the queue for everyone, with the worker's command.
    let worker = |args: &[&str]| {
        let output = std::process::Command::new(zoark_tests::binary("zoark-worker"))
            .args(args)
            .env("DATABASE_URL", &app.database.url)
            .env("ZOARK_ENV", "development")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert!(worker(&["queue", "pause", "test"]).contains("test paused for everyone"));
    let b_later = push_paused(&app, Opts::organization(b.id)).await;
    let platform_later = push_paused(&app, Opts::platform()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state_of(&app, b_later).await, "available");
    assert_eq!(state_of(&app, platform_later).await, "available");
    assert!(worker(&["queue", "list"]).contains("paused for everyone"));
    assert!(worker(&["queue", "resume", "test"]).contains("test resumed"));
    wait_completed(&app, b_later).await;
    wait_completed(&app, platform_later).await;
    engine.stop().await;
}

async fn post_json(app: &TestApp, path: &str, key: &str, body: Value) -> (u16, Value) {
    let res = app
        .client
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    (
        res.status().as_u16(),
        res.json().await.unwrap_or(Value::Null),
    )
}

async fn count_in(app: &TestApp, org: Uuid, state: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM jobs WHERE organization_id = $1 AND state = $2")
        .bind(org)
        .bind(state)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn bulk_retry_and_cancel_count_first_take_a_filter_or_ids_skip_held_unique_keys_and_are_audited()
 {
    let app = TestApp::spawn().await;
    let a = tenant(&app, "A").await;
    let b = tenant(&app, "B").await;
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(job_of(&app, a.id, &format!("d{i}")).await);
    }
    let theirs = job_of(&app, b.id, "theirs").await;
    let holder = job_of(&app, a.id, "holder").await;
    sqlx::query(
        "UPDATE jobs SET state = 'discarded', attempt = 1, max_attempts = 1, finalized_at = now()
         WHERE id = ANY($1)",
    )
    .bind([mine.clone(), vec![theirs]].concat())
    .execute(&app.pool)
    .await
    .unwrap();
    // Two discarded jobs share a key (one retry takes it), and a third's key is held by a job
    // still waiting to run.
    for (id, key) in [
        (mine[0], "k"),
        (mine[1], "k"),
        (mine[2], "h"),
        (holder, "h"),
    ] {
        sqlx::query("UPDATE jobs SET unique_key = $2 WHERE id = $1")
            .bind(id)
            .bind(key)
            .execute(&app.pool)
            .await
            .unwrap();
    }

    let discarded = serde_json::json!({"filter": {"state": "discarded"}});
    let (status, body) = post_json(&app, "/api/v1/jobs/retry", &a.viewer, discarded.clone()).await;
    assert_eq!(status, 403, "{body}");
    for (bad, field) in [
        (serde_json::json!({}), "filter"),
        (serde_json::json!({"ids": []}), "ids"),
    ] {
        let (status, body) = post_json(&app, "/api/v1/jobs/cancel", &a.lead, bad).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["errors"][0]["field"], field);
    }

    // A dry run counts what the retry would do, and does nothing.
    let mut dry = discarded.clone();
    dry["dry_run"] = Value::Bool(true);
    let (status, body) = post_json(&app, "/api/v1/jobs/retry", &a.lead, dry).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"changed": 3, "skipped": 2, "more": false, "dry_run": true})
    );
    assert_eq!(count_in(&app, a.id, "discarded").await, 5);

    let (status, body) = post_json(&app, "/api/v1/jobs/retry", &a.lead, discarded).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["changed"].as_i64(), body["skipped"].as_i64()),
        (Some(3), Some(2))
    );
    assert_eq!(count_in(&app, a.id, "discarded").await, 2);
    assert_eq!(count_in(&app, a.id, "available").await, 4);
    assert_eq!(
        count_in(&app, b.id, "discarded").await,
        1,
        "another tenant's job is untouched"
    );

    // Cancel by ids: another tenant's id is not found among ours, and nothing of theirs changes.
    let ids = serde_json::json!({"ids": [holder, theirs]});
    let (status, body) = post_json(&app, "/api/v1/jobs/cancel", &a.lead, ids).await;
    assert_eq!((status, body["changed"].as_i64()), (200, Some(1)), "{body}");
    assert_eq!(count_in(&app, b.id, "discarded").await, 1);
    let (status, body) = post_json(
        &app,
        "/api/v1/jobs/cancel",
        &a.lead,
        serde_json::json!({"filter": {}}),
    )
    .await;
    assert_eq!((status, body["changed"].as_i64()), (200, Some(3)), "{body}");
    assert_eq!(count_in(&app, a.id, "available").await, 0);

    let audited: Vec<(String, Value)> = sqlx::query_as(
        "SELECT action, metadata FROM audit_log
         WHERE organization_id = $1 AND action LIKE 'jobs.bulk%' ORDER BY created_at",
    )
    .bind(a.id)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "jobs.bulk_retried",
            "jobs.bulk_cancelled",
            "jobs.bulk_cancelled"
        ]
    );
    assert_eq!(audited[0].1["changed"], 3);
    assert_eq!(audited[0].1["filter"]["state"], "discarded");
}

#[tokio::test]
async fn platform_operators_pause_for_everyone_see_workers_and_act_on_any_job_through_the_api() {
    let app = TestApp::builder()
        .env("ZOARK_OPERATORS", "ops@example.com")
        .spawn()
        .await;
    let operator = fixtures::register(&app, "ops@example.com", "Platform team").await;
    let admin = fixtures::register(&app, "admin@example.com", "Acme").await;
    let other = tenant(&app, "Other").await;
    let job = job_of(&app, other.id, "theirs").await;
    let key = fixtures::api_key(&app.pool, operator.organization_id, Role::Admin).await;

    // Nobody else: not another organization's admin, not an API key of the operator's own
    // organization, not without credentials.
    for (token, expected) in [
        (Some(admin.access_token.as_str()), 403),
        (Some(key.as_str()), 403),
        (None, 401),
    ] {
        for (method, path) in [
            (reqwest::Method::GET, "/api/v1/platform/queues".to_owned()),
            (
                reqwest::Method::POST,
                "/api/v1/platform/queues/diagnostics/pause".to_owned(),
            ),
            (reqwest::Method::GET, "/api/v1/platform/workers".to_owned()),
            (reqwest::Method::GET, format!("/api/v1/platform/jobs/{job}")),
            (
                reqwest::Method::POST,
                format!("/api/v1/platform/jobs/{job}/cancel"),
            ),
        ] {
            let (status, body) = call(&app, method, &path, token).await;
            assert_eq!(status, expected, "{path}: {body}");
            if expected == 403 {
                assert_eq!(body["code"], "operators_only", "{path}");
            }
        }
    }
    assert_eq!(state_of(&app, job).await, "available");

    // The operator: pause the job's queue for everyone, see it paused and counted.
    let token = Some(operator.access_token.as_str());
    let (status, paused) = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/platform/queues/diagnostics/pause",
        token,
    )
    .await;
    assert_eq!(status, 200, "{paused}");
    assert_eq!(paused["paused"], true);
    let everyone: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM queue_pauses WHERE queue = 'diagnostics' AND organization_id IS NULL)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(everyone, "paused for every organization");
    let (_, queues) = call(&app, reqwest::Method::GET, "/api/v1/platform/queues", token).await;
    let diagnostics = queues["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "diagnostics")
        .unwrap();
    assert_eq!(diagnostics["paused"], true);
    assert_eq!(
        diagnostics["available"], 1,
        "another organization's job is counted"
    );
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/v1/platform/queues/diagnostics/resume",
        token,
    )
    .await;
    assert_eq!(status, 200);

    // Any organization's job: read, cancel, retry.
    let (status, got) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/platform/jobs/{job}"),
        token,
    )
    .await;
    assert_eq!(
        (status, got["id"].as_str()),
        (200, Some(job.to_string().as_str()))
    );
    let (status, cancelled) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/platform/jobs/{job}/cancel"),
        token,
    )
    .await;
    assert_eq!(
        (status, cancelled["state"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, retried) = call(
        &app,
        reqwest::Method::POST,
        &format!("/api/v1/platform/jobs/{job}/retry"),
        token,
    )
    .await;
    assert_eq!(
        (status, retried["state"].as_str()),
        (200, Some("available"))
    );
    let (status, missing) = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/platform/jobs/{}", Uuid::now_v7()),
        token,
    )
    .await;
    assert_eq!(status, 404, "{missing}");
    let (status, workers) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/platform/workers",
        token,
    )
    .await;
    assert_eq!(status, 200);
    assert!(workers["items"].is_array());
}

#[tokio::test]
async fn viewers_see_job_payloads_and_error_texts_redacted_and_may_not_search_them() {
    let app = TestApp::spawn().await;
    let acme = tenant(&app, "Acme").await;
    let job = job_of(&app, acme.id, "ada@example.com").await;
    sqlx::query(
        "UPDATE jobs SET state = 'discarded', attempt = 1, finalized_at = now(),
                errors = '[{\"attempt\": 1, \"at\": \"2026-12-04T10:00:00Z\", \"kind\": \"fatal\",
                            \"error\": \"550 ada@example.com: no such user\"}]'
         WHERE id = $1",
    )
    .bind(job)
    .execute(&app.pool)
    .await
    .unwrap();
    let path = format!("/api/v1/jobs/{job}");
    let (status, seen) = call(&app, reqwest::Method::GET, &path, Some(&acme.viewer)).await;
    assert_eq!(status, 200);
    let text = seen.to_string();
    assert!(!text.contains("ada@example.com"), "{text}");
    assert_eq!(seen["args"]["marker"], "[redacted]");
    assert_eq!(seen["errors"][0]["error"], "[redacted]");
    assert_eq!(
        seen["errors"][0]["kind"], "fatal",
        "the shape and kinds stay"
    );
    let (_, listed) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/jobs",
        Some(&acme.viewer),
    )
    .await;
    assert!(!listed.to_string().contains("ada@example.com"));
    let (status, refused) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/jobs?args_value=ada@example.com",
        Some(&acme.viewer),
    )
    .await;
    assert_eq!(status, 403, "{refused}");
    // A lead sees and searches them.
    let (_, full) = call(&app, reqwest::Method::GET, &path, Some(&acme.lead)).await;
    assert_eq!(full["args"]["marker"], "ada@example.com");
    assert_eq!(
        full["errors"][0]["error"],
        "550 ada@example.com: no such user"
    );
    let (status, found) = call(
        &app,
        reqwest::Method::GET,
        "/api/v1/jobs?args_value=ada@example.com",
        Some(&acme.lead),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
}
