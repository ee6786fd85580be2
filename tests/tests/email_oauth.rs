//! Connecting Gmail and Outlook accounts: the authorization URL (PKCE, state, send scopes),
//! the callback's code exchange against wiremock speaking Google's token endpoint, tokens
//! sealed at rest, single-use state, refusals. Then sending through them (the test-message job)
//! against wiremock speaking the Gmail API, Microsoft Graph and both token endpoints: the bearer
//! token, refresh before expiry and after a 401, a refused refresh token taking the account out
//! of service, and retry classification.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, time::Duration};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;
use zoark_core::db::email_accounts::{self, OAuthTokens};
use zoark_tests::{
    TestApp, fixtures,
    peers::Peers,
    wiremock::{
        Mock, ResponseTemplate,
        matchers::{body_string_contains, header, method, path},
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

/// The browser coming back from the provider with `params`: the callback passes it on to the
/// web app (303), whose page completes the connection with the signed-in user's `token`.
async fn callback(app: &TestApp, token: &str, provider: &str, params: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/email-accounts/oauth/{provider}/callback?{params}"
        )))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    if status != 303 {
        return (status, response.json().await.unwrap_or(Value::Null));
    }
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with("http://localhost:8080/email-accounts/connect?"),
        "{location}"
    );
    let q = query(&location);
    assert_eq!(q["provider"], provider);
    let response = app
        .call(
            Method::POST,
            &format!("/api/v1/email-accounts/oauth/{provider}/complete"),
            Some(token),
            Some(&json!({"code": q["code"], "state": q["state"]})),
        )
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

    // Someone else who opened the link and consented connects nothing: the state belongs to
    // the admin's sign-in (and stays usable by it).
    let other = fixtures::member(
        &app,
        admin.organization_id,
        "manager@example.com",
        zoark_core::access::Role::Manager,
    )
    .await;
    let params = format!("code=4%2F0Adeu5B&state={state}");
    let (status, body) = callback(&app, &other.access_token, "gmail", &params).await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("state")),
        "{body}"
    );
    let (status, connected) = callback(&app, &admin.access_token, "gmail", &params).await;
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
    let account: Uuid = connected["id"].as_str().unwrap().parse().unwrap();
    let org = admin.organization_id;
    assert_eq!(
        zoark_tests::open_stored(
            &app,
            email_accounts::OAUTH_ACCESS_TOKEN,
            org,
            account,
            &access
        ),
        b"ya29.access-token"
    );
    assert_eq!(
        zoark_tests::open_stored(
            &app,
            email_accounts::OAUTH_REFRESH_TOKEN,
            org,
            account,
            &refresh
        ),
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
    let (status, body) = callback(
        &app,
        &admin.access_token,
        "gmail",
        &format!("code=again&state={state}"),
    )
    .await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("state"))
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

    let token = admin.access_token.as_str();
    let (status, body) = callback(&app, token, "outlook", "error=access_denied&state=x").await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (400, Some("error"))
    );
    let (status, body) = callback(&app, token, "outlook", "code=c&state=never-issued").await;
    assert_eq!(
        (status, body["errors"][0]["field"].as_str()),
        (422, Some("state"))
    );
    let (status, body) = callback(
        &app,
        token,
        "gmail",
        &format!("code=c&state={}", q["state"]),
    )
    .await;
    assert_eq!(status, 422, "a state is bound to its provider: {body}");
    let (_, again) = start(&app, token, "outlook").await;
    let state = query(again["authorization_url"].as_str().unwrap())["state"].clone();
    let (status, body) = callback(
        &app,
        token,
        "outlook",
        &format!("code=expired&state={state}"),
    )
    .await;
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

