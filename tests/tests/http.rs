//! The HTTP surface of the foundation: health, readiness, metrics, the spec, Swagger UI, request
//! ids, and problem+json for everything that is not a success.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::Value;
use zoark_tests::{TestApp, proxy::TcpProxy};

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, "application/problem+json", "status {status}");
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn liveness_and_readiness_answer_200_with_a_reachable_database() {
    let app = TestApp::spawn().await;
    for path in ["/health/live", "/health/ready"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], "ok");
    }
}

#[tokio::test]
async fn readiness_is_503_while_postgres_is_unreachable_and_recovers_without_a_restart() {
    let database = zoark_tests::db::TestDatabase::create().await.unwrap();
    let url = url::Url::parse(&database.url).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432));
    let proxy = TcpProxy::start(target).await.unwrap();
    let mut proxied = url.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let app = TestApp::builder()
        .env("DATABASE_URL", proxied.to_string())
        .spawn()
        .await;

    assert_eq!(app.get("/health/ready").await.status(), 200);

    proxy.cut();
    let (status, body) = problem(app.get("/health/ready").await).await;
    assert_eq!(status, 503);
    assert_eq!(body["code"], "database_unavailable");
    assert_eq!(
        app.get("/health/live").await.status(),
        200,
        "liveness does not depend on the database"
    );

    proxy.restore();
    let mut recovered = false;
    for _ in 0..50 {
        if app.get("/health/ready").await.status() == 200 {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        recovered,
        "readiness did not recover after the database came back"
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_an_incoming_one_is_kept() {
    let app = TestApp::spawn().await;
    for path in ["/health/live", "/no/such/route", "/openapi.json"] {
        let response = app.get(path).await;
        let id = response
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{path} has no x-request-id"));
        assert!(!id.is_empty());
    }
    let response = app
        .client
        .get(app.url("/no/such/route"))
        .header("x-request-id", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-abc_123");
    let (_, body) = problem(response).await;
    assert_eq!(
        body["request_id"], "trace-abc_123",
        "the problem quotes the request id"
    );

    // An id that could inject into logs is replaced, not echoed.
    let response = app
        .client
        .get(app.url("/health/live"))
        .header("x-request-id", "bad id\"{}")
        .send()
        .await
        .unwrap();
    assert_ne!(response.headers()["x-request-id"], "bad id\"{}");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_problem_json_not_html() {
    let app = TestApp::spawn().await;
    let (status, body) = problem(app.get("/api/v1/nothing-here").await).await;
    assert_eq!(status, 404);
    assert_eq!(body["code"], "route_not_found");
    assert_eq!(body["status"], 404);
    assert!(body["type"].as_str().unwrap().starts_with("https://"));
    assert!(body["title"].is_string());

    let (status, body) =
        problem(app.post_raw("/health/live", "application/json", "{}").await).await;
    assert_eq!(status, 405);
    assert_eq!(body["code"], "method_not_allowed");
}

#[tokio::test]
async fn the_served_spec_is_the_committed_one_and_swagger_ui_serves_it() {
    let app = TestApp::spawn().await;
    let served: Value = app.get("/openapi.json").await.json().await.unwrap();
    let committed: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        served, committed,
        "docs/openapi.json is stale: run `cargo xtask openapi`"
    );
    assert_eq!(served["openapi"], "3.0.0");
    for path in ["/health/live", "/health/ready", "/metrics"] {
        assert!(
            served["paths"][path]["get"].is_object(),
            "{path} is documented"
        );
    }

    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "Swagger UI page");
}

#[tokio::test]
async fn metrics_expose_http_requests_in_prometheus_format() {
    let app = TestApp::spawn().await;
    app.get("/health/live").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("zoark_http_requests_total{")
                && l.contains("operation=\"health_live\"")),
        "metrics:\n{text}"
    );
    assert!(text.contains("zoark_http_request_duration_seconds"));
}

