//! Webhooks end to end: endpoints (secret shown once, sealed at rest), signed deliveries to
//! wiremock receivers through the real worker, retries with every attempt recorded, final
//! failure, timeouts, the SSRF guard, validation, permissions, tenant isolation, and the
//! `broadcast.finished` and `job.discarded` events.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use hmac::{KeyInit as _, Mac as _};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zoark_core::access::Role;
use zoark_tests::call;
use zoark_tests::{
    TestApp, field_names, fixtures,
    smtp::SmtpSink,
    wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{method, path},
    },
};

/// An app whose webhooks may reach wiremock on http://127.0.0.1, retrying quickly.
async fn local_app(extra: &[(&str, &str)]) -> TestApp {
    let mut builder = TestApp::builder()
        .env("ZOARK_WEBHOOKS_ALLOW_PRIVATE", "true")
        .env("ZOARK_WEBHOOKS_ALLOW_HTTP", "true")
        .env("ZOARK_WEBHOOKS_RETRY_BASE_MS", "20")
        .env("ZOARK_WORKER_POLL_SECS", "1");
    for (k, v) in extra {
        builder = builder.env(k, *v);
    }
    builder.spawn().await
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, created) = call(app, Method::POST, "/api/v1/webhooks", token, Some(body)).await;
    assert_eq!(status, 201, "{created}");
    created
}

/// A receiver answering every POST with `status`.
async fn receiver_answering(status: u16) -> MockServer {
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(status))
        .mount(&receiver)
        .await;
    receiver
}

/// Runs a worker until `sql` (a boolean query) holds.
async fn work_until(app: &TestApp, sql: &str, timeout: Duration) {
    let token = CancellationToken::new();
    let worker = tokio::spawn(zoark_worker::run((*app.settings).clone(), token.clone()));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let done: bool = sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still not true after {timeout:?}: {sql}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    token.cancel();
    worker.await.unwrap().unwrap();
}