#[tokio::test]
async fn an_unverified_address_or_another_provider_account_is_not_connected() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let answer = |claims: Value| {
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.access-token", "refresh_token": "1//refresh-token",
            "expires_in": 3599, "token_type": "Bearer",
            "scope": "openid email https://www.googleapis.com/auth/gmail.send",
            "id_token": unsigned_jwt(&claims),
        }))
    };
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(answer(json!({"sub": "1", "email": "ada.sender@gmail.com",
                                    "email_verified": false})))
        .up_to_n_times(1)
        .mount(&peers.google)
        .await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(answer(
            json!({"sub": "someone-else", "email": "ada.sender@gmail.com",
                                    "email_verified": true}),
        ))
        .mount(&peers.google)
        .await;
    let connect = || async {
        let (_, started) = start(&app, token, "gmail").await;
        let state = query(started["authorization_url"].as_str().unwrap())["state"].clone();
        callback(&app, token, "gmail", &format!("code=c&state={state}")).await
    };
    let (status, body) = connect().await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("oauth_email_unverified")),
        "{body}"
    );
    // The address is connected already, through another Google account: never overwritten.
    let existing = connected(
        &app,
        &admin,
        "gmail",
        "ada.sender@gmail.com",
        ("ya29.mine", "1//mine"),
        chrono::Duration::hours(1),
    )
    .await;
    let (status, body) = connect().await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("oauth_account_mismatch")),
        "{body}"
    );
    let (access, _, _) = stored_tokens(&app, existing).await;
    assert_eq!(access, "ya29.mine");
}

// Sending through connected accounts.

const GMAIL_SEND: &str = "/gmail/v1/users/me/messages/send";
const GRAPH_SEND: &str = "/v1.0/me/sendMail";
const GOOGLE_TOKEN: &str = "/token";
const MICROSOFT_TOKEN: &str = "/common/oauth2/v2.0/token";

/// A connected account as the callback stores it: tokens sealed, the access token expiring
/// `expires_in` from now.
async fn connected(
    app: &TestApp,
    admin: &fixtures::Account,
    provider: &str,
    address: &str,
    (access, refresh): (&str, &str),
    expires_in: chrono::Duration,
) -> Uuid {
    let key = &app.settings.encryption_key;
    let mut conn = app.pool.acquire().await.unwrap();
    email_accounts::upsert_oauth(
        &mut conn,
        admin.organization_id,
        admin.user_id,
        &OAuthTokens {
            id: Uuid::now_v7(),
            provider: provider.into(),
            display_name: "Ada Sender".into(),
            from_address: address.into(),
            subject: Some("subject-1".into()),
            sealed_access_token: zoark_core::crypto::seal(key, access.as_bytes()).unwrap(),
            sealed_refresh_token: zoark_core::crypto::seal(key, refresh.as_bytes()).unwrap(),
            expires_at: Some(Utc::now() + expires_in),
            scopes: vec![],
        },
    )
    .await
    .unwrap()
    .unwrap()
}

/// Queues the test message to `to` through the account; returns the job id.
async fn queue_test(app: &TestApp, token: &str, account: Uuid, to: &str) -> String {
    let response = app
        .call(
            Method::POST,
            &format!("/api/v1/email-accounts/{account}/test"),
            Some(token),
            Some(&json!({ "to": to })),
        )
        .await;
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["job_id"].as_str().unwrap().to_owned()
}

async fn get(app: &TestApp, token: &str, path: &str) -> Value {
    let response = app.call(Method::GET, path, Some(token), None).await;
    assert_eq!(response.status(), 200, "GET {path}");
    response.json().await.unwrap()
}

/// The account's tokens, opened, and when the access token expires.
async fn stored_tokens(app: &TestApp, account: Uuid) -> (String, String, DateTime<Utc>) {
    let (org, access, refresh, expires_at): (Uuid, Vec<u8>, Vec<u8>, DateTime<Utc>) =
        sqlx::query_as(
            "SELECT organization_id, oauth_access_token_ciphertext,
                    oauth_refresh_token_ciphertext, oauth_expires_at
             FROM email_accounts WHERE id = $1",
        )
        .bind(account)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let open = |column, sealed: &[u8]| {
        let plain = zoark_tests::open_stored(app, column, org, account, sealed);
        assert!(
            !sealed.windows(plain.len()).any(|w| w == plain.as_slice()),
            "sealed at rest"
        );
        String::from_utf8(plain).unwrap()
    };
    (
        open(email_accounts::OAUTH_ACCESS_TOKEN, &access),
        open(email_accounts::OAUTH_REFRESH_TOKEN, &refresh),
        expires_at,
    )
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

async fn requests_to(
    server: &zoark_tests::wiremock::MockServer,
    to: &str,
) -> Vec<zoark_tests::wiremock::Request> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.url.path() == to)
        .collect()
}

