//! The dashboard over plain HTTP: the cookie and its attributes, security headers, the walk over
//! every route (signed out, without the CSRF token, with the wrong role, another organization's
//! job, a non-operator on the platform pages), revocation through the API, and the event stream
//! authenticated by the cookie with its Origin check.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use reqwest::{StatusCode, header};
use uuid::Uuid;
use zoark_core::access::Role;
use zoark_jobs::{Opts, diag::Record, enqueue};
use zoark_tests::{TestApp, cookies, fixtures};

/// A browser session: its cookie header and its CSRF token.
struct Session {
    cookie: String,
    csrf: String,
}

fn csrf_of(html: &str) -> String {
    cookies::csrf_of(html).unwrap_or_else(|| panic!("no csrf field in {html}"))
}

fn set_cookie(response: &reqwest::Response, name: &str) -> (String, String) {
    cookies::set_cookie(response, name).unwrap_or_else(|| panic!("no {name} cookie set"))
}

/// Fetches the sign-in form and posts it (with its nonce cookie and token).
async fn post_sign_in(app: &TestApp, email: &str, password: &str) -> reqwest::Response {
    let form = app.get("/dashboard/sign-in").await;
    assert_eq!(form.status(), 200);
    let (nonce, _) = set_cookie(&form, "zoark_sign_in");
    let csrf = csrf_of(&form.text().await.unwrap());
    app.client
        .post(app.url("/dashboard/sign-in"))
        .header(header::COOKIE, &nonce)
        .form(&[("email", email), ("password", password), ("csrf", &csrf)])
        .send()
        .await
        .unwrap()
}

async fn sign_in(app: &TestApp, email: &str) -> Session {
    let response = post_sign_in(app, email, fixtures::PASSWORD).await;
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert_eq!(response.headers()[header::LOCATION], "/dashboard");
    let (cookie, attributes) = set_cookie(&response, "zoark_session");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }
    assert!(
        !attributes.contains("Secure"),
        "not Secure over plain http in development"
    );
    let page = get(app, "/dashboard", Some(&cookie)).await;
    assert_eq!(page.status(), 200);
    let csrf = csrf_of(&page.text().await.unwrap());
    Session { cookie, csrf }
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    req.send().await.unwrap()
}

async fn post(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
    csrf: Option<&str>,
) -> reqwest::Response {
    let mut req = app.client.post(app.url(path));
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    let mut form = vec![("action", "cancel")];
    if let Some(csrf) = csrf {
        form.push(("csrf", csrf));
    }
    req.form(&form).send().await.unwrap()
}

fn is_sign_in_redirect(response: &reqwest::Response) -> bool {
    response.status() == StatusCode::SEE_OTHER
        && response.headers()[header::LOCATION] == "/dashboard/sign-in"
}

async fn job_of(app: &TestApp, org: Uuid) -> Uuid {
    let mut conn = app.pool.acquire().await.unwrap();
    enqueue(&mut conn, &Record::default(), Opts::organization(org))
        .await
        .unwrap()
        .id
}

