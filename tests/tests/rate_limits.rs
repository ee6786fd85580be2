//! Rate limits through the real API: per user, per API key, per address without credentials,
//! stricter on the authentication routes; 429 problem+json with `Retry-After`, and
//! `RateLimit-*` headers on every `/api/v1` response.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, Response};
use serde_json::{Value, json};
use zoark_core::access::Role;
use zoark_tests::{TestApp, fixtures};

fn header(response: &Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

async fn assert_limited(response: Response) {
    assert_eq!(response.status(), 429);
    assert!(header(&response, "retry-after") >= 1);
    assert_eq!(header(&response, "ratelimit-remaining"), 0);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["code"], "rate_limited");
    assert!(problem["request_id"].is_string());
}

#[tokio::test]
async fn callers_addresses_and_sign_in_attempts_are_limited_separately() {
    let app = TestApp::builder()
        .env("ZOARK_RATE_LIMIT_AUTH_PER_ADDRESS", "4")
        .env("ZOARK_RATE_LIMIT_PER_CALLER", "5")
        .env("ZOARK_RATE_LIMIT_PER_ADDRESS", "3")
        .spawn()
        .await;
    // Two of the four sign-in requests this address may make per minute.
    let admin = fixtures::register(&app, "admin@example.com", "A").await;
    let other = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    let wrong = json!({"email": "admin@example.com", "password": "wrong password 99"});
    let bad_login = || app.call(Method::POST, "/api/v1/auth/login", None, Some(&wrong));
    let third = bad_login().await;
    assert_eq!(third.status(), 401);
    assert_eq!(header(&third, "ratelimit-limit"), 4);
    assert_eq!(header(&third, "ratelimit-remaining"), 1);
    assert_eq!(bad_login().await.status(), 401);
    assert_limited(bad_login().await).await;

    // Per user: five requests a minute, counted down in the headers.
    for expected in (0..5).rev() {
        let response = app
            .call(
                Method::GET,
                "/api/v1/auth/me",
                Some(&admin.access_token),
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-remaining"), expected);
        assert_eq!(header(&response, "ratelimit-limit"), 5);
    }
    assert_limited(
        app.call(
            Method::GET,
            "/api/v1/auth/me",
            Some(&admin.access_token),
            None,
        )
        .await,
    )
    .await;
    // Another user of the same address has their own budget.
    let response = app
        .call(
            Method::GET,
            "/api/v1/auth/me",
            Some(&other.access_token),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);

    // Without credentials, the address is the key.
    for _ in 0..3 {
        assert_eq!(app.get("/api/v1/jobs").await.status(), 401);
    }
    assert_limited(app.get("/api/v1/jobs").await).await;
    // Health checks and the spec are not rate limited.
    for _ in 0..10 {
        assert_eq!(app.get("/health/live").await.status(), 200);
    }
}