fn gmail_sent() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "18c2f0a1b2c3d4e5",
        "threadId": "18c2f0a1b2c3d4e5",
        "labelIds": ["SENT"],
    }))
}

/// The MIME message inside a Gmail send request.
fn gmail_raw(request: &zoark_tests::wiremock::Request) -> String {
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    let raw = body["raw"].as_str().unwrap();
    let mime = base64::engine::general_purpose::URL_SAFE
        .decode(raw)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
        .expect("raw is base64url");
    String::from_utf8(mime).unwrap()
}

#[tokio::test]
async fn a_gmail_account_sends_the_raw_message_with_its_bearer_token() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let account = connected(
        &app,
        &admin,
        "gmail",
        "ada.sender@gmail.com",
        ("ya29.valid-token", "1//refresh-token"),
        chrono::Duration::minutes(50),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(GMAIL_SEND))
        .and(header("authorization", "Bearer ya29.valid-token"))
        .respond_with(gmail_sent())
        .expect(1)
        .mount(&peers.google)
        .await;
    Mock::given(method("POST"))
        .and(path(GOOGLE_TOKEN))
        .respond_with(ResponseTemplate::new(500))
        .expect(0)
        .mount(&peers.google)
        .await;

    let job = queue_test(&app, &admin.access_token, account, "friend@example.com").await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let job = get(&app, &admin.access_token, &format!("/api/v1/jobs/{job}")).await;
    assert_eq!(job["state"], "completed", "{job}");

    let sent = requests_to(&peers.google, GMAIL_SEND).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0].headers.get("content-type").unwrap(),
        "application/json"
    );
    let mime = gmail_raw(&sent[0]);
    assert!(
        mime.contains("Subject: Zoark test message from Ada Sender"),
        "{mime}"
    );
    assert!(mime.contains("To: friend@example.com"), "{mime}");
    let from = mime.lines().find(|l| l.starts_with("From: ")).unwrap();
    assert!(
        from.contains("Ada Sender") && from.contains("<ada.sender@gmail.com>"),
        "{from}"
    );
    assert!(mime.contains("Message-ID: <"), "{mime}");
}

#[tokio::test]
async fn an_expiring_access_token_is_refreshed_before_sending_and_stored_sealed() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    // Within the 60 s margin: refreshed first rather than refused mid-send.
    let account = connected(
        &app,
        &admin,
        "gmail",
        "ada.sender@gmail.com",
        ("ya29.expiring-token", "1//refresh-token"),
        chrono::Duration::seconds(30),
    )
    .await;
    // Google does not rotate the refresh token: the stored one must stay.
    Mock::given(method("POST"))
        .and(path(GOOGLE_TOKEN))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "ya29.fresh-token",
            "expires_in": 3599,
            "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/gmail.send",
        })))
        .expect(1)
        .mount(&peers.google)
        .await;
    Mock::given(method("POST"))
        .and(path(GMAIL_SEND))
        .and(header("authorization", "Bearer ya29.fresh-token"))
        .respond_with(gmail_sent())
        .expect(1)
        .mount(&peers.google)
        .await;

    let job = queue_test(&app, &admin.access_token, account, "friend@example.com").await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let job = get(&app, &admin.access_token, &format!("/api/v1/jobs/{job}")).await;
    assert_eq!(job["state"], "completed", "{job}");

    let refreshes = requests_to(&peers.google, GOOGLE_TOKEN).await;
    assert_eq!(
        form(&refreshes[0].body)["refresh_token"],
        "1//refresh-token"
    );
    let (access, refresh, expires_at) = stored_tokens(&app, account).await;
    assert_eq!(access, "ya29.fresh-token");
    assert_eq!(
        refresh, "1//refresh-token",
        "kept when the provider sends none"
    );
    assert!(
        expires_at > Utc::now() + chrono::Duration::minutes(55),
        "{expires_at}"
    );
}

