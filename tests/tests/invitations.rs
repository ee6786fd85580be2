//! The identity emails end to end: password reset and invitations through the API, the email
//! job, the real worker and a real SMTP server on loopback; the links' single-use tokens; the
//! organization's branding on what it sends.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use zoark_core::access::Role;
use zoark_tests::{TestApp, fixtures, smtp::SmtpSink};

async fn app_with_smtp() -> (TestApp, SmtpSink) {
    let smtp = SmtpSink::start().await;
    let mut builder = TestApp::builder();
    for (key, value) in smtp.env() {
        builder = builder.env(key, value);
    }
    (builder.spawn().await, smtp)
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let response = app.call(method, path, token, Some(&body)).await;
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The token of the link to `page` in the only message sent to `to`.
fn token_sent_to(smtp: &SmtpSink, to: &str, page: &str) -> String {
    let messages: Vec<_> = smtp
        .messages()
        .into_iter()
        .filter(|m| m.to.iter().any(|t| t.contains(to)))
        .collect();
    assert_eq!(messages.len(), 1, "one message to {to}");
    let text = messages[0].decoded();
    let marker = format!("{page}?token=");
    let start = text
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker} in {text}"))
        + marker.len();
    text[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

async fn email_jobs(app: &TestApp) -> Vec<Value> {
    sqlx::query_scalar("SELECT args FROM jobs WHERE kind = 'email.send_system' ORDER BY id")
        .fetch_all(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_password_reset_link_works_once_and_signs_the_account_out_everywhere() {
    let (app, smtp) = app_with_smtp().await;
    let ada = fixtures::register(&app, "ada@example.com", "Engines").await;
    let phone = fixtures::login(&app, "ada@example.com", None).await;
    for email in [
        "ada@example.com",
        "nobody@example.com",
        "not an email",
        "ada@example.com",
    ] {
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            json!({"email": email}),
        )
        .await;
        assert_eq!(status, 202, "{email}");
    }
    // Every request is the same job; the worker sends one email: nothing for unknown
    // addresses, and a second request within a minute adds none.
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let jobs = email_jobs(&app).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0]["template"], "password_reset");
    assert!(
        !jobs[0].to_string().contains("token="),
        "the link is sealed in the job"
    );
    let token = token_sent_to(&smtp, "ada@example.com", "/reset-password");
    let message = &smtp.messages()[0];
    assert!(message.data.contains("Subject: Reset your Zoark password"));
    assert!(message.from.contains("no-reply@zoark.test"));
    // No organization sends a password reset: Zoark's own branding.
    assert!(message.decoded().contains("Sent by Zoark."));
    assert!(!message.decoded().contains("via Zoark"));

    // A weak password is refused and the token survives it.
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/password-reset/confirm",
        None,
        json!({"token": token, "new_password": "password1234"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("new_password"))
    );
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/password-reset/confirm",
        None,
        json!({"token": token, "new_password": "lanterns over the harbour 7"}),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/password-reset/confirm",
        None,
        json!({"token": token, "new_password": "another fine harbour 8"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("token"))
    );

    for session in [&ada, &phone] {
        let (status, _) = call(
            &app,
            Method::GET,
            "/api/v1/auth/me",
            Some(&session.access_token),
            Value::Null,
        )
        .await;
        assert_eq!(status, 401, "every session ended");
    }
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        json!({"email": "ada@example.com", "password": fixtures::PASSWORD}),
    )
    .await;
    assert_eq!(status, 401, "the old password is gone");
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/login",
        None,
        json!({"email": "ada@example.com", "password": "lanterns over the harbour 7"}),
    )
    .await;
    assert_eq!(status, 200);
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'auth.password%' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        ["auth.password_reset_requested", "auth.password_reset"]
    );
}

