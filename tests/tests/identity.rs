//! Identity and access through the real API: registration, sign-in and its throttling,
//! rotating refresh tokens, sessions, tokens that must be refused, roles, the last admin, API
//! keys and the audit log.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;
use zoark_core::access::Role;
use zoark_tests::{
    TestApp,
    fixtures::{self, Account, PASSWORD},
};

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    app.call_json(method, path, token, body.as_ref()).await
}

async fn refresh(app: &TestApp, token: String) -> (StatusCode, Value) {
    call(
        app,
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

async fn me(app: &TestApp, token: &str) -> StatusCode {
    call(app, Method::GET, "/api/v1/auth/me", Some(token), None)
        .await
        .0
}

async fn audit_actions(app: &TestApp, org: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT action FROM audit_log WHERE organization_id = $1 ORDER BY id")
        .bind(org)
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn registration_creates_an_admin_with_working_tokens_and_refuses_bad_input() {
    let app = TestApp::spawn().await;
    let ada = fixtures::register(&app, "ada@example.com", "Analytical Engines").await;
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/v1/auth/me",
        Some(&ada.access_token),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["email"], "ada@example.com");
    assert_eq!(body["organization"]["name"], "Analytical Engines");
    assert_eq!(body["role"], "admin");
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(ada.user_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(hash.starts_with("$argon2id$"));

    // The same address again, in another case.
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/register",
        None,
        Some(json!({"email": "ADA@example.com", "password": PASSWORD, "name": "A", "organization_name": "B"})),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("email_taken"))
    );

    // Every bad field is named at once.
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/register",
        None,
        Some(json!({"email": "not-an-email", "password": "password1234", "name": " ", "organization_name": "Org"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "name", "password"], "{body}");
    for (password, message) in [
        ("short", "at least 12"),
        ("password1234", "too easy to guess"),
    ] {
        let (status, body) = call(
            &app,
            Method::POST,
            "/api/v1/auth/register",
            None,
            Some(json!({"email": "x@example.com", "password": password, "name": "X", "organization_name": "X"})),
        )
        .await;
        assert_eq!(status, 422);
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(message),
            "{body}"
        );
    }
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/register",
        None,
        Some(json!({"email": "x@example.com", "password": PASSWORD, "name": "X"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("organization_name"))
    );
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(users, 1, "nothing was created by the refused requests");
    assert_eq!(
        audit_actions(&app, ada.organization_id).await,
        ["auth.registered"]
    );
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer() {
    let app = TestApp::spawn().await;
    let ada = fixtures::register(&app, "ada@example.com", "Engines").await;
    let attempt = |email: &'static str, password: &'static str| {
        let app = &app;
        async move {
            let started = std::time::Instant::now();
            let (status, body) = call(
                app,
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"email": email, "password": password})),
            )
            .await;
            (status, body["detail"].clone(), started.elapsed())
        }
    };
    let (wrong_status, wrong_detail, wrong_time) =
        attempt("ada@example.com", "not the password at all").await;
    let (unknown_status, unknown_detail, unknown_time) =
        attempt("nobody@example.com", "not the password at all").await;
    assert_eq!(wrong_status, 401);
    assert_eq!(unknown_status, 401);
    assert_eq!(wrong_detail, unknown_detail);
    // Both verify an argon2id hash; neither answers in a fraction of the other's time.
    let ratio = wrong_time.as_secs_f64() / unknown_time.as_secs_f64();
    assert!(
        (0.33..3.0).contains(&ratio),
        "{wrong_time:?} vs {unknown_time:?}"
    );

    let back = fixtures::login(&app, "ADA@example.com", None).await;
    assert_eq!(back.organization_id, ada.organization_id);
    let actions = audit_actions(&app, ada.organization_id).await;
    assert_eq!(
        actions,
        ["auth.registered", "auth.login_failed", "auth.login"]
    );
}

