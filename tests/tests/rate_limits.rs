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

#[tokio::test]
async fn made_up_api_keys_count_against_their_address_and_a_busy_key_is_written_once_a_minute() {
    let app = TestApp::builder()
        .env("ZOARK_RATE_LIMIT_PER_CALLER", "1000")
        .env("ZOARK_RATE_LIMIT_PER_ADDRESS", "3")
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "A").await;
    let key = fixtures::api_key(&app.pool, admin.organization_id, Role::Admin).await;
    let version = || async {
        sqlx::query_scalar::<_, String>("SELECT xmin::text FROM api_keys")
            .fetch_one(&app.pool)
            .await
            .unwrap()
    };

    // A real key: its first request is the address's (one of three), then it has its own
    // budget; twenty requests write its `last_used_at` once.
    let first = app
        .call(Method::GET, "/api/v1/jobs", Some(&key), None)
        .await;
    assert_eq!(first.status(), 200);
    let written = version().await;
    for _ in 0..19 {
        let response = app
            .call(Method::GET, "/api/v1/jobs", Some(&key), None)
            .await;
        assert_eq!(
            response.status(),
            200,
            "a real key is not held to the address's three"
        );
    }
    assert_eq!(
        version().await,
        written,
        "last_used_at is written at most once a minute"
    );

    // A signed-in user's refused request (its session ended) costs the address too.
    let out = app
        .call(
            Method::POST,
            "/api/v1/auth/logout",
            Some(&admin.access_token),
            None,
        )
        .await;
    assert!(out.status().is_success(), "{}", out.status());
    let refused = app
        .call(Method::GET, "/api/v1/jobs", Some(&admin.access_token), None)
        .await;
    assert_eq!(refused.status(), 401);

    // Made-up keys, each a new string, share what is left of the address's three.
    let response = app
        .call(
            Method::GET,
            "/api/v1/jobs",
            Some("zk_made_up_0_aaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            None,
        )
        .await;
    assert_eq!(response.status(), 401);
    let fake = "zk_made_up_1_aaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_owned();
    assert_limited(
        app.call(Method::GET, "/api/v1/jobs", Some(&fake), None)
            .await,
    )
    .await;
    // The real key keeps working from the same address.
    let response = app
        .call(Method::GET, "/api/v1/jobs", Some(&key), None)
        .await;
    assert_eq!(response.status(), 200);
}