#[tokio::test]
async fn a_refused_access_token_is_refreshed_once_and_the_send_retried() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    // Not expired by the clock, yet revoked at Microsoft's end.
    let account = connected(
        &app,
        &admin,
        "outlook",
        "ada@contoso.example",
        ("eyJ0eXAi.revoked", "M.C507_refresh-1"),
        chrono::Duration::minutes(50),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(GRAPH_SEND))
        .and(header("authorization", "Bearer eyJ0eXAi.revoked"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": {"code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid."}
        })))
        .expect(1)
        .mount(&peers.microsoft)
        .await;
    Mock::given(method("POST"))
        .and(path(GRAPH_SEND))
        .and(header("authorization", "Bearer eyJ0eXAi.fresh"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&peers.microsoft)
        .await;
    // Microsoft rotates the refresh token.
    Mock::given(method("POST"))
        .and(path(MICROSOFT_TOKEN))
        .and(body_string_contains("grant_type=refresh_token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token_type": "Bearer",
            "scope": "Mail.Send",
            "expires_in": 4391,
            "access_token": "eyJ0eXAi.fresh",
            "refresh_token": "M.C507_refresh-2",
        })))
        .expect(1)
        .mount(&peers.microsoft)
        .await;

    let job = queue_test(&app, &admin.access_token, account, "friend@example.com").await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let job = get(&app, &admin.access_token, &format!("/api/v1/jobs/{job}")).await;
    assert_eq!(job["state"], "completed", "{job}");
    let refreshes = requests_to(&peers.microsoft, MICROSOFT_TOKEN).await;
    assert_eq!(
        form(&refreshes[0].body)["refresh_token"],
        "M.C507_refresh-1"
    );
    let (access, refresh, _) = stored_tokens(&app, account).await;
    assert_eq!(
        (access.as_str(), refresh.as_str()),
        ("eyJ0eXAi.fresh", "M.C507_refresh-2")
    );
}

#[tokio::test]
async fn a_refused_refresh_token_marks_the_account_for_reconnection_and_discards_the_job() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let account = connected(
        &app,
        &admin,
        "gmail",
        "ada.sender@gmail.com",
        ("ya29.expired-token", "1//revoked-refresh-token"),
        chrono::Duration::minutes(-5),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(GOOGLE_TOKEN))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked."
        })))
        .expect(1)
        .mount(&peers.google)
        .await;
    Mock::given(method("POST"))
        .and(path(GMAIL_SEND))
        .respond_with(gmail_sent())
        .expect(0)
        .mount(&peers.google)
        .await;

    let token = admin.access_token.as_str();
    let first = queue_test(&app, token, account, "friend@example.com").await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let job = get(&app, token, &format!("/api/v1/jobs/{first}")).await;
    assert_eq!(job["state"], "discarded", "{job}");
    let error = job["errors"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("needs to be reconnected") && error.contains("invalid_grant"),
        "{job}"
    );

    let shown = get(&app, token, &format!("/api/v1/email-accounts/{account}")).await;
    assert_eq!(shown["status"], "needs_reauth", "{shown}");
    let reason = shown["status_reason"].as_str().unwrap();
    assert!(
        reason.contains("Google") && reason.contains("invalid_grant"),
        "{shown}"
    );

    // Until it is reconnected, a send fails at once without asking Google anything.
    let second = queue_test(&app, token, account, "friend@example.com").await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let job = get(&app, token, &format!("/api/v1/jobs/{second}")).await;
    assert_eq!(job["state"], "discarded", "{job}");
    assert!(
        job["errors"][0]["error"]
            .as_str()
            .unwrap()
            .contains("needs_reauth"),
        "{job}"
    );
}