#[tokio::test]
async fn repeated_failures_slow_an_account_down_then_lock_it_with_retry_after() {
    let app = TestApp::spawn().await;
    fixtures::register(&app, "ada@example.com", "Engines").await;
    let login = |password: &'static str| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(&json!({"email": "ada@example.com", "password": password})),
            )
            .await
        }
    };
    for _ in 0..5 {
        assert_eq!(
            login("wrong password 123").await.status(),
            401,
            "free failures"
        );
    }
    // The sixth failure makes the next attempt wait a second, even with the right password.
    assert_eq!(login("wrong password 123").await.status(), 401);
    let waiting = login(PASSWORD).await;
    assert_eq!(waiting.status(), 429);
    let retry_after: u64 = waiting.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    // Failures up to the tenth lock the account for 15 minutes.
    sqlx::query(
        "UPDATE login_throttle SET failures = 9, locked_until = NULL WHERE key LIKE 'email:%'",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(login("wrong password 123").await.status(), 401);
    let locked = login(PASSWORD).await;
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 14 * 60, "{retry_after}");
    // Once the lock passes, the right password works and the account's count starts over.
    sqlx::query("UPDATE login_throttle SET locked_until = now() - interval '1 second'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(login(PASSWORD).await.status(), 200);
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM login_throttle WHERE key LIKE 'email:%'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_session() {
    let app = TestApp::spawn().await;
    let ada = fixtures::register(&app, "ada@example.com", "Engines").await;
    let refresh = |token: String| refresh(&app, token);
    let (status, body) = refresh(ada.refresh_token.clone()).await;
    assert_eq!(status, 200, "{body}");
    let second = Account::from_tokens(&ada.email, &body);
    assert_ne!(second.refresh_token, ada.refresh_token);
    assert_eq!(me(&app, &second.access_token).await, 200);
    let (status, body) = refresh(second.refresh_token.clone()).await;
    assert_eq!(status, 200);
    let third = Account::from_tokens(&ada.email, &body);

    // The first token again: someone copied it. The session dies, with every token in it.
    let (status, _) = refresh(ada.refresh_token.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(refresh(third.refresh_token.clone()).await.0, 401);
    assert_eq!(me(&app, &third.access_token).await, 401);
    assert_eq!(me(&app, &ada.access_token).await, 401);
    let reason: String = sqlx::query_scalar("SELECT revoked_reason FROM sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(reason, "refresh_token_reuse");
    assert!(
        audit_actions(&app, ada.organization_id)
            .await
            .contains(&"auth.refresh_token_reused".to_owned())
    );
    // Other sessions of the same user live on.
    let other = fixtures::login(&app, "ada@example.com", None).await;
    assert_eq!(me(&app, &other.access_token).await, 200);
    assert_eq!(refresh("zr_not-a-token".into()).await.0, 401);
}

#[tokio::test]
async fn forged_expired_and_misdirected_tokens_are_refused() {
    use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
    let app = TestApp::spawn().await;
    let ada = fixtures::register(&app, "ada@example.com", "Engines").await;
    assert_eq!(me(&app, &ada.access_token).await, 200);

    // A refresh token is no access token, and an access token no refresh token.
    assert_eq!(me(&app, &ada.refresh_token).await, 401);
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": ada.access_token})),
    )
    .await;
    assert_eq!(status, 401);

    // Tampered: one character of the signature changed.
    let mut tampered = ada.access_token.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(me(&app, &tampered).await, 401);

    // Claims signed with the real secret but wrong in one way each.
    let secret = "zoark-development-jwt-secret-do-not-use-in-production";
    let session: Uuid = sqlx::query_scalar("SELECT id FROM sessions")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    let claims = |aud: &str, typ: &str, exp: i64, iss: &str| {
        json!({"iss": iss, "aud": aud, "sub": ada.user_id, "org": ada.organization_id,
               "sid": session, "typ": typ, "iat": now - 60, "exp": exp, "jti": Uuid::now_v7()})
    };
    let sign = |claims: Value, key: &str| {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(key.as_bytes()),
        )
        .unwrap()
    };
    let issuer = "http://localhost:8080";
    let good = sign(claims("zoark-api", "access", now + 600, issuer), secret);
    assert_eq!(me(&app, &good).await, 200, "the forgery kit itself works");
    for (case, token) in [
        (
            "expired",
            sign(claims("zoark-api", "access", now - 1, issuer), secret),
        ),
        (
            "wrong audience",
            sign(claims("another-api", "access", now + 600, issuer), secret),
        ),
        (
            "wrong type",
            sign(claims("zoark-api", "refresh", now + 600, issuer), secret),
        ),
        (
            "wrong issuer",
            sign(
                claims("zoark-api", "access", now + 600, "https://evil.example"),
                secret,
            ),
        ),
        (
            "wrong key",
            sign(
                claims("zoark-api", "access", now + 600, issuer),
                "another-secret-of-sufficient-length",
            ),
        ),
    ] {
        assert_eq!(me(&app, &token).await, 401, "{case}");
    }
    let none_alg = format!(
        "{}.{}.",
        base64_url(r#"{"alg":"none","typ":"JWT"}"#),
        base64_url(&claims("zoark-api", "access", now + 600, issuer).to_string())
    );
    assert_eq!(me(&app, &none_alg).await, 401, "alg none");
    let (status, body) = call(&app, Method::GET, "/api/v1/auth/me", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["code"], "unauthorized");
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn logout_and_session_revocation_take_effect_at_once() {
    let app = TestApp::spawn().await;
    let laptop = fixtures::register(&app, "ada@example.com", "Engines").await;
    let phone = fixtures::login(&app, "ada@example.com", None).await;
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/v1/auth/sessions",
        Some(&laptop.access_token),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let sessions = body["items"].as_array().unwrap();
    assert_eq!(sessions.len(), 2);
    let current: Vec<bool> = sessions
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current.iter().filter(|c| **c).count(), 1);
    let phone_session = sessions.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Sign the phone out from the laptop.
    let path = format!("/api/v1/auth/sessions/{phone_session}");
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            &path,
            Some(&laptop.access_token),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(me(&app, &phone.access_token).await, 401);
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            &path,
            Some(&laptop.access_token),
            None
        )
        .await
        .0,
        404
    );
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": phone.refresh_token})),
    )
    .await;
    assert_eq!(status, 401);

    // Sign the laptop out.
    assert_eq!(
        call(
            &app,
            Method::POST,
            "/api/v1/auth/logout",
            Some(&laptop.access_token),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(me(&app, &laptop.access_token).await, 401);
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": laptop.refresh_token})),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn roles_are_enforced_and_the_last_admin_stays() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let org = admin.organization_id;
    let viewer = fixtures::member(&app, org, "viewer@example.com", Role::Viewer).await;
    let member = fixtures::member(&app, org, "member@example.com", Role::Member).await;
    let lead = fixtures::member(&app, org, "lead@example.com", Role::Lead).await;

    // A viewer reads but does not write.
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/api/v1/organization",
            Some(&viewer.access_token),
            None
        )
        .await
        .0,
        200
    );
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/api/v1/organization",
        Some(&viewer.access_token),
        Some(json!({"name": "Mine"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("organization.update"),
        "{body}"
    );
    // A member cannot change roles.
    let path = format!("/api/v1/organization/members/{}", viewer.user_id);
    let (status, _) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&member.access_token),
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, 403);
    // A lead cannot delete the organization.
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            "/api/v1/organization",
            Some(&lead.access_token),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        me(&app, &lead.access_token).await,
        200,
        "the organization still exists"
    );

    // The admin promotes the lead; the change is audited and applies to the lead's next request.
    let path = format!("/api/v1/organization/members/{}", lead.user_id);
    let (status, body) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&admin.access_token),
        Some(json!({"role": "manager"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["role"].as_str()),
        (200, Some("manager")),
        "{body}"
    );
    let (_, me_body) = call(
        &app,
        Method::GET,
        "/api/v1/auth/me",
        Some(&lead.access_token),
        None,
    )
    .await;
    assert_eq!(me_body["role"], "manager");
    let (status, body) = call(
        &app,
        Method::PATCH,
        &path,
        Some(&admin.access_token),
        Some(json!({"role": "owner"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("role")),
        "{body}"
    );

    // The last admin can be neither demoted nor removed.
    let me_path = format!("/api/v1/organization/members/{}", admin.user_id);
    let (status, body) = call(
        &app,
        Method::PATCH,
        &me_path,
        Some(&admin.access_token),
        Some(json!({"role": "member"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (409, Some("last_admin"))
    );
    let (status, body) = call(
        &app,
        Method::DELETE,
        &me_path,
        Some(&admin.access_token),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (409, Some("last_admin"))
    );

    // Removing a member ends their sessions in the organization.
    let path = format!("/api/v1/organization/members/{}", member.user_id);
    assert_eq!(
        call(&app, Method::DELETE, &path, Some(&admin.access_token), None)
            .await
            .0,
        204
    );
    assert_eq!(me(&app, &member.access_token).await, 401);
    assert_eq!(
        call(&app, Method::DELETE, &path, Some(&admin.access_token), None)
            .await
            .0,
        404
    );

    let actions = audit_actions(&app, org).await;
    for expected in ["member.role_changed", "member.removed"] {
        assert!(actions.contains(&expected.to_owned()), "{actions:?}");
    }

    // The admin deletes the organization: everyone's sessions end.
    assert_eq!(
        call(
            &app,
            Method::DELETE,
            "/api/v1/organization",
            Some(&admin.access_token),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(me(&app, &admin.access_token).await, 401);
    assert_eq!(me(&app, &viewer.access_token).await, 401);
}

#[tokio::test]
async fn the_organization_s_branding_and_settings_are_patched_field_by_field() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = Some(admin.access_token.as_str());
    let (status, body) = call(&app, Method::PATCH, "/api/v1/organization", token, Some(json!({
        "branding": {"display_name": "Engines Ltd", "primary_color": "#1A2B3C", "logo_url": "https://cdn.example.com/logo.png"},
        "settings": {"time_zone": "Europe/Paris"}
    }))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["branding"]["primary_color"], "#1a2b3c");
    assert_eq!(body["settings"]["time_zone"], "Europe/Paris");
    assert_eq!(body["name"], "Engines");
    // null clears, absent keeps.
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/api/v1/organization",
        token,
        Some(json!({
            "branding": {"logo_url": null}
        })),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["branding"]["logo_url"], Value::Null);
    assert_eq!(body["branding"]["display_name"], "Engines Ltd");
    let (status, body) = call(&app, Method::PATCH, "/api/v1/organization", token, Some(json!({
        "name": "", "branding": {"primary_color": "red", "logo_url": "javascript:alert(1)"},
        "settings": {"time_zone": "Mars/Olympus", "default_sender_email_account_id": Uuid::now_v7()}
    }))).await;
    assert_eq!(status, 422, "{body}");
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "name",
            "branding.logo_url",
            "branding.primary_color",
            "settings.time_zone"
        ]
    );
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/api/v1/organization",
        token,
        Some(json!({
            "settings": {"default_sender_email_account_id": Uuid::now_v7()}
        })),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("settings.default_sender_email_account_id")),
        "{body}"
    );
    let (status, _) = call(
        &app,
        Method::PATCH,
        "/api/v1/organization",
        token,
        Some(json!({"colour": "#000000"})),
    )
    .await;
    assert_eq!(status, 422, "unknown fields are refused");
    let metadata: Value = sqlx::query_scalar(
        "SELECT metadata FROM audit_log WHERE action = 'organization.updated' ORDER BY id LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        metadata["changed"],
        json!([
            "branding.display_name",
            "branding.logo_url",
            "branding.primary_color",
            "settings.time_zone"
        ])
    );
}

#[tokio::test]
async fn api_keys_are_shown_once_work_at_their_role_and_die_when_revoked() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = Some(admin.access_token.as_str());
    let (status, created) = call(
        &app,
        Method::POST,
        "/api/v1/api-keys",
        token,
        Some(json!({"name": "CI", "role": "viewer"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("zk_") && key.starts_with(created["prefix"].as_str().unwrap()));
    let (status, list) = call(&app, Method::GET, "/api/v1/api-keys", token, None).await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&key), "the key is never listed");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT key_hash FROM api_keys")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);

    // The key reads as a viewer, cannot write, and shows its use.
    let (status, body) = call(&app, Method::GET, "/api/v1/auth/me", Some(&key), None).await;
    assert_eq!(
        (status.as_u16(), body["role"].as_str()),
        (200, Some("viewer"))
    );
    assert_eq!(body["api_key_id"], created["id"]);
    assert_eq!(
        call(
            &app,
            Method::PATCH,
            "/api/v1/organization",
            Some(&key),
            Some(json!({"name": "x"}))
        )
        .await
        .0,
        403
    );
    let (_, list) = call(&app, Method::GET, "/api/v1/api-keys", token, None).await;
    assert!(list["items"][0]["last_used_at"].is_string());

    // A manager cannot mint keys; an expiry in the past is refused.
    let manager =
        fixtures::member(&app, admin.organization_id, "m@example.com", Role::Manager).await;
    assert_eq!(
        call(
            &app,
            Method::POST,
            "/api/v1/api-keys",
            Some(&manager.access_token),
            Some(json!({"name": "x", "role": "viewer"}))
        )
        .await
        .0,
        403
    );
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/api-keys",
        token,
        Some(json!({"name": "old", "role": "viewer", "expires_at": "2020-01-01T00:00:00Z"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("expires_at"))
    );

    // Revoked: refused at once.
    let path = format!("/api/v1/api-keys/{}", created["id"].as_str().unwrap());
    assert_eq!(call(&app, Method::DELETE, &path, token, None).await.0, 204);
    assert_eq!(me(&app, &key).await, 401);
    assert_eq!(
        call(&app, Method::DELETE, &path, token, None).await.0,
        204,
        "idempotent"
    );
    let actions = audit_actions(&app, admin.organization_id).await;
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.starts_with("api_key."))
            .collect::<Vec<_>>(),
        ["api_key.created", "api_key.revoked"]
    );
}