async fn deliveries(app: &TestApp, token: &str, webhook: &str, query: &str) -> Vec<Value> {
    let (status, page) = call(
        app,
        Method::GET,
        &format!("/api/v1/webhooks/{webhook}/deliveries{query}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

async fn ping(app: &TestApp, token: &str, webhook: &str) -> Value {
    let (status, delivery) = call(
        app,
        Method::POST,
        &format!("/api/v1/webhooks/{webhook}/test"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 202, "{delivery}");
    delivery
}

/// Verifies `Zoark-Signature` the way the docs tell receivers to.
fn verify(secret: &str, header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = Some(value),
            Some(("v1", value)) => v1 = Some(value),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    let fresh = (chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap()).abs() < 300;
    expected == v1 && fresh
}

#[tokio::test]
async fn an_endpoint_shows_its_secret_once_and_signs_every_delivery_with_it() {
    let app = local_app(&[]).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hooks"))
        .respond_with(ResponseTemplate::new(200).set_body_string("thanks"))
        .mount(&receiver)
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let body = json!({"url": format!("{}/hooks", receiver.uri()),
                      "event_types": ["job.discarded", "broadcast.finished", "job.discarded"],
                      "description": "Ops alerts"});
    let post = |key: &'static str| {
        let request = app
            .client
            .post(app.url("/api/v1/webhooks"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let first = post("hook-1").await;
    assert_eq!(first.status(), 201);
    let created: Value = first.json().await.unwrap();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert_eq!(
        created["event_types"],
        json!(["broadcast.finished", "job.discarded"])
    );
    assert_eq!(created["enabled"], true);
    let replay = post("hook-1").await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(
        (&replayed["id"], &replayed["secret"]),
        (&created["id"], &created["secret"])
    );
    let id = created["id"].as_str().unwrap().to_owned();

    // Never again: not in get, not in list, not in clear in the database.
    let path = format!("/api/v1/webhooks/{id}");
    let (_, got) = call(&app, Method::GET, &path, token, None).await;
    let (_, list) = call(&app, Method::GET, "/api/v1/webhooks", token, None).await;
    assert_eq!(got["description"], "Ops alerts");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    for shown in [got.to_string(), list.to_string()] {
        assert!(
            !shown.contains(&secret) && !shown.contains("secret"),
            "{shown}"
        );
    }
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM webhooks WHERE position(convert_to($1, 'UTF8') IN secret_ciphertext) > 0",
    )
    .bind(&secret)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0, "sealed at rest");
    let idempotency_rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM idempotency_keys WHERE position(convert_to($1, 'UTF8') IN response_body) > 0",
    )
    .bind(&secret)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(idempotency_rows, 0, "the replay copy is sealed too");

    // ETag / If-None-Match, then a change makes a new tag.
    let first = app.call(Method::GET, &path, Some(token), None).await;
    let tag = first.headers()["etag"].to_str().unwrap().to_owned();
    let cached = app
        .client
        .get(app.url(&path))
        .bearer_auth(token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let (status, patched) = call(
        &app,
        Method::PATCH,
        &path,
        token,
        Some(json!({"description": null, "event_types": ["*"]})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (&patched["description"], &patched["event_types"]),
        (&Value::Null, &json!(["*"]))
    );
    let changed = app
        .client
        .get(app.url(&path))
        .bearer_auth(token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);

    // The test ping: pending at once, then delivered, signed, with the event's headers.
    let queued = ping(&app, token, &id).await;
    assert_eq!(
        (queued["status"].as_str(), queued["event_type"].as_str()),
        (Some("pending"), Some("webhook.test"))
    );
    work_until(
        &app,
        "SELECT bool_and(status = 'succeeded') FROM webhook_deliveries",
        Duration::from_secs(20),
    )
    .await;
    let received = receiver.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let request = &received[0];
    let header = |name: &str| request.headers[name].to_str().unwrap().to_owned();
    assert!(verify(&secret, &header("zoark-signature"), &request.body));
    assert!(!verify(
        "whsec_wrong",
        &header("zoark-signature"),
        &request.body
    ));
    assert_eq!(header("zoark-event-type"), "webhook.test");
    assert_eq!(header("content-type"), "application/json");
    let sent: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(header("zoark-event-id"), sent["id"].as_str().unwrap());
    assert_eq!(sent["type"], "webhook.test");
    assert_eq!(
        sent["organization_id"],
        admin.organization_id.to_string().as_str()
    );
    assert_eq!(sent["data"]["webhook_id"], id.as_str());
    assert!(sent["created"].as_i64().unwrap() > 1_700_000_000);
    let log = deliveries(&app, token, &id, "?status=succeeded").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0]["id"], queued["id"]);
    assert_eq!(
        (
            log[0]["attempts"].as_i64(),
            log[0]["response_status"].as_i64(),
            log[0]["response_body_excerpt"].as_str()
        ),
        (Some(1), Some(200), Some("thanks"))
    );
    assert_eq!(log[0]["history"].as_array().unwrap().len(), 1);
    assert!(log[0]["delivered_at"].is_string());
    assert!(
        deliveries(&app, token, &id, "?status=failed")
            .await
            .is_empty()
    );

    // Rotating replaces the secret: the next delivery verifies with the new one only.
    let (status, rotated) = call(
        &app,
        Method::POST,
        &format!("{path}/rotate-secret"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    ping(&app, token, &id).await;
    work_until(
        &app,
        "SELECT bool_and(status = 'succeeded') FROM webhook_deliveries",
        Duration::from_secs(20),
    )
    .await;
    let received = receiver.received_requests().await.unwrap();
    let last = received.last().unwrap();
    let signature = last.headers["zoark-signature"].to_str().unwrap();
    assert!(verify(&new_secret, signature, &last.body));
    assert!(!verify(&secret, signature, &last.body));

    // Deleting is audited and takes the log with it.
    let (status, _) = call(&app, Method::DELETE, &path, token, None).await;
    assert_eq!(status, 204);
    let (status, gone) = call(&app, Method::GET, &path, token, None).await;
    assert_eq!(
        (status.as_u16(), gone["code"].as_str()),
        (404, Some("webhook_not_found"))
    );
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'webhook.%' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            "webhook.created",
            "webhook.secret_rotated",
            "webhook.deleted"
        ]
    );
}

#[tokio::test]
async fn a_failing_endpoint_is_retried_until_it_answers_and_every_attempt_is_kept() {
    let app = local_app(&[]).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database is down"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let hook = create(
        &app,
        token,
        json!({"url": receiver.uri(), "event_types": ["job.discarded"]}),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    ping(&app, token, id).await;
    work_until(
        &app,
        "SELECT bool_and(status = 'succeeded') FROM webhook_deliveries",
        Duration::from_secs(30),
    )
    .await;
    let log = deliveries(&app, token, id, "").await;
    assert_eq!(log.len(), 1);
    let history: Vec<(Option<i64>, Option<&str>, Option<&str>)> = log[0]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["response_status"].as_i64(),
                a["response_body_excerpt"].as_str(),
                a["error"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (
                Some(500),
                Some("database is down"),
                Some("the endpoint answered 500")
            ),
            (
                Some(500),
                Some("database is down"),
                Some("the endpoint answered 500")
            ),
            (Some(204), None, None),
        ]
    );
    assert_eq!(log[0]["attempts"], 3);
    assert_eq!(log[0]["last_error"], Value::Null);
    assert_eq!(receiver.received_requests().await.unwrap().len(), 3);
    // Every attempt carried the same event id.
    let ids: Vec<String> = receiver
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| r.headers["zoark-event-id"].to_str().unwrap().to_owned())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
}

#[tokio::test]
async fn an_endpoint_that_never_succeeds_fails_after_eight_attempts_without_feeding_itself_events()
{
    let app = local_app(&[]).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_string("x".repeat(5000)))
        .mount(&receiver)
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    // Subscribed to everything, job.discarded included: its own discarded job must not loop.
    let hook = create(
        &app,
        token,
        json!({"url": receiver.uri(), "event_types": ["*"]}),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    ping(&app, token, id).await;
    work_until(
        &app,
        "SELECT bool_and(d.status = 'failed' AND j.state = 'discarded')
         FROM webhook_deliveries d JOIN jobs j ON j.id = d.job_id",
        Duration::from_secs(40),
    )
    .await;
    let log = deliveries(&app, token, id, "?status=failed").await;
    assert_eq!(log.len(), 1, "no job.discarded event about itself");
    let delivery = &log[0];
    assert_eq!(delivery["attempts"], 8);
    assert_eq!(
        delivery["last_error"],
        "gave up after 8 attempts: the endpoint answered 503"
    );
    assert_eq!(delivery["next_attempt_at"], Value::Null);
    assert_eq!(
        delivery["response_body_excerpt"].as_str().unwrap().len(),
        2000,
        "excerpts are cut at 2000 characters"
    );
    let history = delivery["history"].as_array().unwrap();
    assert_eq!(history.len(), 8);
    assert!(history.iter().all(|a| a["response_status"] == 503));
    assert_eq!(receiver.received_requests().await.unwrap().len(), 8);
    let job_state: String = sqlx::query_scalar(
        "SELECT j.state FROM jobs j JOIN webhook_deliveries d ON d.job_id = j.id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(job_state, "discarded");
    let deliveries_total: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(deliveries_total, 1);
}

#[tokio::test]
async fn a_slow_endpoint_times_out_and_410_gone_disables_the_endpoint() {
    let app = local_app(&[("ZOARK_WEBHOOKS_TIMEOUT_MS", "300")]).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(3)))
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/gone"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&receiver)
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let slow = create(
        &app,
        token,
        json!({"url": format!("{}/slow", receiver.uri()), "event_types": ["job.discarded"]}),
    )
    .await;
    let slow = slow["id"].as_str().unwrap();
    ping(&app, token, slow).await;
    work_until(
        &app,
        "SELECT bool_and(attempts >= 1) FROM webhook_deliveries",
        Duration::from_secs(20),
    )
    .await;
    let log = deliveries(&app, token, slow, "").await;
    let first = &log[0]["history"][0];
    assert_eq!(first["error"], "no answer within 300 ms");
    assert_eq!(first["response_status"], Value::Null);
    assert!(matches!(
        log[0]["status"].as_str(),
        Some("retrying" | "failed")
    ));

    let gone = create(
        &app,
        token,
        json!({"url": format!("{}/gone", receiver.uri()), "event_types": ["job.discarded"]}),
    )
    .await;
    let gone = gone["id"].as_str().unwrap();
    ping(&app, token, gone).await;
    work_until(
        &app,
        &format!(
            "SELECT bool_and(status = 'failed') FROM webhook_deliveries WHERE webhook_id = '{gone}'"
        ),
        Duration::from_secs(20),
    )
    .await;
    let log = deliveries(&app, token, gone, "").await;
    assert_eq!(log[0]["attempts"], 1, "410 is not retried");
    assert_eq!(
        log[0]["last_error"],
        "the endpoint answered 410 Gone; it has been disabled"
    );
    let (_, endpoint) = call(
        &app,
        Method::GET,
        &format!("/api/v1/webhooks/{gone}"),
        token,
        None,
    )
    .await;
    assert_eq!(endpoint["enabled"], false);
}