#[tokio::test]
async fn an_outlook_account_sends_the_mime_message_through_graph() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let account = connected(
        &app,
        &admin,
        "outlook",
        "ada@contoso.example",
        ("eyJ0eXAi.valid", "M.C507_refresh-1"),
        chrono::Duration::minutes(50),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(GRAPH_SEND))
        .and(header("authorization", "Bearer eyJ0eXAi.valid"))
        .and(header("content-type", "text/plain"))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&peers.microsoft)
        .await;

    let job = queue_test(&app, &admin.access_token, account, "friend@example.com").await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let job = get(&app, &admin.access_token, &format!("/api/v1/jobs/{job}")).await;
    assert_eq!(job["state"], "completed", "{job}");

    let sent = requests_to(&peers.microsoft, GRAPH_SEND).await;
    let mime = base64::engine::general_purpose::STANDARD
        .decode(&sent[0].body)
        .expect("the body is the base64 MIME message");
    let mime = String::from_utf8(mime).unwrap();
    assert!(
        mime.contains("Subject: Zoark test message from Ada Sender"),
        "{mime}"
    );
    assert!(mime.contains("To: friend@example.com"), "{mime}");
    assert!(mime.contains("ada@contoso.example"), "{mime}");
    assert!(
        requests_to(&peers.microsoft, MICROSOFT_TOKEN)
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn throttling_leaves_the_job_to_retry_and_a_refused_message_discards_it() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let account = connected(
        &app,
        &admin,
        "gmail",
        "ada.sender@gmail.com",
        ("ya29.valid-token", "1//refresh-token"),
        chrono::Duration::minutes(50),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(GMAIL_SEND))
        .respond_with(ResponseTemplate::new(429).set_body_json(json!({
            "error": {"code": 429, "message": "User-rate limit exceeded.", "status": "RESOURCE_EXHAUSTED"}
        })))
        .expect(1)
        .mount(&peers.google)
        .await;
    let throttled = queue_test(&app, token, account, "friend@example.com").await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let job = get(&app, token, &format!("/api/v1/jobs/{throttled}")).await;
    assert_eq!(job["state"], "retryable", "{job}");
    let error = job["errors"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("will retry") && error.contains("RESOURCE_EXHAUSTED"),
        "{job}"
    );

    peers.google.reset().await;
    Mock::given(method("POST"))
        .and(path(GMAIL_SEND))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {"code": 400, "message": "Invalid To header", "status": "INVALID_ARGUMENT"}
        })))
        .expect(1)
        .mount(&peers.google)
        .await;
    let refused = queue_test(&app, token, account, "friend@example.com").await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let job = get(&app, token, &format!("/api/v1/jobs/{refused}")).await;
    assert_eq!(job["state"], "discarded", "{job}");
    let error = job["errors"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("refused permanently")
            && error.contains("INVALID_ARGUMENT: Invalid To header"),
        "{job}"
    );
    let shown = get(&app, token, &format!("/api/v1/email-accounts/{account}")).await;
    assert_eq!(
        shown["status"], "active",
        "a refused message says nothing about the account"
    );
}

#[tokio::test]
async fn concurrent_sends_with_an_expired_token_refresh_it_once_and_return_gmails_id() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let account = connected(
        &app,
        &admin,
        "gmail",
        "ada.sender@gmail.com",
        ("ya29.expired-token", "1//refresh-token"),
        chrono::Duration::minutes(-1),
    )
    .await;
    // Slow enough that the second sender reaches the row lock while the first refreshes.
    Mock::given(method("POST"))
        .and(path(GOOGLE_TOKEN))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({
                    "access_token": "ya29.fresh-token",
                    "expires_in": 3599,
                    "token_type": "Bearer",
                }))
                .set_delay(Duration::from_millis(500)),
        )
        .expect(1)
        .mount(&peers.google)
        .await;
    Mock::given(method("POST"))
        .and(path(GMAIL_SEND))
        .and(header("authorization", "Bearer ya29.fresh-token"))
        .respond_with(gmail_sent())
        .expect(2)
        .mount(&peers.google)
        .await;

    let sender =
        zoark_worker::email::OAuthSender::new(app.pool.clone(), app.settings.clone()).unwrap();
    let message = |n: u32| {
        zoark_worker::email::build(
            "Ada Sender <ada.sender@gmail.com>".parse().unwrap(),
            "friend@example.com".parse().unwrap(),
            &zoark_worker::email::Rendered {
                subject: format!("Message {n}"),
                text: "Hello".into(),
                html: "<p>Hello</p>".into(),
            },
            &format!("<message-{n}@zoark>"),
            &[],
        )
        .unwrap()
    };
    let (first, second) = tokio::join!(
        sender.send(admin.organization_id, account, message(1)),
        sender.send(admin.organization_id, account, message(2)),
    );
    assert_eq!(first.unwrap(), "18c2f0a1b2c3d4e5");
    assert_eq!(second.unwrap(), "18c2f0a1b2c3d4e5");
    assert_eq!(requests_to(&peers.google, GOOGLE_TOKEN).await.len(), 1);
    assert_eq!(stored_tokens(&app, account).await.0, "ya29.fresh-token");
}

