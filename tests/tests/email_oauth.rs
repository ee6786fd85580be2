//! Connecting Gmail and Outlook accounts: the authorization URL (PKCE, state, send scopes),
//! the callback's code exchange against wiremock speaking Google's token endpoint, tokens
//! sealed at rest, single-use state, refusals.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use base64::Engine as _;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use zoark_tests::{
    TestApp, fixtures,
    peers::Peers,
    wiremock::{
        Mock, ResponseTemplate,
        matchers::{method, path},
    },
};

fn unsigned_jwt(claims: &Value) -> String {
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.signature",
        b64(&json!({"alg": "RS256", "typ": "JWT"})),
        b64(claims)
    )
}

async fn start(app: &TestApp, token: &str, provider: &str) -> (u16, Value) {
    let response = app
        .call(
            Method::GET,
            &format!("/api/v1/email-accounts/oauth/{provider}/start"),
            Some(token),
            None,
        )
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn query(url: &str) -> HashMap<String, String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn callback(app: &TestApp, provider: &str, params: &str) -> (u16, Value) {
    let response = app
        .get(&format!(
            "/api/v1/email-accounts/oauth/{provider}/callback?{params}"
        ))
        .await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_gmail_account_connects_with_pkce_and_its_tokens_are_sealed() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.access-token",
            "refresh_token": "1//refresh-token",
            "expires_in": 3599,
            "token_type": "Bearer",
            "scope": "openid email https://www.googleapis.com/auth/gmail.send",
            "id_token": unsigned_jwt(&json!({"sub": "10769150350006150715113082367",
                "email": "ada.sender@gmail.com", "name": "Ada Sender"})),
        })))
        .expect(1)
        .mount(&peers.google)
        .await;

    let (status, body) = start(&app, &admin.access_token, "gmail").await;
    assert_eq!(status, 200, "{body}");
    let url = body["authorization_url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/o/oauth2/v2/auth?", peers.google.uri())),
        "{url}"
    );
    let q = query(url);
    assert_eq!(q["client_id"], "test-google-client");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["access_type"], "offline");
    assert_eq!(
        q["redirect_uri"],
        "http://localhost:8080/api/v1/email-accounts/oauth/gmail/callback"
    );
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    assert!(
        scopes.contains(&"https://www.googleapis.com/auth/gmail.send"),
        "{scopes:?}"
    );
    let state = &q["state"];
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM oauth_states WHERE state_hash = sha256($1::bytea)",
    )
    .bind(state.as_bytes())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1, "the state is stored hashed");

    let (status, connected) =
        callback(&app, "gmail", &format!("code=4%2F0Adeu5B&state={state}")).await;
    assert_eq!(status, 200, "{connected}");
    assert_eq!(connected["from_address"], "ada.sender@gmail.com");
    assert_eq!(connected["provider"], "gmail");

    // The exchange carried the code and a verifier matching the challenge.
    let requests = peers.google.received_requests().await.unwrap();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&requests[0].body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    assert_eq!(form["grant_type"], "authorization_code");
    assert_eq!(form["code"], "4/0Adeu5B");
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(form["code_verifier"].as_bytes()));
    assert_eq!(challenge, q["code_challenge"]);

    // Tokens at rest: sealed, and they open to what Google sent.
    let (access, refresh): (Vec<u8>, Vec<u8>) = sqlx::query_as(
        "SELECT oauth_access_token_ciphertext, oauth_refresh_token_ciphertext FROM email_accounts",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!String::from_utf8_lossy(&access).contains("ya29"));
    let key = &app.settings.encryption_key;
    assert_eq!(
        zoark_core::crypto::open(key, &access).unwrap(),
        b"ya29.access-token"
    );
    assert_eq!(
        zoark_core::crypto::open(key, &refresh).unwrap(),
        b"1//refresh-token"
    );
    let (_, list) = {
        let r = app
            .call(
                Method::GET,
                "/api/v1/email-accounts",
                Some(&admin.access_token),
                None,
            )
            .await;
        ((), r.json::<Value>().await.unwrap())
    };
    assert_eq!(list["items"][0]["provider"], "gmail");
    assert!(!list.to_string().contains("ya29"));

    // The state works once.
    let (status, body) = callback(&app, "gmail", &format!("code=again&state={state}")).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("state"))
    );
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action LIKE 'email_account.%'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(actions, ["email_account.connected"]);
}

#[tokio::test]
async fn refused_consent_unknown_state_and_a_refused_code_are_clear_errors() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    Mock::given(method("POST"))
        .and(path("/common/oauth2/v2.0/token"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "AADSTS70008: The provided authorization code has expired."
        })))
        .mount(&peers.microsoft)
        .await;
    let (status, body) = start(&app, &admin.access_token, "outlook").await;
    assert_eq!(status, 200);
    let q = query(body["authorization_url"].as_str().unwrap());
    let scopes: Vec<&str> = q["scope"].split(' ').collect();
    assert!(
        scopes.contains(&"Mail.Send") && scopes.contains(&"offline_access"),
        "{scopes:?}"
    );

    let (status, body) = callback(&app, "outlook", "error=access_denied&state=x").await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("error"))
    );
    let (status, body) = callback(&app, "outlook", "code=c&state=never-issued").await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("state"))
    );
    let (status, body) = callback(&app, "gmail", &format!("code=c&state={}", q["state"])).await;
    assert_eq!(status, 400, "a state is bound to its provider: {body}");
    let (_, again) = start(&app, &admin.access_token, "outlook").await;
    let state = query(again["authorization_url"].as_str().unwrap())["state"].clone();
    let (status, body) = callback(&app, "outlook", &format!("code=expired&state={state}")).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("oauth_exchange_failed")),
        "{body}"
    );
    assert!(
        body["detail"].as_str().unwrap().contains("invalid_grant"),
        "{body}"
    );
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM email_accounts")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(accounts, 0);

    // An API key has no user to bind the state to.
    let key = fixtures::api_key(
        &app.pool,
        admin.organization_id,
        zoark_core::access::Role::Admin,
    )
    .await;
    let (status, body) = start(&app, &key, "gmail").await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("authorization"))
    );
}