#[tokio::test]
async fn an_invitation_joins_new_and_existing_accounts_with_the_invited_role_once() {
    let (app, smtp) = app_with_smtp().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = Some(admin.access_token.as_str());
    let (status, invitation) = call(
        &app,
        Method::POST,
        "/api/v1/organization/invitations",
        token,
        json!({"email": "grace@example.com", "role": "lead"}),
    )
    .await;
    assert_eq!(status, 201, "{invitation}");
    assert_eq!(invitation["role"], "lead");
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/organization/invitations",
        token,
        json!({"email": "GRACE@example.com", "role": "viewer"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (409, Some("invitation_pending"))
    );
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/organization/invitations",
        token,
        json!({"email": "admin@example.com", "role": "viewer"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (409, Some("already_member"))
    );
    let member = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/organization/invitations",
        Some(&member.access_token),
        json!({"email": "x@example.com", "role": "viewer"}),
    )
    .await;
    assert_eq!(status, 403);
    let manager = fixtures::member(
        &app,
        admin.organization_id,
        "boss@example.com",
        Role::Manager,
    )
    .await;
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/organization/invitations",
        Some(&manager.access_token),
        json!({"email": "x@example.com", "role": "admin"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("role"))
    );

    // Someone who already has an account elsewhere.
    fixtures::register(&app, "bob@example.com", "Bob's Garage").await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/organization/invitations",
        token,
        json!({"email": "bob@example.com", "role": "viewer"}),
    )
    .await;
    assert_eq!(status, 201);

    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let grace_token = token_sent_to(&smtp, "grace@example.com", "/accept-invitation");
    let grace_mail = smtp
        .messages()
        .into_iter()
        .find(|m| m.to.iter().any(|t| t.contains("grace")))
        .unwrap();
    assert!(
        grace_mail.decoded().contains("Engines"),
        "names the organization"
    );

    // A new account: its password must be strong; then it joins as lead.
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/accept-invitation",
        None,
        json!({"token": grace_token, "name": "Grace", "password": "grace1234567"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("password")),
        "{body}"
    );
    let (status, body) = call(&app, Method::POST, "/api/v1/auth/accept-invitation", None,
        json!({"token": grace_token, "name": "Grace Hopper", "password": "compilers and nanoseconds"})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        (body["role"].as_str(), body["organization"]["id"].as_str()),
        (
            Some("lead"),
            Some(admin.organization_id.to_string().as_str())
        )
    );
    let (status, me) = call(
        &app,
        Method::GET,
        "/api/v1/auth/me",
        Some(body["access_token"].as_str().unwrap()),
        Value::Null,
    )
    .await;
    assert_eq!(
        (status.as_u16(), me["user"]["name"].as_str()),
        (200, Some("Grace Hopper"))
    );
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/accept-invitation",
        None,
        json!({"token": grace_token, "name": "Grace", "password": "compilers and nanoseconds"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["errors"][0]["field"].as_str()),
        (422, Some("token")),
        "single use"
    );

    // An existing account proves itself with its own password.
    let bob_token = token_sent_to(&smtp, "bob@example.com", "/accept-invitation");
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/auth/accept-invitation",
        None,
        json!({"token": bob_token, "name": "ignored", "password": "not bob's password"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/auth/accept-invitation",
        None,
        json!({"token": bob_token, "name": "ignored", "password": fixtures::PASSWORD}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["role"].as_str()),
        (201, Some("viewer")),
        "{body}"
    );

    let (_, members) = call(
        &app,
        Method::GET,
        "/api/v1/organization/members",
        token,
        Value::Null,
    )
    .await;
    let roles: Vec<(String, String)> = members["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["email"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        roles.contains(&("grace@example.com".into(), "lead".into())),
        "{roles:?}"
    );
    assert!(
        roles.contains(&("bob@example.com".into(), "viewer".into())),
        "{roles:?}"
    );
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE organization_id = $1 AND action LIKE 'member.%' ORDER BY id")
        .bind(admin.organization_id)
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        actions,
        [
            "member.invited",
            "member.invited",
            "member.joined",
            "member.joined"
        ]
    );
}

#[tokio::test]
async fn an_invitation_carries_the_organizations_name_logo_and_color() {
    let (app, smtp) = app_with_smtp().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = Some(admin.access_token.as_str());
    let (status, body) = call(
        &app,
        Method::PATCH,
        "/api/v1/organization",
        token,
        json!({"branding": {
            "display_name": "Engines & Co",
            "logo_url": "https://cdn.example.com/engines.png",
            "primary_color": "#C0FFEE",
        }}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/organization/invitations",
        token,
        json!({"email": "grace@example.com", "role": "member"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");

    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let mail = messages[0].decoded();
    assert!(mail.contains("Content-Type: text/html"), "{mail}");
    // The HTML part (minijinja escapes `&` and `/` in it).
    assert!(
        mail.contains("Sent by Engines &amp; Co via Zoark."),
        "{mail}"
    );
    assert!(
        mail.contains(
            r#"<img src="https:&#x2f;&#x2f;cdn.example.com&#x2f;engines.png" alt="Engines &amp; Co""#
        ),
        "{mail}"
    );
    assert!(mail.contains("background:#c0ffee"), "{mail}");
    assert!(!mail.contains("#1f6feb"), "{mail}");
    // The text part.
    assert!(mail.contains("Sent by Engines & Co via Zoark."), "{mail}");
}