#[tokio::test]
async fn every_dashboard_route_checks_the_session_the_token_the_role_and_the_tenant() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@a.example", "A").await;
    let other = fixtures::register(&app, "admin@b.example", "B").await;
    fixtures::member(
        &app,
        admin.organization_id,
        "viewer@a.example",
        Role::Viewer,
    )
    .await;
    let ours = job_of(&app, admin.organization_id).await;
    let theirs = job_of(&app, other.organization_id).await;
    let session = sign_in(&app, "admin@a.example").await;
    let viewer = sign_in(&app, "viewer@a.example").await;

    let pages = [
        "/dashboard".to_owned(),
        "/dashboard/jobs".to_owned(),
        "/dashboard/jobs?state=available&queue=diagnostics&since=1h&q=x".to_owned(),
        format!("/dashboard/jobs/{ours}"),
        "/dashboard/queues".to_owned(),
        "/dashboard/schedules".to_owned(),
        "/dashboard/agent-runs".to_owned(),
        "/dashboard/broadcasts".to_owned(),
        "/dashboard/audit-log".to_owned(),
        "/dashboard/brand.css".to_owned(),
    ];
    for page in &pages {
        let anonymous = get(&app, page, None).await;
        assert!(is_sign_in_redirect(&anonymous), "{page} signed out");
        let response = get(&app, page, Some(&session.cookie)).await;
        assert_eq!(response.status(), 200, "{page}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
        assert_eq!(response.headers()["x-frame-options"], "DENY");
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
    let ours_page = get(
        &app,
        &format!("/dashboard/jobs/{ours}"),
        Some(&session.cookie),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(ours_page.contains(&ours.to_string()));

    // Another organization's job is not found, to read or to act on.
    let response = get(
        &app,
        &format!("/dashboard/jobs/{theirs}"),
        Some(&session.cookie),
    )
    .await;
    assert_eq!(response.status(), 404);
    let html = response.text().await.unwrap();
    assert!(
        !html.contains("diagnostics.record"),
        "nothing of the job leaks"
    );
    let response = post(
        &app,
        &format!("/dashboard/jobs/{theirs}/cancel"),
        Some(&session.cookie),
        Some(&session.csrf),
    )
    .await;
    assert_eq!(response.status(), 404);

    // Every action: signed out → sign in; no token, another session's token → 403; a viewer → 403.
    let actions = [
        format!("/dashboard/jobs/{ours}/cancel"),
        format!("/dashboard/jobs/{ours}/retry"),
        "/dashboard/jobs/bulk".to_owned(),
        "/dashboard/queues/diagnostics/pause".to_owned(),
        "/dashboard/sign-out".to_owned(),
    ];
    for action in &actions {
        assert!(
            is_sign_in_redirect(&post(&app, action, None, Some(&session.csrf)).await),
            "{action} signed out"
        );
        let response = post(&app, action, Some(&session.cookie), None).await;
        assert_eq!(response.status(), 403, "{action} without a token");
        let response = post(&app, action, Some(&session.cookie), Some(&viewer.csrf)).await;
        assert_eq!(
            response.status(),
            403,
            "{action} with another session's token"
        );
        if action != "/dashboard/sign-out" {
            let response = post(&app, action, Some(&viewer.cookie), Some(&viewer.csrf)).await;
            assert_eq!(response.status(), 403, "{action} as a viewer");
        }
    }
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
        .bind(ours)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "available", "no refused action changed the job");

    // The platform pages are the operators' only.
    for page in [
        "/dashboard/platform",
        "/dashboard/platform/jobs",
        "/dashboard/platform/queues",
        "/dashboard/platform/backups",
    ] {
        assert_eq!(
            get(&app, page, Some(&session.cookie)).await.status(),
            403,
            "{page}"
        );
    }
    let response = post(
        &app,
        "/dashboard/platform/queues/diagnostics/pause",
        Some(&session.cookie),
        Some(&session.csrf),
    )
    .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        post(
            &app,
            &format!("/dashboard/platform/jobs/{theirs}/cancel"),
            Some(&session.cookie),
            Some(&session.csrf),
        )
        .await
        .status(),
        403
    );

    // The sign-in form refuses a post without its nonce.
    let response = app
        .client
        .post(app.url("/dashboard/sign-in"))
        .form(&[
            ("email", "admin@a.example"),
            ("password", fixtures::PASSWORD),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // A wrong password is the same 401 page for any account.
    let form = app.get("/dashboard/sign-in").await;
    let (nonce, _) = set_cookie(&form, "zoark_sign_in");
    let csrf = csrf_of(&form.text().await.unwrap());
    let response = app
        .client
        .post(app.url("/dashboard/sign-in"))
        .header(header::COOKIE, &nonce)
        .form(&[
            ("email", "admin@a.example"),
            ("password", "not it"),
            ("csrf", &csrf),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(response.text().await.unwrap().contains("not right"));
    app.stop().await;
}

#[tokio::test]
async fn a_browser_session_revoked_through_the_api_ends_at_once_and_the_stream_checks_origin() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@a.example", "A").await;
    let session = sign_in(&app, "admin@a.example").await;

    // The event stream takes the cookie from this origin only.
    let socket = |origin: Option<String>| {
        let app = &app;
        let cookie = session.cookie.clone();
        async move {
            use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
            let url = app.url("/api/v1/events").replace("http://", "ws://");
            let mut req = url.into_client_request().unwrap();
            req.headers_mut()
                .insert("cookie", HeaderValue::from_str(&cookie).unwrap());
            if let Some(origin) = origin {
                req.headers_mut()
                    .insert("origin", HeaderValue::from_str(&origin).unwrap());
            }
            tokio_tungstenite::connect_async(req).await.map(drop)
        }
    };
    socket(Some(app.address.clone())).await.unwrap();
    let watched: i64 = sqlx::query_scalar("SELECT count(*) FROM job_event_watchers")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        watched, 0,
        "no operator: the engine sends no platform job summaries"
    );
    for origin in [Some("http://evil.example".to_owned()), None] {
        match socket(origin.clone()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{origin:?}");
            }
            other => panic!("{origin:?}: {other:?}"),
        }
    }

    // The browser session is one of the user's sessions; revoking it ends the cookie.
    let sessions: serde_json::Value = app
        .client
        .get(app.url("/api/v1/auth/sessions"))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = sessions["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let browser_session: Uuid = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE cookie_sha256 IS NOT NULL AND user_id = $1",
    )
    .bind(admin.user_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(listed.len(), 2, "the API session and the browser session");
    assert!(listed.contains(&browser_session.to_string().as_str()));
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/auth/sessions/{browser_session}")))
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(is_sign_in_redirect(
        &get(&app, "/dashboard", Some(&session.cookie)).await
    ));
    assert!(socket(Some(app.address.clone())).await.is_err());
    app.stop().await;
}

#[tokio::test]
async fn the_sign_in_form_shares_the_address_budget_of_the_api_sign_in_routes() {
    let app = TestApp::builder()
        .env("ZOARK_RATE_LIMIT_AUTH_PER_ADDRESS", "3")
        .spawn()
        .await;
    let user = fixtures::register(&app, "ops@example.com", "Acme").await;
    // The registration spent one of the address's three; two form posts remain.
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let response = post_sign_in(&app, &user.email, "not the password").await;
        let status = response.status();
        let body = response.text().await.unwrap();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(body.contains("Too many attempts"), "{body}");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    // And the API's sign-in from the same address is refused too.
    let api = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .json(&serde_json::json!({"email": user.email, "password": fixtures::PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn an_exhausted_connection_pool_is_503_with_retry_after_on_pages_and_api_never_500() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@a.example", "A").await;
    let session = sign_in(&app, "admin@a.example").await;
    // Another client holds the organizations table: every request of the API that reads it
    // keeps its connection waiting, and the pool (5) runs dry.
    let mut blocker = app.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE organizations IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let page = |path: &'static str| {
        let (app, cookie) = (&app, session.cookie.clone());
        async move { get(app, path, Some(&cookie)).await }
    };
    let api = |path: &'static str| {
        let (app, token) = (&app, admin.access_token.clone());
        async move {
            app.client
                .get(app.url(path))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
        }
    };
    let requests = (0..6)
        .map(|_| futures_util::future::Either::Left(page("/dashboard")))
        .chain((0..6).map(|_| futures_util::future::Either::Right(api("/api/v1/organization"))));
    let release = async {
        // Longer than the acquire timeout (2 s), then let the waiting ones finish.
        tokio::time::sleep(std::time::Duration::from_secs(4)).await;
        blocker.rollback().await.unwrap();
    };
    let (responses, ()) = tokio::join!(futures_util::future::join_all(requests), release);
    let answers: Vec<(u16, bool, String)> = responses
        .iter()
        .map(|r| {
            let retry = r.headers().contains_key("retry-after");
            (r.status().as_u16(), retry, r.url().path().to_owned())
        })
        .collect();
    assert!(
        answers
            .iter()
            .all(|(status, _, _)| matches!(status, 200 | 503)),
        "{answers:?}"
    );
    let busy: Vec<_> = answers
        .iter()
        .filter(|(status, _, _)| *status == 503)
        .collect();
    assert!(!busy.is_empty(), "the pool ran dry: {answers:?}");
    assert!(busy.iter().all(|(_, retry, _)| *retry), "{answers:?}");
    assert!(
        busy.iter()
            .any(|(_, _, path)| path.starts_with("/dashboard"))
            && busy.iter().any(|(_, _, path)| path.starts_with("/api")),
        "{answers:?}"
    );
}