#[tokio::test]
async fn internal_addresses_are_refused_when_creating_and_when_delivering() {
    // Production's rule for loopback (development allows it for local receivers).
    let app = TestApp::builder()
        .env("ZOARK_WEBHOOKS_RETRY_BASE_MS", "20")
        .env("ZOARK_OUTBOUND_ALLOW_LOOPBACK", "false")
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    for url in [
        "http://hooks.example.com/",
        "https://127.0.0.1/hook",
        "https://localhost:8443/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "https://10.0.0.7/hook",
    ] {
        let (status, body) = call(
            &app,
            Method::POST,
            "/api/v1/webhooks",
            token,
            Some(json!({"url": url, "event_types": ["*"]})),
        )
        .await;
        assert_eq!(
            (status.as_u16(), field_names(&body)),
            (422, vec!["url".to_owned()]),
            "{url}: {body}"
        );
    }
    // An endpoint that became internal (here: stored before the rules) is refused at delivery,
    // and nothing is sent.
    let receiver = receiver_answering(200).await;
    let sealed = zoark_core::crypto::seal(&app.settings.encryption_key, b"whsec_x").unwrap();
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO webhooks (organization_id, url, event_types, secret_ciphertext)
         VALUES ($1, $2, '{*}', $3) RETURNING id",
    )
    .bind(admin.organization_id)
    .bind(receiver.uri().replace("http://", "https://"))
    .bind(sealed)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    ping(&app, token, &id.to_string()).await;
    work_until(
        &app,
        "SELECT bool_and(status = 'failed') FROM webhook_deliveries",
        Duration::from_secs(20),
    )
    .await;
    let log = deliveries(&app, token, &id.to_string(), "").await;
    assert_eq!(log[0]["attempts"], 1, "a refused address is final");
    assert!(
        log[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("must not point at the internal address 127.0.0.1"),
        "{}",
        log[0]
    );
    assert!(receiver.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn bad_endpoints_are_refused_field_by_field() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let cases = [
        (
            json!({"url": "ftp://x.example.com", "event_types": ["task.deleted"], "description": ""}),
            vec!["url", "event_types", "description"],
        ),
        (
            json!({"url": "https://x.example.com", "event_types": []}),
            vec!["event_types"],
        ),
        (
            json!({"url": "https://x.example.com", "event_types": ["webhook.test"]}),
            vec!["event_types"],
        ),
        (
            json!({"url": "https://x.example.com", "event_types": ["*", "job.discarded"]}),
            vec!["event_types"],
        ),
        // A missing required field is refused while decoding, before the domain checks.
        (
            json!({"description": "no url", "event_types": ["*"]}),
            vec!["url"],
        ),
        (
            json!({"url": "https://x.example.com", "event_types": ["*"], "description": "d".repeat(501)}),
            vec!["description"],
        ),
    ];
    for (body, fields) in cases {
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/v1/webhooks",
            token,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(field_names(&problem), fields, "{body}");
    }
    let hook = create(
        &app,
        token,
        json!({"url": "https://hooks.example.com/z", "event_types": ["approval.completed"]}),
    )
    .await;
    let path = format!("/api/v1/webhooks/{}", hook["id"].as_str().unwrap());
    let (status, problem) = call(
        &app,
        Method::PATCH,
        &path,
        token,
        Some(json!({"url": null, "enabled": null, "event_types": ["nope"]})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (
            422,
            vec!["url".into(), "event_types".into(), "enabled".into()]
        )
    );
    let (_, unchanged) = call(&app, Method::GET, &path, token, None).await;
    assert_eq!(unchanged["url"], "https://hooks.example.com/z");
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("{path}/deliveries?status=lost"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks?event_type=task.deleted",
        token,
        None,
    )
    .await;
    assert_eq!(status, 400);
    // Filters.
    create(
        &app,
        token,
        json!({"url": "https://hooks.example.com/all", "event_types": ["*"], "enabled": false}),
    )
    .await;
    let (_, approvals) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks?event_type=approval.completed",
        token,
        None,
    )
    .await;
    assert_eq!(approvals["items"].as_array().unwrap().len(), 2, "* matches");
    let (_, disabled) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks?enabled=false",
        token,
        None,
    )
    .await;
    assert_eq!(disabled["items"][0]["url"], "https://hooks.example.com/all");
    assert_eq!(disabled["items"].as_array().unwrap().len(), 1);
    let (_, page) = call(&app, Method::GET, "/api/v1/webhooks?limit=1", token, None).await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        Method::GET,
        &format!("/api/v1/webhooks?limit=1&cursor={cursor}"),
        token,
        None,
    )
    .await;
    assert_eq!(rest["items"][0]["url"], "https://hooks.example.com/z");
}