#[tokio::test]
async fn the_audit_log_is_for_admins_filterable_and_paginated() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let member = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    for _ in 0..3 {
        fixtures::login(&app, "admin@example.com", None).await;
    }
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/api/v1/audit-log",
            Some(&member.access_token),
            None
        )
        .await
        .0,
        403
    );
    let token = Some(admin.access_token.as_str());
    let (status, body) = call(
        &app,
        Method::GET,
        "/api/v1/audit-log?action=auth.login&limit=2",
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"].as_array().unwrap().len(), 2);
    assert_eq!(body["items"][0]["actor_user_id"], admin.user_id.to_string());
    let cursor = body["next_cursor"].as_str().unwrap();
    let (_, next) = call(
        &app,
        Method::GET,
        &format!("/api/v1/audit-log?action=auth.login&limit=2&cursor={cursor}"),
        token,
        None,
    )
    .await;
    // Three sign-ins by the admin and one by the member.
    assert_eq!(next["items"].as_array().unwrap().len(), 2);
    assert!(next["next_cursor"].is_null());
    let (_, all_auth) = call(
        &app,
        Method::GET,
        "/api/v1/audit-log?action=auth.",
        token,
        None,
    )
    .await;
    assert_eq!(all_auth["items"].as_array().unwrap().len(), 5, "{all_auth}");
    let (status, _) = call(&app, Method::GET, "/api/v1/audit-log?limit=0", token, None).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_it_is_refreshed() {
    let app = TestApp::builder()
        .env("ZOARK_SESSION_MAX_AGE_SECS", "3600")
        .spawn()
        .await;
    let ada = fixtures::register(&app, "ada@example.com", "Engines").await;
    let refresh = |token: String| refresh(&app, token);
    // Signed in 59 minutes ago: a refresh works, but the session ends at its hour, not a
    // refresh token's thirty days later.
    sqlx::query("UPDATE sessions SET created_at = now() - interval '59 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, body) = refresh(ada.refresh_token.clone()).await;
    assert_eq!(status, 200, "{body}");
    let next = Account::from_tokens(&ada.email, &body);
    let within: bool =
        sqlx::query_scalar("SELECT expires_at <= created_at + interval '1 hour' FROM sessions")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(within, "the refreshed session expires at its absolute end");
    // Past the hour: the refresh is refused (the last access token lasts until the hour).
    sqlx::query("UPDATE sessions SET created_at = now() - interval '61 minutes'")
        .execute(&app.pool)
        .await
        .unwrap();
    let (status, _) = refresh(next.refresh_token.clone()).await;
    assert_eq!(status, 401);
}

/// A sign-in from `address` (the app trusts `X-Forwarded-For`).
async fn login_from(
    app: &TestApp,
    address: &str,
    email: &str,
    password: &str,
) -> reqwest::Response {
    app.client
        .post(format!("{}/api/v1/auth/login", app.address))
        .header("x-forwarded-for", address)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_burst_of_guesses_gets_no_further_than_one_at_a_time_and_cannot_lock_the_owner_out() {
    let app = TestApp::builder()
        .env("ZOARK_BEHIND_PROXY", "true")
        .env("ZOARK_RATE_LIMIT_AUTH_PER_ADDRESS", "1000")
        .spawn()
        .await;
    fixtures::register(&app, "ada@example.com", "Engines").await;
    // Thirty guesses at once from one address, spelling the address differently: each is
    // counted before its password is checked, so past the five free ones they wait.
    let guesses = (0..30).map(|i| {
        let email = if i % 2 == 0 {
            "ada@example.com"
        } else {
            " ADA@Example.COM"
        };
        login_from(&app, "203.0.113.9", email, "wrong password 123")
    });
    let statuses: Vec<u16> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    let checked = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(checked + refused, 30, "{statuses:?}");
    assert!(
        (6..=8).contains(&checked),
        "only the free guesses and the first slowed one are checked: {statuses:?}"
    );
    // The owner, elsewhere, is not locked out by them.
    assert_eq!(
        login_from(&app, "198.51.100.4", "ada@example.com", PASSWORD)
            .await
            .status(),
        200
    );
    // And a right password takes back the attempt counted against its address.
    let address_failures: i32 =
        sqlx::query_scalar("SELECT failures FROM login_throttle WHERE key = 'ip:198.51.100.4'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(address_failures, 0);
}

#[tokio::test]
async fn fifty_concurrent_sign_ins_succeed_on_a_ten_connection_pool() {
    let app = TestApp::builder()
        .env("ZOARK_BEHIND_PROXY", "true")
        .env("ZOARK_RATE_LIMIT_AUTH_PER_ADDRESS", "1000")
        .env("ZOARK_DATABASE_MAX_CONNECTIONS", "10")
        .spawn()
        .await;
    let owner = fixtures::register(&app, "owner@example.com", "Engines").await;
    let hash = zoark_core::crypto::hash_password(PASSWORD).unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let mut emails = vec!["owner@example.com".to_owned()];
    for i in 0..49 {
        let email = format!("user{i}@example.com");
        let user = zoark_core::db::users::insert(&mut conn, &email, "Member", &hash)
            .await
            .unwrap();
        zoark_core::db::memberships::insert(&mut conn, owner.organization_id, user, "member")
            .await
            .unwrap();
        emails.push(email);
    }
    drop(conn);
    let started = std::time::Instant::now();
    let logins = emails.iter().enumerate().map(|(i, email)| {
        let app = &app;
        async move {
            let response = login_from(app, &format!("192.0.2.{}", i + 1), email, PASSWORD).await;
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(logins).await;
    let failed: Vec<&(u16, String)> = answers.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of 50 failed in {:?}: {:?}",
        failed.len(),
        started.elapsed(),
        failed.first()
    );
}

#[tokio::test]
async fn api_keys_follow_their_creators_and_an_organization_may_require_them_to_expire() {
    let app = TestApp::spawn().await;
    let owner = fixtures::register(&app, "owner@example.com", "Engines").await;
    let admin = fixtures::member(&app, owner.organization_id, "ops@example.com", Role::Admin).await;
    let create = |token: String, role: &'static str, expires_at: Option<String>| {
        let app = &app;
        async move {
            call(
                app,
                Method::POST,
                "/api/v1/api-keys",
                Some(&token),
                Some(
                    json!({"name": format!("{role} key"), "role": role, "expires_at": expires_at}),
                ),
            )
            .await
        }
    };
    let (status, first) = create(admin.access_token.clone(), "admin", None).await;
    assert_eq!(status, 201, "{first}");
    let first_key = first["key"].as_str().unwrap().to_owned();
    // A key creating a key: recorded as its parent.
    let (status, second) = create(first_key.clone(), "manager", None).await;
    assert_eq!(status, 201, "{second}");
    let second_key = second["key"].as_str().unwrap().to_owned();
    let keys = |token: String| {
        let app = &app;
        async move {
            let (status, list) =
                call(app, Method::GET, "/api/v1/api-keys", Some(&token), None).await;
            assert_eq!(status, 200, "{list}");
            list["items"].as_array().unwrap().clone()
        }
    };
    let listed = keys(owner.access_token.clone()).await;
    let by_id = |list: &[Value], id: &Value| list.iter().find(|k| k["id"] == *id).unwrap().clone();
    assert_eq!(by_id(&listed, &second["id"])["parent_key_id"], first["id"]);

    // Demoted to lead: both keys come down to lead, and lose the admin's operations.
    let member = format!("/api/v1/organization/members/{}", admin.user_id);
    let (status, _) = call(
        &app,
        Method::PATCH,
        &member,
        Some(&owner.access_token),
        Some(json!({"role": "lead"})),
    )
    .await;
    assert_eq!(status, 200);
    let listed = keys(owner.access_token.clone()).await;
    assert_eq!(by_id(&listed, &first["id"])["role"], "lead");
    assert_eq!(by_id(&listed, &second["id"])["role"], "lead");
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/api-keys",
        Some(&first_key),
        None,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(
        call(
            &app,
            Method::GET,
            "/api/v1/projects",
            Some(&second_key),
            None
        )
        .await
        .0,
        200
    );

    // Removed: every key they made, and the keys those made, stop working at once.
    let (status, _) = call(
        &app,
        Method::DELETE,
        &member,
        Some(&owner.access_token),
        None,
    )
    .await;
    assert_eq!(status, 204);
    for key in [&first_key, &second_key] {
        assert_eq!(
            call(&app, Method::GET, "/api/v1/projects", Some(key), None)
                .await
                .0,
            401
        );
    }
    let listed = keys(owner.access_token.clone()).await;
    for id in [&first["id"], &second["id"]] {
        assert_eq!(by_id(&listed, id)["revoked_reason"], "creator_removed");
    }

    // The organization requires keys to expire within 30 days.
    let (status, org) = call(
        &app,
        Method::PATCH,
        "/api/v1/organization",
        Some(&owner.access_token),
        Some(json!({"settings": {"api_key_max_lifetime_days": 30}})),
    )
    .await;
    assert_eq!(status, 200, "{org}");
    let in_days =
        |days: i64| Some((chrono::Utc::now() + chrono::Duration::days(days)).to_rfc3339());
    for expires_at in [None, in_days(40)] {
        let (status, refused) = create(owner.access_token.clone(), "member", expires_at).await;
        assert_eq!(
            (status.as_u16(), refused["errors"][0]["field"].as_str()),
            (422, Some("expires_at")),
            "{refused}"
        );
    }
    let (status, _) = create(owner.access_token.clone(), "member", in_days(10)).await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn an_address_is_confirmed_by_its_link_before_the_platform_invites_in_its_name() {
    let app = TestApp::spawn().await;
    let (status, registered) = call(
        &app,
        Method::POST,
        "/api/v1/auth/register",
        None,
        Some(
            json!({"email": "Grace@Example.com", "password": PASSWORD, "name": "Grace",
                    "organization_name": "Cobol"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["user"]["email_verified"], false);
    let token = registered["access_token"].as_str().unwrap().to_owned();
    // Everything works, except inviting in the name of an unconfirmed address.
    let invite = || {
        call(
            &app,
            Method::POST,
            "/api/v1/organization/invitations",
            Some(&token),
            Some(json!({"email": "new@example.com", "role": "member"})),
        )
    };
    let (status, refused) = invite().await;
    assert_eq!(
        (status.as_u16(), refused["code"].as_str()),
        (403, Some("email_unverified")),
        "{refused}"
    );
    assert_eq!(
        call(&app, Method::GET, "/api/v1/projects", Some(&token), None)
            .await
            .0,
        200
    );
    // A second link may be asked for; the first still works, once.
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/verify-email/resend",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let links: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'email.send_system'
           AND args->>'template' = 'email_verification'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(links, 2, "one at registration, one on request");
    // The newest link is the one followed below; the first stays valid until it expires.
    let link = fixtures::verification_token(&app, "Grace@Example.com").await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/verify-email",
        None,
        Some(json!({"token": link})),
    )
    .await;
    assert_eq!(status, 204);
    let (_, me) = call(&app, Method::GET, "/api/v1/auth/me", Some(&token), None).await;
    assert_eq!(me["user"]["email_verified"], true, "{me}");
    let (status, created) = invite().await;
    assert_eq!(status, 201, "{created}");
    // A spent or made-up token is refused, naming the field.
    for token in [link.as_str(), "not-a-token"] {
        let (status, again) = call(
            &app,
            Method::POST,
            "/api/v1/auth/verify-email",
            None,
            Some(json!({"token": token})),
        )
        .await;
        assert_eq!(
            (status.as_u16(), again["errors"][0]["field"].as_str()),
            (422, Some("token"))
        );
    }
    let (status, already) = call(
        &app,
        Method::POST,
        "/api/v1/auth/verify-email/resend",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), already["code"].as_str()),
        (409, Some("email_already_verified"))
    );
}

#[tokio::test]
async fn a_password_reset_request_does_the_same_work_for_known_and_unknown_addresses() {
    let app = TestApp::spawn().await;
    fixtures::register(&app, "ada@example.com", "Engines").await;
    let request = |email: &'static str| {
        let app = &app;
        async move {
            let started = std::time::Instant::now();
            let response = app
                .post_json("/api/v1/auth/password-reset", &json!({"email": email}))
                .await;
            assert_eq!(response.status(), 202);
            started.elapsed()
        }
    };
    // Warm up, then measure in pairs (alternating which goes first), so that both of a pair
    // see the same machine; the median of the pairs' ratios is what the addresses cost.
    request("warm@example.com").await;
    let mut ratios = Vec::new();
    for i in 0..25 {
        let (known, unknown) = if i % 2 == 0 {
            let k = request("ada@example.com").await;
            (k, request("nobody@example.com").await)
        } else {
            let u = request("nobody@example.com").await;
            (request("ada@example.com").await, u)
        };
        ratios.push(known.as_secs_f64() / unknown.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let ratio = ratios[ratios.len() / 2];
    assert!(
        (ratio - 1.0).abs() < 0.2,
        "known / unknown = {ratio:.3} (pairs: {ratios:.3?})"
    );
    // Each request is one job; the worker sends a link to the known address only.
    let jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'auth.password_reset'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(jobs, 51);
    app.drain_jobs(std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let sent: Vec<String> = sqlx::query_scalar(
        "SELECT args->>'to' FROM jobs WHERE kind = 'email.send_system'
           AND args->>'template' = 'password_reset'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(sent, ["ada@example.com"], "one link, at most one a minute");
}
