//! SMTP sending accounts through the API: the password sealed and never returned, validation,
//! permissions, and a test message through the account to a real SMTP server on loopback.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use zoark_core::access::Role;
use zoark_tests::call;
use zoark_tests::{TestApp, field_names, fixtures, smtp::SmtpSink};

/// Queues a test message through account `id` (`body`: `{}` or `{"to": …}`), runs the jobs, and
/// returns the queue answer and the job as the API shows it.
async fn test_message(
    app: &TestApp,
    token: &str,
    id: &str,
    body: serde_json::Value,
) -> (serde_json::Value, serde_json::Value) {
    let (status, queued) = call(
        app,
        Method::POST,
        &format!("/api/v1/email-accounts/{id}/test"),
        token,
        Some(body),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let (_, job) = call(
        app,
        Method::GET,
        &format!("/api/v1/jobs/{}", queued["job_id"].as_str().unwrap()),
        token,
        None,
    )
    .await;
    (queued, job)
}

#[tokio::test]
async fn an_smtp_account_keeps_its_password_sealed_and_sends_a_test_message() {
    let smtp = SmtpSink::start().await;
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let (status, created) = call(
        &app,
        Method::POST,
        "/api/v1/email-accounts",
        token,
        Some(json!({
            "provider": "smtp", "display_name": "Engines Ops", "from_address": "ops@engines.test",
            "host": "127.0.0.1", "port": smtp.port, "security": "none",
            "username": "ops", "password": "smtp-secret-password"
        })),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["smtp"]["has_password"], true);
    assert!(!created.to_string().contains("smtp-secret-password"));
    let stored: Vec<u8> = sqlx::query_scalar("SELECT smtp_password_ciphertext FROM email_accounts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        !stored.windows(8).any(|w| w == b"smtp-sec"),
        "sealed at rest"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let row: uuid::Uuid = id.parse().unwrap();
    let column = zoark_core::db::email_accounts::SMTP_PASSWORD;
    let opened = zoark_tests::open_stored(&app, column, admin.organization_id, row, &stored);
    assert_eq!(opened, b"smtp-secret-password");
    // Bound to its row: copied into another row (or organization) it does not open.
    for (organization, other_row) in [
        (admin.organization_id, uuid::Uuid::now_v7()),
        (uuid::Uuid::now_v7(), row),
    ] {
        let elsewhere = zoark_core::crypto::Binding::new(column, organization, other_row);
        assert!(
            zoark_core::crypto::open_bound(&app.settings.encryption_key, &stored, &elsewhere)
                .is_err()
        );
    }

    // The same address twice is a conflict; bad settings name their fields.
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/email-accounts",
        token,
        Some(json!({
            "provider": "smtp", "display_name": "Again", "from_address": "OPS@engines.test",
            "host": "127.0.0.1", "port": 25, "security": "tls"
        })),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (409, Some("email_account_exists"))
    );
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/email-accounts",
        token,
        Some(json!({
            "provider": "smtp", "display_name": "", "from_address": "nope",
            "host": "smtp://x", "port": 0, "security": "starttls"
        })),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        field_names(&body),
        ["display_name", "from_address", "host", "port"]
    );
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/email-accounts",
        token,
        Some(json!({
            "provider": "gmail", "display_name": "x", "from_address": "x@example.com",
            "host": "h", "port": 1, "security": "tls"
        })),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&body)),
        (422, vec!["provider".to_owned()])
    );

    // A member sees accounts but cannot change them; a manager can.
    let member = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    let (status, list) = call(
        &app,
        Method::GET,
        "/api/v1/email-accounts",
        &member.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), list["items"].as_array().unwrap().len()),
        (200, 1)
    );
    let path = format!("/api/v1/email-accounts/{id}");
    let (status, _) = call(
        &app,
        Method::PATCH,
        &path,
        &member.access_token,
        Some(json!({"display_name": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = call(
        &app,
        Method::PATCH,
        &path,
        token,
        Some(json!({"display_name": "Engines", "password": null})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["smtp"]["has_password"].as_bool()),
        (200, Some(false)),
        "{body}"
    );
    let (status, _) = call(
        &app,
        Method::PATCH,
        &path,
        token,
        Some(json!({"password": "smtp-secret-password"})),
    )
    .await;
    assert_eq!(status, 200);

    // The test message goes out through the account, as a job.
    let (queued, job) = test_message(&app, token, &id, json!({})).await;
    assert_eq!(queued["to"], "admin@example.com");
    assert_eq!(job["state"], "completed", "{job}");
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(messages[0].from.contains("ops@engines.test"));
    assert_eq!(
        messages[0].auth.as_deref(),
        Some("ops:smtp-secret-password"),
        "the sealed password was opened and used"
    );
    assert!(messages[0].to[0].contains("admin@example.com"));
    assert!(
        messages[0]
            .decoded()
            .contains("Subject: Zoark test message from Engines")
    );

    // Removal, audited.
    let (status, _) = call(&app, Method::DELETE, &path, token, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, Method::GET, &path, token, None).await;
    assert_eq!(status, 404);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'email_account.%' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "email_account.created",
            "email_account.updated",
            "email_account.updated",
            "email_account.deleted"
        ]
    );
}

#[tokio::test]
async fn a_test_message_to_an_unreachable_server_retries_with_its_error() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_, created) = call(
        &app,
        Method::POST,
        "/api/v1/email-accounts",
        &admin.access_token,
        Some(json!({
            "provider": "smtp", "display_name": "Down", "from_address": "down@engines.test",
            "host": "127.0.0.1", "port": closed, "security": "none"
        })),
    )
    .await;
    let id = created["id"].as_str().unwrap();
    let (_, job) = test_message(
        &app,
        &admin.access_token,
        id,
        json!({"to": "x@example.com"}),
    )
    .await;
    assert_eq!(job["state"], "retryable", "{job}");
    assert!(
        job["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("will retry"),
        "{job}"
    );
}