#[tokio::test]
async fn managers_read_admins_manage_and_other_organizations_see_nothing() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let hook = create(
        &app,
        &admin.access_token,
        json!({"url": "https://hooks.example.com/a", "event_types": ["*"]}),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    let body = json!({"url": "https://hooks.example.com/b", "event_types": ["*"]});
    for role in [Role::Viewer, Role::Member, Role::Lead] {
        let user = fixtures::member(
            &app,
            admin.organization_id,
            &format!("{role:?}@example.com").to_lowercase(),
            role,
        )
        .await;
        let (status, _) = call(
            &app,
            Method::GET,
            "/api/v1/webhooks",
            &user.access_token,
            None,
        )
        .await;
        assert_eq!(status, 403, "{role:?} reads");
    }
    let manager =
        fixtures::member(&app, admin.organization_id, "m@example.com", Role::Manager).await;
    let (status, list) = call(
        &app,
        Method::GET,
        &format!("/api/v1/webhooks/{id}/deliveries"),
        &manager.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    for (method, path) in [
        (Method::POST, "/api/v1/webhooks".to_owned()),
        (Method::POST, format!("/api/v1/webhooks/{id}/test")),
        (Method::POST, format!("/api/v1/webhooks/{id}/rotate-secret")),
        (Method::DELETE, format!("/api/v1/webhooks/{id}")),
    ] {
        let (status, _) = call(
            &app,
            method.clone(),
            &path,
            &manager.access_token,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 403, "manager {method} {path}");
    }

    let other = fixtures::register(&app, "other@example.com", "Other").await;
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/webhooks/{id}"), None),
        (
            Method::PATCH,
            format!("/api/v1/webhooks/{id}"),
            Some(json!({"enabled": false})),
        ),
        (Method::DELETE, format!("/api/v1/webhooks/{id}"), None),
        (Method::POST, format!("/api/v1/webhooks/{id}/test"), None),
        (
            Method::POST,
            format!("/api/v1/webhooks/{id}/rotate-secret"),
            None,
        ),
        (
            Method::GET,
            format!("/api/v1/webhooks/{id}/deliveries"),
            None,
        ),
    ] {
        let (status, problem) = call(&app, method.clone(), &path, &other.access_token, body).await;
        assert_eq!(
            (status.as_u16(), problem["code"].as_str()),
            (404, Some("webhook_not_found")),
            "{method} {path}"
        );
    }
    let (_, list) = call(
        &app,
        Method::GET,
        "/api/v1/webhooks",
        &other.access_token,
        None,
    )
    .await;
    assert_eq!(list["items"], json!([]));
    let (_, still) = call(
        &app,
        Method::GET,
        &format!("/api/v1/webhooks/{id}"),
        &admin.access_token,
        None,
    )
    .await;
    assert_eq!(
        still["enabled"], true,
        "untouched by the other organization"
    );
    let queued: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(queued, 0);
}