/// Runs workers until the broadcast has a final status; returns it.
async fn broadcast_finished(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..40 {
        app.drain_jobs(Duration::from_secs(30)).await.unwrap();
        let broadcast = get(app, token, &format!("/api/v1/broadcasts/{id}")).await;
        if !matches!(broadcast["status"].as_str(), Some("sending")) {
            return broadcast;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("broadcast {id} still sending");
}

async fn send_broadcast(app: &TestApp, token: &str, account: Uuid, to: &[&str]) -> String {
    let (status, created) = app
        .call_json(
            Method::POST,
            "/api/v1/broadcasts",
            Some(token),
            Some(
                &json!({"email_account_id": account, "subject": "News", "body_text": "Hello",
                "recipients": to}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let (status, sent) = app
        .call_json(
            Method::POST,
            &format!("/api/v1/broadcasts/{id}/send"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    id
}

#[tokio::test]
async fn broadcasts_go_out_through_gmail_and_fail_visibly_once_the_grant_is_revoked() {
    let peers = Peers::start().await;
    let app = TestApp::builder().peers(&peers).spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let account = connected(
        &app,
        &admin,
        "gmail",
        "ada.sender@gmail.com",
        ("ya29.valid-token", "1//refresh-token"),
        chrono::Duration::minutes(50),
    )
    .await;
    Mock::given(method("POST"))
        .and(path(GMAIL_SEND))
        .and(header("authorization", "Bearer ya29.valid-token"))
        .respond_with(gmail_sent())
        .expect(2)
        .mount(&peers.google)
        .await;

    let id = send_broadcast(
        &app,
        token,
        account,
        &["one@example.com", "two@example.com"],
    )
    .await;
    let done = broadcast_finished(&app, token, &id).await;
    assert_eq!(done["status"], "sent", "{done}");
    let deliveries = get(&app, token, &format!("/api/v1/broadcasts/{id}/deliveries")).await;
    for d in deliveries["items"].as_array().unwrap() {
        assert_eq!(d["provider_message_id"], "18c2f0a1b2c3d4e5", "{d}");
    }
    let sent = requests_to(&peers.google, GMAIL_SEND).await;
    let mime = gmail_raw(&sent[0]);
    assert!(
        mime.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{mime}"
    );
    assert!(
        mime.contains("@gmail.com>"),
        "Message-ID from the delivery id: {mime}"
    );

    // The grant is revoked: the token expires, the refresh is refused, every delivery fails
    // with the reason and the account asks to be reconnected.
    sqlx::query("UPDATE email_accounts SET oauth_expires_at = now() - interval '1 minute'")
        .execute(&app.pool)
        .await
        .unwrap();
    Mock::given(method("POST"))
        .and(path(GOOGLE_TOKEN))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": "invalid_grant", "error_description": "Token has been expired or revoked."
        })))
        .mount(&peers.google)
        .await;
    let id = send_broadcast(
        &app,
        token,
        account,
        &["one@example.com", "two@example.com"],
    )
    .await;
    let done = broadcast_finished(&app, token, &id).await;
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["counts"]["failed"], 2);
    let deliveries = get(&app, token, &format!("/api/v1/broadcasts/{id}/deliveries")).await;
    for d in deliveries["items"].as_array().unwrap() {
        let error = d["last_error"].as_str().unwrap();
        assert!(
            error.contains("needs to be reconnected") || error.contains("`needs_reauth`"),
            "{d}"
        );
        assert_eq!(d["attempts"], 1, "{d}");
    }
    let shown = get(&app, token, &format!("/api/v1/email-accounts/{account}")).await;
    assert_eq!(shown["status"], "needs_reauth");
    assert_eq!(
        requests_to(&peers.google, GMAIL_SEND).await.len(),
        2,
        "nothing more sent"
    );
}