/// Creates an SMTP account; returns the status and the body.
async fn create_account(
    app: &TestApp,
    token: &str,
    host: &str,
    port: u16,
    security: &str,
) -> (reqwest::StatusCode, serde_json::Value) {
    call(
        app,
        Method::POST,
        "/api/v1/email-accounts",
        token,
        Some(json!({
            "provider": "smtp", "display_name": "Relay",
            "from_address": format!("relay-{}@engines.test", uuid::Uuid::now_v7()),
            "host": host, "port": port, "security": security,
        })),
    )
    .await
}

#[tokio::test]
async fn smtp_accounts_cannot_reach_the_platforms_own_network() {
    let smtp = SmtpSink::start().await;
    // Production's rule for loopback (refused), on a development platform.
    let app = TestApp::builder()
        .env("ZOARK_OUTBOUND_ALLOW_LOOPBACK", "false")
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    for host in [
        "169.254.169.254",
        "127.0.0.1",
        "10.0.0.5",
        "[::1]",
        "localhost",
        "db.internal",
        "postgres",
    ] {
        let (status, body) = create_account(&app, token, host, 25, "starttls").await;
        assert_eq!(
            (status.as_u16(), field_names(&body)),
            (422, vec!["host".to_owned()]),
            "{host}: {body}"
        );
    }
    let (status, _) = create_account(&app, token, "smtp.example.com", 587, "starttls").await;
    assert_eq!(status, 201);

    // An account whose host became internal after it was checked (DNS changes; here the row is
    // changed underneath) is refused when connecting: no connection, the reason recorded
    // without the address, and the account needs attention.
    let (_, account) = create_account(&app, token, "smtp.example.org", 25, "none").await;
    let id = account["id"].as_str().unwrap();
    sqlx::query(
        "UPDATE email_accounts SET smtp_host = 'localhost', smtp_port = $2 WHERE id = $1::uuid",
    )
    .bind(id)
    .bind(i32::from(smtp.port))
    .execute(&app.pool)
    .await
    .unwrap();
    let path = format!("/api/v1/email-accounts/{id}");
    let (_, job) = test_message(&app, token, id, json!({})).await;
    assert_eq!(job["state"], "discarded", "{job}");
    let error = job["errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("not public"), "{error}");
    assert!(!error.contains("127.0.0.1"), "{error}");
    assert_eq!(smtp.connections(), 0, "nothing connected to the sink");
    let (_, shown) = call(&app, Method::GET, &path, token, None).await;
    assert_eq!(shown["status"], "needs_attention", "{shown}");
}

#[tokio::test]
async fn an_operator_may_allow_a_private_relay_and_development_allows_loopback() {
    let smtp = SmtpSink::start().await;
    let app = TestApp::builder()
        .env("ZOARK_OUTBOUND_ALLOW_LOOPBACK", "false")
        .env("ZOARK_OUTBOUND_ALLOW_HOSTS", "localhost")
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let (status, body) = create_account(&app, token, "127.0.0.1", smtp.port, "none").await;
    assert_eq!(status, 422, "only the named host: {body}");
    let (status, account) = create_account(&app, token, "localhost", smtp.port, "none").await;
    assert_eq!(status, 201, "{account}");
    let (_, job) = test_message(&app, token, account["id"].as_str().unwrap(), json!({})).await;
    assert_eq!(job["state"], "completed", "{job}");
    assert_eq!(smtp.received(), 1, "the named relay received the test");

    // Development's default: loopback (a local mail sink), and nothing else private.
    let dev = TestApp::spawn().await;
    let admin = fixtures::register(&dev, "admin@example.com", "Engines").await;
    let (status, _) =
        create_account(&dev, &admin.access_token, "127.0.0.1", smtp.port, "none").await;
    assert_eq!(status, 201);
    let (status, _) = create_account(&dev, &admin.access_token, "169.254.169.254", 25, "tls").await;
    assert_eq!(status, 422);
}