#[tokio::test]
async fn a_discarded_job_is_sent_as_job_discarded_to_subscribed_enabled_endpoints_only() {
    // A worker rescues once its own lease is a rescue window old: a short window here.
    let app = local_app(&[
        ("ZOARK_WORKER_RESCUE_AFTER_SECS", "2"),
        ("ZOARK_WORKER_HEARTBEAT_SECS", "1"),
    ])
    .await;
    let receiver = receiver_answering(200).await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let subscribed = create(
        &app,
        token,
        json!({"url": format!("{}/jobs", receiver.uri()), "event_types": ["job.discarded"]}),
    )
    .await;
    create(
        &app,
        token,
        json!({"url": format!("{}/broadcasts", receiver.uri()), "event_types": ["broadcast.finished"]}),
    )
    .await;
    create(
        &app,
        token,
        json!({"url": format!("{}/off", receiver.uri()), "event_types": ["*"], "enabled": false}),
    )
    .await;
    // Another organization's endpoint hears nothing of this one's jobs.
    let other = fixtures::register(&app, "other@example.com", "Other").await;
    create(
        &app,
        &other.access_token,
        json!({"url": format!("{}/other", receiver.uri()), "event_types": ["*"]}),
    )
    .await;
    let job_id: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (organization_id, kind, queue, args, max_attempts)
         VALUES ($1, 'reports.nightly', 'default', '{}', 1) RETURNING id",
    )
    .bind(admin.organization_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // A job whose worker died on its last attempt is discarded by the rescue: also an event.
    let orphan: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (organization_id, kind, queue, args, max_attempts, attempt, state, worker_id, attempted_at)
         VALUES ($1, 'reports.weekly', 'default', '{}', 1, 1, 'running', gen_random_uuid(), now())
         RETURNING id",
    )
    .bind(admin.organization_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    work_until(
        &app,
        "SELECT count(*) = 2 AND bool_and(status = 'succeeded') FROM webhook_deliveries",
        Duration::from_secs(20),
    )
    .await;
    let mut received = receiver.received_requests().await.unwrap();
    assert_eq!(received.len(), 2);
    assert!(received.iter().all(|r| r.url.path() == "/jobs"));
    let events: Vec<Value> = received
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    let rescued = events
        .iter()
        .position(|e| e["data"]["job"]["id"] == orphan.to_string().as_str())
        .expect("the rescued job's event");
    assert_eq!(events[rescued]["data"]["job"]["error_kind"], "rescued");
    received.remove(rescued);
    let event: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(event["type"], "job.discarded");
    let job = &event["data"]["job"];
    assert_eq!(job["id"], job_id.to_string().as_str());
    assert_eq!(
        (job["kind"].as_str(), job["error_kind"].as_str()),
        (Some("reports.nightly"), Some("unknown_kind"))
    );
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("no handler for job kind")
    );
    let log = deliveries(&app, token, subscribed["id"].as_str().unwrap(), "").await;
    assert_eq!(log[0]["event_type"], "job.discarded");
}

