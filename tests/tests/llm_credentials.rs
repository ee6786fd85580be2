//! LLM providers through the API: the key sealed and never returned, validation, conflicts,
//! permissions, and the test against a wiremock server speaking the OpenAI API.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path},
};
use zoark_core::access::Role;
use zoark_tests::call;
use zoark_tests::{TestApp, field_names, fixtures};

/// A provider answering `GET /v1/models` for the key `sk-good` and refusing any other.
async fn provider() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .and(header("authorization", "Bearer sk-good"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1_721_172_741, "owned_by": "system"}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "message": "Incorrect API key provided", "type": "invalid_request_error",
            "param": null, "code": "invalid_api_key"}})))
        .mount(&server)
        .await;
    server
}

/// Creating a credential with `url` is refused, naming `base_url` only.
async fn assert_base_url_refused(app: &TestApp, token: &str, url: &str) {
    let (status, body) = call(
        app,
        Method::POST,
        "/api/v1/llm-credentials",
        token,
        Some(json!({"name": "X", "base_url": url, "api_key": "sk-good", "default_model": "m"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&body)),
        (422, vec!["base_url".to_owned()]),
        "{url}: {body}"
    );
}

#[tokio::test]
async fn a_credential_keeps_its_key_sealed_and_its_test_asks_the_provider_for_models() {
    let server = provider().await;
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let (status, created) = call(
        &app,
        Method::POST,
        "/api/v1/llm-credentials",
        token,
        Some(
            json!({"name": "Local", "base_url": format!("{}/v1/", server.uri()),
                    "api_key": "sk-good", "default_model": "gpt-4o-mini"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert!(!created.to_string().contains("sk-good"), "{created}");
    assert_eq!(created["base_url"], format!("{}/v1", server.uri()));
    let stored: Vec<u8> = sqlx::query_scalar("SELECT api_key_ciphertext FROM llm_credentials")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(
        !stored.windows(7).any(|w| w == b"sk-good"),
        "sealed at rest"
    );
    assert_eq!(
        zoark_tests::open_stored(
            &app,
            zoark_core::db::llm_credentials::API_KEY,
            admin.organization_id,
            created["id"].as_str().unwrap().parse().unwrap(),
            &stored
        ),
        b"sk-good"
    );
    let id = created["id"].as_str().unwrap().to_owned();
    let one = format!("/api/v1/llm-credentials/{id}");

    let (status, test) = call(&app, Method::POST, &format!("{one}/test"), token, None).await;
    assert_eq!(status, 200, "{test}");
    assert_eq!(
        test,
        json!({"ok": true, "models": ["gpt-4o-mini"], "default_model_available": true, "error": null})
    );

    // A new key replaces the old one; the provider's refusal is the test's result.
    let (status, updated) = call(
        &app,
        Method::PATCH,
        &one,
        token,
        Some(json!({"api_key": "sk-revoked", "default_model": "gpt-9"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), updated["default_model"].as_str()),
        (200, Some("gpt-9"))
    );
    let (status, test) = call(&app, Method::POST, &format!("{one}/test"), token, None).await;
    assert_eq!(
        (status.as_u16(), &test["ok"]),
        (200, &json!(false)),
        "{test}"
    );
    assert!(
        test["error"]
            .as_str()
            .unwrap()
            .contains("Incorrect API key provided"),
        "{test}"
    );

    let (status, list) = call(&app, Method::GET, "/api/v1/llm-credentials", token, None).await;
    assert_eq!(
        (status.as_u16(), list["items"].as_array().unwrap().len()),
        (200, 1)
    );
    assert!(!list.to_string().contains("sk-"), "{list}");

    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'llm_credential.%' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        ["llm_credential.created", "llm_credential.updated"]
    );
    let changed: Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_log WHERE action = 'llm_credential.updated'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(changed["changed"], json!(["api_key", "default_model"]));
    assert!(!changed.to_string().contains("sk-revoked"));
}

#[tokio::test]
async fn bad_fields_are_named_names_are_unique_and_a_credential_in_use_stays() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/llm-credentials",
        token,
        Some(json!({"name": " ", "base_url": "ftp://models.example.com",
                    "api_key": "", "default_model": ""})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&body)),
        (
            422,
            vec![
                "name".to_owned(),
                "base_url".into(),
                "api_key".into(),
                "default_model".into()
            ]
        ),
        "{body}"
    );
    for url in [
        "https://user:pw@api.example.com/v1",
        "https://api.example.com/v1?key=x",
        "not a url",
    ] {
        assert_base_url_refused(&app, token, url).await;
    }

    let new = json!({"name": "OpenAI", "base_url": "https://api.openai.com/v1",
                     "api_key": "sk-x", "default_model": "gpt-4o-mini"});
    let (status, created) = call(
        &app,
        Method::POST,
        "/api/v1/llm-credentials",
        token,
        Some(new.clone()),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/llm-credentials",
        token,
        Some(new),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (409, Some("llm_credential_exists"))
    );

    // An agent using it keeps it from being deleted.
    let id: uuid::Uuid = created["id"].as_str().unwrap().parse().unwrap();
    sqlx::query(
        "UPDATE agents SET llm_credential_id = $1 WHERE organization_id = $2 AND kind = 'task_monitor'",
    )
    .bind(id)
    .bind(admin.organization_id)
    .execute(&app.pool)
    .await
    .unwrap();
    let one = format!("/api/v1/llm-credentials/{id}");
    let (status, body) = call(&app, Method::DELETE, &one, token, None).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (409, Some("llm_credential_in_use"))
    );
    sqlx::query("UPDATE agents SET llm_credential_id = NULL")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, _) = call(&app, Method::DELETE, &one, token, None).await;
    assert_eq!(status, 204);
    let (status, body) = call(&app, Method::GET, &one, token, None).await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (404, Some("llm_credential_not_found"))
    );
}