#[tokio::test]
async fn a_metrics_token_guards_the_metrics_and_the_docs_can_be_turned_off() {
    let app = TestApp::builder()
        .env("ZOARK_METRICS_TOKEN", "scrape-me-please")
        .env("ZOARK_API_DOCS", "false")
        .spawn()
        .await;
    assert_eq!(app.get("/metrics").await.status(), 401);
    let wrong = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me-not")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me-please")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    assert!(right.text().await.unwrap().contains("zoark_"));
    for path in ["/docs", "/docs/", "/openapi.json"] {
        assert_eq!(app.get(path).await.status(), 404, "{path}");
    }
    // The API itself is unaffected.
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[tokio::test]
async fn every_response_carries_the_security_headers_and_no_cors_grant() {
    let app = TestApp::spawn().await;
    for path in [
        "/health/live",
        "/api/v1/jobs",
        "/api/v1/nope",
        "/docs/",
        "/openapi.json",
    ] {
        let response = app
            .client
            .get(app.url(path))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        assert!(
            headers["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert!(
            !headers.contains_key("access-control-allow-origin"),
            "{path}"
        );
        assert!(
            !headers.contains_key("strict-transport-security"),
            "no HSTS over plain HTTP in development"
        );
    }
    // The dashboard keeps its own, stricter policy; Swagger UI has one allowing only its inline
    // script and styles (its rendering is checked in Chromium by the dashboard's tests).
    let page = app.get("/dashboard/sign-in").await;
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let docs = app.get("/docs/").await;
    let csp = docs.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
}

#[tokio::test]
async fn production_sends_hsts_and_grants_cors_to_the_configured_origins_only() {
    let app = TestApp::builder()
        .env("ZOARK_ENV", "production")
        .env("ZOARK_PUBLIC_URL", "https://zoark.example.com")
        .env("ZOARK_BEHIND_PROXY", "true")
        .env(
            "ZOARK_JWT_SECRET",
            "a-very-long-production-secret-of-at-least-32-chars",
        )
        .env(
            "ZOARK_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .env(
            "ZOARK_BACKUP_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        )
        .env("ZOARK_EMAIL_TRANSPORT", "smtp")
        .env("ZOARK_SMTP_HOST", "smtp.example.com")
        .env("ZOARK_EMAIL_FROM", "Zoark <no-reply@example.com>")
        .env("ZOARK_CORS_ORIGINS", "https://app.example.com")
        .spawn()
        .await;
    let response = app.get("/health/live").await;
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/projects"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, idempotency-key",
            )
            .send()
    };
    let allowed = preflight("https://app.example.com").await.unwrap();
    let headers = allowed.headers();
    assert_eq!(
        headers["access-control-allow-origin"], "https://app.example.com",
        "{headers:?}"
    );
    assert!(!headers.contains_key("access-control-allow-credentials"));
    assert!(
        headers["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("idempotency-key")
    );
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin"),
        "{:?}",
        refused.headers()
    );
    // A simple request from the allowed origin may read the answer and its request id.
    let read = app
        .client
        .get(app.url("/health/live"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        read.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
}

/// Found by schemathesis: bodies the spec called invalid.
#[tokio::test]
async fn problems_and_null_fields_are_what_the_served_spec_says() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schemas = &spec["components"]["schemas"];

    // A problem without field errors leaves `errors` out, so the schema must not require it.
    let (status, body) = problem(app.get("/api/v1/auth/me").await).await;
    assert_eq!(status, 401);
    assert!(body.get("errors").is_none(), "{body}");
    let required = schemas["Problem"]["required"].as_array().unwrap();
    assert!(!required.contains(&Value::from("errors")), "{required:?}");

    // An API key has no user: `user` and `session_id` are null, so they must be nullable.
    let organization = zoark_tests::fixtures::organization(&app.pool, "Nulls").await;
    let key =
        zoark_tests::fixtures::api_key(&app.pool, organization, zoark_core::access::Role::Admin)
            .await;
    let (status, me) = app
        .call_json(reqwest::Method::GET, "/api/v1/auth/me", Some(&key), None)
        .await;
    assert_eq!(status, 200);
    for field in ["user", "session_id"] {
        assert!(me[field].is_null(), "{field}: {me}");
        assert_eq!(
            schemas["Me"]["properties"][field]["nullable"], true,
            "Me.{field}"
        );
    }

    // A body without a content type is 415, which every operation documents.
    let response = app
        .client
        .post(app.url("/api/v1/team-members"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    let (status, body) = problem(response).await;
    assert_eq!(status, 415);
    assert_eq!(body["code"], "unsupported_media_type");
    assert!(
        spec["paths"]["/api/v1/team-members"]["post"]["responses"]["415"].is_object(),
        "415 is documented"
    );
}

/// Found by probing what schemathesis reported as unreachable: Postgres stores no NUL character
/// and no instant before 4713 BC, and such input was a 500 from the database.
#[tokio::test]
async fn nul_characters_and_instants_postgres_cannot_store_are_4xx_naming_the_field() {
    let app = TestApp::spawn().await;
    let organization = zoark_tests::fixtures::organization(&app.pool, "Edges").await;
    let key =
        zoark_tests::fixtures::api_key(&app.pool, organization, zoark_core::access::Role::Admin)
            .await;
    let get = |path: &'static str| {
        let app = &app;
        let key = key.clone();
        async move {
            app.call_json(reqwest::Method::GET, path, Some(&key), None)
                .await
        }
    };
    for (path, field) in [
        ("/api/v1/team-members?q=a%00b", "q"),
        ("/api/v1/team-members?limit=5&department=%00", "department"),
        ("/api/v1/audit-log?action=%00", "action"),
        ("/api/v1/jobs?kind=%00", "kind"),
        (
            "/api/v1/jobs?created_after=-262143-01-01T00:00:00Z",
            "created_after",
        ),
        (
            "/api/v1/audit-log?created_before=-5000-01-01T00:00:00Z",
            "created_before",
        ),
        ("/api/v1/unsubscribe/%00", "path"),
    ] {
        let (status, body) = get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(zoark_tests::field_names(&body), [field], "{path}");
    }
    // The oldest instant Postgres stores is still a filter.
    let (status, body) = get("/api/v1/jobs?created_after=-4712-01-01T00:00:00Z").await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = app
        .call_json(
            reqwest::Method::POST,
            "/api/v1/team-members",
            Some(&key),
            Some(&serde_json::json!({
                "name": "Ada", "email": "ada@example.com", "department": "R\u{0}D"
            })),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(zoark_tests::field_names(&body), ["department"]);
}

/// Every operation's JSON body documents an example, so clients (and schemathesis' examples
/// phase) have a valid call to start from; a new operation without one fails here. Multipart
/// uploads are left out: poem-openapi's `Multipart` derive cannot carry an example.
#[tokio::test]
async fn every_json_request_body_has_an_example() {
    let app = TestApp::spawn().await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let schemas = &spec["components"]["schemas"];
    let mut missing = Vec::new();
    let mut checked = 0;
    for (path, operations) in spec["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let Some(content) = operation["requestBody"]["content"].as_object() else {
                continue;
            };
            for (media_type, body) in content {
                // Uploads and raw messages are not JSON.
                if !media_type.ends_with("json") {
                    continue;
                }
                checked += 1;
                let schema = &body["schema"];
                let resolved = match schema["$ref"].as_str() {
                    Some(reference) => {
                        let name = reference.trim_start_matches("#/components/schemas/");
                        &schemas[name]
                    }
                    None => schema,
                };
                let example = [&body["example"], &schema["example"], &resolved["example"]]
                    .into_iter()
                    .find(|e| !e.is_null());
                match example {
                    Some(Value::Object(fields)) if !fields.is_empty() => {}
                    other => missing.push(format!("{method} {path} ({media_type}): {other:?}")),
                }
            }
        }
    }
    assert!(checked > 20, "only {checked} JSON bodies found");
    assert!(
        missing.is_empty(),
        "bodies without an example:\n{}",
        missing.join("\n")
    );
}