#[tokio::test]
async fn a_disabled_endpoint_ends_its_queued_deliveries_as_failed() {
    let app = local_app(&[]).await;
    let receiver = receiver_answering(200).await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let hook = create(
        &app,
        token,
        json!({"url": receiver.uri(), "event_types": ["job.discarded"]}),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    sqlx::query(
        "INSERT INTO jobs (organization_id, kind, queue, args, max_attempts)
         VALUES ($1, 'reports.nightly', 'default', '{}', 1)",
    )
    .bind(admin.organization_id)
    .execute(&app.pool)
    .await
    .unwrap();
    // Discard the job with a worker that does not deliver webhooks, then disable.
    let mut settings = (*app.settings).clone();
    settings.worker.queues = zoark_core::settings::QueueConcurrency(vec![("default".into(), 2)]);
    let worker_token = CancellationToken::new();
    let worker = tokio::spawn(zoark_worker::run(settings, worker_token.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM webhook_deliveries")
        .fetch_one(&app.pool)
        .await
        .unwrap()
        == 0
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker_token.cancel();
    worker.await.unwrap().unwrap();
    let (status, _) = call(
        &app,
        Method::PATCH,
        &format!("/api/v1/webhooks/{id}"),
        token,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 200);
    work_until(
        &app,
        "SELECT bool_and(status = 'failed') FROM webhook_deliveries",
        Duration::from_secs(20),
    )
    .await;
    let log = deliveries(&app, token, id, "").await;
    assert_eq!(
        (log[0]["attempts"].as_i64(), log[0]["last_error"].as_str()),
        (
            Some(0),
            Some("the endpoint was disabled before this delivery was sent")
        )
    );
    assert!(receiver.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_finished_broadcast_is_sent_as_broadcast_finished() {
    let smtp = SmtpSink::start().await;
    let app = local_app(&[("ZOARK_PUBLIC_URL", "https://zoark.example")]).await;
    let receiver = receiver_answering(200).await;
    let admin = fixtures::register(&app, "admin@engines.test", "Engines").await;
    let token = admin.access_token.as_str();
    let hook = create(
        &app,
        token,
        json!({"url": receiver.uri(), "event_types": ["broadcast.finished"]}),
    )
    .await;
    let (status, account) = call(
        &app,
        Method::POST,
        "/api/v1/email-accounts",
        token,
        Some(json!({
            "provider": "smtp", "display_name": "Engines News", "from_address": "news@engines.test",
            "host": "127.0.0.1", "port": smtp.port, "security": "none"
        })),
    )
    .await;
    assert_eq!(status, 201, "{account}");
    let (status, broadcast) = call(
        &app,
        Method::POST,
        "/api/v1/broadcasts",
        token,
        Some(
            json!({"email_account_id": account["id"], "subject": "Quarterly update",
                    "body_text": "Hello", "recipients": ["a@engines.test", "b@engines.test"]}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{broadcast}");
    let broadcast_id = broadcast["id"].as_str().unwrap();
    let (status, sent) = call(
        &app,
        Method::POST,
        &format!("/api/v1/broadcasts/{broadcast_id}/send"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    work_until(
        &app,
        "SELECT count(*) = 1 AND bool_and(status = 'succeeded') FROM webhook_deliveries",
        Duration::from_secs(30),
    )
    .await;
    let received = receiver.received_requests().await.unwrap();
    assert_eq!(received.len(), 1);
    let event: Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(event["type"], "broadcast.finished");
    let data = &event["data"]["broadcast"];
    assert_eq!(
        (
            data["id"].as_str(),
            data["status"].as_str(),
            data["subject"].as_str()
        ),
        (Some(broadcast_id), Some("sent"), Some("Quarterly update"))
    );
    assert_eq!(data["deliveries"]["sent"], 2);
    assert!(verify(
        hook["secret"].as_str().unwrap(),
        received[0].headers["zoark-signature"].to_str().unwrap(),
        &received[0].body
    ));
}

#[tokio::test]
async fn a_task_changing_column_and_a_decided_approval_are_sent_and_a_reorder_is_not() {
    let app = local_app(&[]).await;
    let receiver = receiver_answering(204).await;
    let admin = fixtures::register(&app, "admin@engines.test", "Engines").await;
    let token = admin.access_token.as_str();
    create(
        &app,
        token,
        json!({"url": receiver.uri(), "event_types": ["task.status_changed", "approval.completed"]}),
    )
    .await;
    let (_, project) = call(
        &app,
        Method::POST,
        "/api/v1/projects",
        token,
        Some(json!({"name": "Bridge"})),
    )
    .await;
    let (_, task) = call(
        &app,
        Method::POST,
        "/api/v1/tasks",
        token,
        Some(json!({"project_id": project["id"], "title": "Rivets"})),
    )
    .await;
    let task_id = task["id"].as_str().unwrap();
    for status in ["backlog", "active"] {
        let (code, moved) = call(
            &app,
            Method::POST,
            &format!("/api/v1/tasks/{task_id}/move"),
            token,
            Some(json!({"status": status, "at": "top"})),
        )
        .await;
        assert_eq!(code, 200, "{moved}");
    }
    let (status, template) = call(
        &app,
        Method::POST,
        "/api/v1/approval-templates",
        token,
        Some(
            json!({"name": "Sign-off", "subject_type": "task", "allow_self_approval": true,
                    "stages": [{"name": "Lead", "approver_email": "lead@engines.test"}]}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{template}");
    let (status, approval) = call(
        &app,
        Method::POST,
        "/api/v1/approvals",
        token,
        Some(json!({"template_id": template["id"], "subject_type": "task", "subject_id": task_id})),
    )
    .await;
    assert_eq!(status, 201, "{approval}");
    let (status, decided) = call(
        &app,
        Method::POST,
        &format!(
            "/api/v1/approvals/{}/approve",
            approval["id"].as_str().unwrap()
        ),
        token,
        Some(json!({"comment": "Fine"})),
    )
    .await;
    assert_eq!(status, 200, "{decided}");
    work_until(
        &app,
        "SELECT count(*) = 2 AND bool_and(status = 'succeeded') FROM webhook_deliveries",
        Duration::from_secs(30),
    )
    .await;
    let mut events: Vec<Value> = zoark_tests::peers::json_bodies(&receiver).await;
    events.sort_by_key(|e| e["type"].as_str().unwrap().to_owned());
    assert_eq!(events.len(), 2, "the reorder within backlog sent nothing");
    assert_eq!(events[0]["type"], "approval.completed");
    assert_eq!(events[0]["data"]["approval"]["outcome"], "approved");
    assert_eq!(events[0]["data"]["approval"]["subject_id"], task_id);
    assert_eq!(events[1]["type"], "task.status_changed");
    assert_eq!(
        (
            events[1]["data"]["task"]["previous_status"].as_str(),
            events[1]["data"]["task"]["status"].as_str()
        ),
        (Some("backlog"), Some("active"))
    );
}