#[tokio::test]
async fn managers_see_credentials_and_only_admins_change_or_test_them() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let (status, created) = call(
        &app,
        Method::POST,
        "/api/v1/llm-credentials",
        &admin.access_token,
        Some(
            json!({"name": "OpenAI", "base_url": "https://api.openai.com/v1",
                    "api_key": "sk-x", "default_model": "gpt-4o-mini"}),
        ),
    )
    .await;
    assert_eq!(status, 201);
    let one = format!(
        "/api/v1/llm-credentials/{}",
        created["id"].as_str().unwrap()
    );
    let manager =
        fixtures::member(&app, admin.organization_id, "m@example.com", Role::Manager).await;
    let (status, _) = call(&app, Method::GET, &one, &manager.access_token, None).await;
    assert_eq!(status, 200);
    for (method, path) in [
        (Method::PATCH, one.clone()),
        (Method::DELETE, one.clone()),
        (Method::POST, format!("{one}/test")),
    ] {
        let (status, body) = call(
            &app,
            method,
            &path,
            &manager.access_token,
            Some(json!({"name": "Mine"})),
        )
        .await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    let lead = fixtures::member(&app, admin.organization_id, "l@example.com", Role::Lead).await;
    let (status, _) = call(&app, Method::GET, &one, &lead.access_token, None).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_provider_on_the_platforms_own_network_is_refused_when_saved_and_when_called() {
    let server = provider().await;
    // Production's rule for loopback (development allows local LLMs).
    let app = TestApp::builder()
        .env("ZOARK_OUTBOUND_ALLOW_LOOPBACK", "false")
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    for url in [
        server.uri(),
        "http://169.254.169.254/latest".to_owned(),
        "https://10.1.2.3/v1".to_owned(),
        "https://localhost/v1".to_owned(),
        "https://llm.internal/v1".to_owned(),
    ] {
        assert_base_url_refused(&app, token, url.as_ref()).await;
    }
    // One stored before the rules is refused when called, before any connection (a name that
    // resolves inward later is refused by the resolver: core's outbound tests).
    let port = server.address().port();
    for (name, base_url) in [
        ("by name", format!("http://localhost:{port}/v1")),
        ("by address", format!("http://127.0.0.1:{port}/v1")),
    ] {
        let (status, created) = call(
            &app,
            Method::POST,
            "/api/v1/llm-credentials",
            token,
            Some(
                json!({"name": name, "base_url": "https://api.openai.com/v1",
                        "api_key": "sk-good", "default_model": "gpt-4o-mini"}),
            ),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_str().unwrap();
        sqlx::query("UPDATE llm_credentials SET base_url = $2 WHERE id = $1::uuid")
            .bind(id)
            .bind(&base_url)
            .execute(&app.pool)
            .await
            .unwrap();
        let (status, test) = call(
            &app,
            Method::POST,
            &format!("/api/v1/llm-credentials/{id}/test"),
            token,
            None,
        )
        .await;
        assert_eq!(
            (status.as_u16(), test["ok"].as_bool()),
            (200, Some(false)),
            "{test}"
        );
        let error = test["error"].as_str().unwrap();
        assert!(
            error.contains("not public") || error.contains("internal"),
            "{name}: {error}"
        );
    }
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "the provider on loopback was never called"
    );
}
