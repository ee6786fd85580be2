//! The job status dashboard in a real headless Chromium (WebDriver): sign in, filter, open a
//! discarded job, retry it and watch it complete without a reload, pause a queue, bulk-cancel a
//! filter, sign out; a viewer sees no actions; forged posts are refused; axe-core finds no
//! serious violation on any page. Screenshots go to `target/dashboard/`.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::access::Role;
use zoark_jobs::{Job, Opts, enqueue};
use zoark_tests::{
    TestApp,
    browser::{Browser, PATIENCE},
    engine_config, fixtures,
};
use zoark_worker::engine::{JobContext, Registry};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    customer: String,
}

impl Job for Step {
    const NAME: &'static str = "dashboard.step";
    const QUEUE: &'static str = "dash";
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Export {
    customer: String,
}

impl Job for Export {
    const NAME: &'static str = "dashboard.export";
    const QUEUE: &'static str = "exports";
}

async fn push<J: Job>(app: &TestApp, job: &J, org: Uuid) -> Uuid {
    let mut conn = app.pool.acquire().await.unwrap();
    enqueue(&mut conn, job, Opts::organization(org))
        .await
        .unwrap()
        .id
}

async fn state_of(app: &TestApp, id: Uuid) -> String {
    fixtures::job_state(&app.pool, id).await
}

/// Marks a job discarded after one failed attempt, as the engine would.
async fn discard(app: &TestApp, id: Uuid) {
    sqlx::query(
        "UPDATE jobs SET state = 'discarded', attempt = 1, max_attempts = 1, attempted_at = now(),
                finalized_at = now(),
                errors = '[{\"attempt\": 1, \"at\": \"2026-12-04T10:00:00Z\", \"kind\": \"fatal\",
                            \"error\": \"the mail server refused the recipient\"}]'
         WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn sign_in(browser: &Browser, app: &TestApp, email: &str) {
    browser.open(&app.url("/dashboard")).await;
    browser.find("#email").await;
    assert!(
        browser
            .client
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/dashboard/sign-in"),
        "signed out, the dashboard sends you to sign in"
    );
    browser.fill("#email", email).await;
    browser.fill("#password", fixtures::PASSWORD).await;
    browser.follow("#sign-in").await;
    browser.find("h1").await;
    assert_eq!(
        browser.client.current_url().await.unwrap().path(),
        "/dashboard"
    );
}

/// A POST from script in the page (so with the session cookie) but without the form's token.
async fn forged_post(browser: &Browser, path: &str) -> i64 {
    let status = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], { method: 'POST', credentials: 'same-origin',
                   headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
                   body: 'csrf=' })
               .then(r => done(r.status)).catch(e => done(String(e)));",
            vec![serde_json::json!(path)],
        )
        .await
        .unwrap();
    status
        .as_i64()
        .unwrap_or_else(|| panic!("fetch failed: {status}"))
}

#[tokio::test]
async fn an_admin_signs_in_filters_retries_live_pauses_bulk_cancels_and_signs_out() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "ops@example.com", "Acme Logistics").await;
    let org = admin.organization_id;
    let failed = push(
        &app,
        &Step {
            customer: "c-1001".into(),
        },
        org,
    )
    .await;
    discard(&app, failed).await;
    let mut exports = Vec::new();
    for i in 0..3 {
        exports.push(
            push(
                &app,
                &Export {
                    customer: format!("c-20{i}"),
                },
                org,
            )
            .await,
        );
    }
    let registry = Registry::new()
        .register(|_: Step, _: JobContext| async { Ok(()) })
        .register(|_: Export, _: JobContext| async { Ok(()) });
    let engine = app.start_engine(engine_config(&[("dash", 2)]), registry);

    let browser = Browser::start().await;
    sign_in(&browser, &app, &admin.email).await;
    browser.wait_for("[data-queue='dash']", PATIENCE).await;
    // The charts count the discarded job; a job that completes moves the counters and the
    // charts without a reload.
    browser
        .wait_for(
            "figure.chart[data-completed='0'][data-failed='1']",
            PATIENCE,
        )
        .await;
    browser
        .wait_for("body[data-connected='true']", PATIENCE)
        .await;
    browser.eval("window.zoarkMarker = 'overview';").await;
    push(
        &app,
        &Step {
            customer: "c-1000".into(),
        },
        org,
    )
    .await;
    browser
        .wait_for(
            "figure.chart[data-completed='1'][data-failed='1']",
            PATIENCE,
        )
        .await;
    browser
        .wait_for("[data-queue='dash'] [data-count='completed'] a", PATIENCE)
        .await;
    assert_eq!(
        browser
            .find("[data-queue='dash'] [data-count='completed'] a")
            .await
            .text()
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(
        browser.eval("return window.zoarkMarker || null;").await,
        "overview"
    );
    assert!(browser.has("figure.chart svg rect.bar-completed").await);
    browser.screenshot("overview").await;
    browser.assert_accessible("overview").await;

    // Filter: discarded jobs.
    browser.follow("nav a[href='/dashboard/jobs']").await;
    browser.find("#f-state").await;
    browser.assert_accessible("jobs").await;
    browser
        .find("#f-state")
        .await
        .select_by_value("discarded")
        .await
        .unwrap();
    browser.follow("#apply-filters").await;
    browser
        .find(&format!(
            "tr[data-job-id='{failed}'][data-state='discarded']"
        ))
        .await;
    assert!(
        !browser.has("tr[data-state='available']").await,
        "the filter shows discarded jobs only"
    );
    browser.screenshot("jobs").await;

    // Open the discarded job: its error, then retry it and watch it complete, no reload.
    browser
        .follow(&format!("tr[data-job-id='{failed}'] a"))
        .await;
    browser.find("#retry").await;
    let page = browser.client.source().await.unwrap();
    assert!(page.contains("the mail server refused the recipient"));
    assert!(page.contains("c-1001"), "args are shown");
    browser.assert_accessible("job").await;
    browser.follow("#retry").await;
    browser.find("#job-state").await;
    browser
        .wait_for("body[data-connected='true']", PATIENCE)
        .await;
    browser.eval("window.zoarkMarker = 'same page';").await;
    browser
        .wait_for("#job-state[data-state='completed']", PATIENCE)
        .await;
    assert_eq!(
        browser.eval("return window.zoarkMarker || null;").await,
        "same page",
        "the job completed on the page without a reload"
    );
    assert_eq!(state_of(&app, failed).await, "completed");
    // Both attempts: the failed one with its error, the one that completed with its duration.
    browser.wait_for("tr[data-attempt='2']", PATIENCE).await;
    let second = browser
        .find("tr[data-attempt='2']")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        second.contains("completed") && second.contains(" s"),
        "{second}"
    );
    browser.screenshot("job").await;

    // Pause the `dash` queue: a new job of it waits.
    browser.follow("nav a[href='/dashboard/queues']").await;
    browser.follow("#pause-dash").await;
    browser.find("#resume-dash").await;
    browser.assert_accessible("queues").await;
    browser.screenshot("queues").await;
    let waiting = push(
        &app,
        &Step {
            customer: "c-1002".into(),
        },
        org,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        state_of(&app, waiting).await,
        "available",
        "no job of a paused queue starts"
    );

    // Bulk-cancel one ticked job of the `exports` queue, then every other job of the queue: a
    // confirmation with the count each time, then done.
    browser
        .open(&app.url("/dashboard/jobs?queue=exports"))
        .await;
    browser.click(&format!("#select-{}", exports[0])).await;
    browser.follow("#bulk-cancel").await;
    let count = browser.find("#bulk-count").await.text().await.unwrap();
    assert!(count.starts_with("1 job will be cancelled"), "{count}");
    browser.follow("#confirm").await;
    let done = browser.find("#bulk-count").await.text().await.unwrap();
    assert!(done.starts_with("1 job cancelled"), "{done}");
    assert_eq!(state_of(&app, exports[0]).await, "cancelled");
    assert_eq!(state_of(&app, exports[1]).await, "available");
    browser
        .open(&app.url("/dashboard/jobs?queue=exports"))
        .await;
    browser.follow("#bulk-cancel").await;
    let count = browser.find("#bulk-count").await.text().await.unwrap();
    assert!(count.starts_with("2 jobs will be cancelled"), "{count}");
    browser.assert_accessible("bulk confirmation").await;
    browser.follow("#confirm").await;
    let done = browser.find("#bulk-count").await.text().await.unwrap();
    assert!(done.starts_with("2 jobs cancelled"), "{done}");
    for id in &exports {
        assert_eq!(state_of(&app, *id).await, "cancelled");
    }
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE organization_id = $1 AND action = 'jobs.bulk_cancelled'",
    )
    .bind(org)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audited, 2,
        "the confirmed actions are audited, the counts are not"
    );

    // A forged POST (no CSRF token) is refused and changes nothing.
    assert_eq!(
        forged_post(&browser, "/dashboard/queues/dash/resume").await,
        403
    );
    assert!(
        admin_paused(&app, org, "dash").await,
        "the forged resume changed nothing"
    );

    // Agent runs: a queued run, cancelled through the API, changes on its page without a reload.
    let api = |method: reqwest::Method, path: &str, body: serde_json::Value| {
        app.client
            .request(method, app.url(path))
            .bearer_auth(&admin.access_token)
            .json(&body)
            .send()
    };
    let agent: serde_json::Value = api(
        reqwest::Method::POST,
        "/api/v1/agents",
        serde_json::json!({"name": "Board keeper", "goal": "Keep the board tidy.",
                           "instructions": "Report stuck tasks.", "tools": [], "config": {}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let response = api(
        reqwest::Method::POST,
        &format!("/api/v1/agents/{}/runs", agent["id"].as_str().unwrap()),
        serde_json::json!({"input": {}}),
    )
    .await
    .unwrap();
    assert_eq!(response.status(), 201);
    let run: serde_json::Value = response.json().await.unwrap();
    let run = run["id"].as_str().unwrap().to_owned();
    browser.follow("nav a[href='/dashboard/agent-runs']").await;
    browser.find(&format!("tr[data-run-id='{run}']")).await;
    browser.assert_accessible("agent runs").await;
    browser.screenshot("agent-runs").await;
    browser.follow(&format!("tr[data-run-id='{run}'] a")).await;
    browser.find("#run-status[data-status='queued']").await;
    browser
        .wait_for("body[data-connected='true']", PATIENCE)
        .await;
    browser.eval("window.zoarkMarker = 'run page';").await;
    let response = api(
        reqwest::Method::POST,
        &format!("/api/v1/agent-runs/{run}/cancel"),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    browser
        .wait_for("#run-status[data-status='cancelled']", PATIENCE)
        .await;
    assert_eq!(
        browser.eval("return window.zoarkMarker || null;").await,
        "run page"
    );
    browser.assert_accessible("agent run").await;

    // Schedules (the organization's seeded agent schedules), broadcasts and the audit log.
    browser.follow("nav a[href='/dashboard/schedules']").await;
    browser.find("tr[data-schedule]").await;
    browser.assert_accessible("schedules").await;
    browser.screenshot("schedules").await;
    browser.follow("nav a[href='/dashboard/broadcasts']").await;
    browser.find("h1").await;
    browser.assert_accessible("broadcasts").await;
    browser.follow("nav a[href='/dashboard/audit-log']").await;
    browser.find("tr[data-audit='jobs.bulk_cancelled']").await;
    browser.assert_accessible("audit log").await;
    browser.screenshot("audit-log").await;

    // Sign out: the session ends for the dashboard and the API alike.
    browser.follow("#sign-out").await;
    browser.find("#email").await;
    browser.open(&app.url("/dashboard/jobs")).await;
    browser.find("#email").await;
    let revoked: bool = sqlx::query_scalar(
        "SELECT revoked_at IS NOT NULL FROM sessions WHERE cookie_sha256 IS NOT NULL AND user_id = $1",
    )
    .bind(admin.user_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(revoked);
    browser.assert_accessible("sign-in").await;
    browser.screenshot("sign-in").await;

    browser.close().await;
    engine.stop().await;
    app.stop().await;
}

async fn admin_paused(app: &TestApp, org: Uuid, queue: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM queue_pauses WHERE organization_id = $1 AND queue = $2)",
    )
    .bind(org)
    .bind(queue)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_viewer_sees_no_actions_and_cannot_post_them() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "owner@example.com", "Acme").await;
    let org = admin.organization_id;
    let viewer = fixtures::member(&app, org, "viewer@example.com", Role::Viewer).await;
    let failed = push(
        &app,
        &Step {
            customer: "c-1".into(),
        },
        org,
    )
    .await;
    discard(&app, failed).await;

    let browser = Browser::start().await;
    sign_in(&browser, &app, &viewer.email).await;
    browser.open(&app.url("/dashboard/jobs")).await;
    browser.find(&format!("tr[data-job-id='{failed}']")).await;
    assert!(!browser.has("#bulk-retry, #bulk-cancel").await);
    browser
        .open(&app.url(&format!("/dashboard/jobs/{failed}")))
        .await;
    browser.find("#job-state").await;
    assert!(!browser.has("#retry, #cancel, #run-now").await);
    // Nor the payload's values and the error texts (recipients, provider replies).
    let page = browser.client.source().await.unwrap();
    assert!(
        !page.contains("c-1") && !page.contains("the mail server refused the recipient"),
        "a viewer sees the payload or the error"
    );
    assert!(page.contains("[redacted]"));
    browser.open(&app.url("/dashboard/queues")).await;
    browser.find("[data-queue='dash']").await;
    assert!(!browser.has("button[id^='pause-']").await);

    // Posting the action anyway (with the session's token, taken from the sign-out form): 403.
    let csrf = browser
        .eval("return document.querySelector('input[name=csrf]').value;")
        .await;
    let status = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch(arguments[0], { method: 'POST', credentials: 'same-origin',
                   headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
                   body: 'csrf=' + encodeURIComponent(arguments[1]) })
               .then(r => done(r.status));",
            vec![
                serde_json::json!(format!("/dashboard/jobs/{failed}/retry")),
                csrf,
            ],
        )
        .await
        .unwrap();
    assert_eq!(status, 403, "a viewer may not retry");
    assert_eq!(state_of(&app, failed).await, "discarded");

    browser.close().await;
    app.stop().await;
}

#[tokio::test]
async fn an_operator_sees_every_organization_and_platform_jobs_live_and_pauses_for_everyone() {
    let app = TestApp::builder()
        .env("ZOARK_OPERATORS", "Root@Example.com")
        .spawn()
        .await;
    let operator = fixtures::register(&app, "root@example.com", "Zoark Ops").await;
    let tenant = fixtures::register(&app, "admin@tenant.example", "Tenant").await;
    let theirs = push(
        &app,
        &Step {
            customer: "t-1".into(),
        },
        tenant.organization_id,
    )
    .await;
    let platform = {
        let mut conn = app.pool.acquire().await.unwrap();
        enqueue(
            &mut conn,
            &Step {
                customer: "maintenance".into(),
            },
            Opts::platform(),
        )
        .await
        .unwrap()
        .id
    };
    sqlx::query("UPDATE jobs SET state = 'discarded', finalized_at = now() WHERE id = $1")
        .bind(platform)
        .execute(&app.pool)
        .await
        .unwrap();
    let registry = Registry::new().register(|_: Step, _: JobContext| async { Ok(()) });
    let engine = app.start_engine(engine_config(&[("dash", 2)]), registry);

    // A tenant's admin is no operator, and sees no other organization's job.
    let browser = Browser::start().await;
    sign_in(&browser, &app, &tenant.email).await;
    assert!(!browser.has("nav a[href='/dashboard/platform']").await);
    browser.open(&app.url("/dashboard/platform")).await;
    assert!(
        browser
            .find("h1")
            .await
            .text()
            .await
            .unwrap()
            .starts_with("403")
    );
    browser.follow("a[href='/dashboard']").await;
    browser.follow("#sign-out").await;
    browser.find("#email").await;

    sign_in(&browser, &app, &operator.email).await;
    browser
        .open(&app.url(&format!("/dashboard/jobs/{theirs}")))
        .await;
    assert!(
        browser
            .find("h1")
            .await
            .text()
            .await
            .unwrap()
            .starts_with("404"),
        "in their organization's pages, operators see their organization only"
    );
    browser.open(&app.url("/dashboard")).await;
    browser.follow("nav a[href='/dashboard/platform']").await;
    browser.wait_for("tr[data-worker]", PATIENCE).await;
    browser.assert_accessible("platform overview").await;
    browser.screenshot("platform").await;
    browser.open(&app.url("/dashboard/platform/jobs")).await;
    browser.find(&format!("tr[data-job-id='{theirs}']")).await;
    browser.find(&format!("tr[data-job-id='{platform}']")).await;
    browser
        .open(&app.url("/dashboard/platform/jobs?org=platform"))
        .await;
    browser.find(&format!("tr[data-job-id='{platform}']")).await;
    assert!(!browser.has(&format!("tr[data-job-id='{theirs}']")).await);

    // Retry the platform job and see it complete live.
    browser
        .follow(&format!("tr[data-job-id='{platform}'] a"))
        .await;
    browser.follow("#retry").await;
    browser
        .wait_for("body[data-connected='true']", PATIENCE)
        .await;
    let watched: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM job_event_watchers WHERE channel = 'platform' AND until > now())",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        watched,
        "an operator's open stream asks for platform job events"
    );
    browser.eval("window.zoarkMarker = 'same page';").await;
    browser
        .wait_for("#job-state[data-state='completed']", PATIENCE)
        .await;
    assert_eq!(
        browser.eval("return window.zoarkMarker || null;").await,
        "same page"
    );

    // The platform's backups (one that failed, with its error).
    sqlx::query(
        "INSERT INTO backups (kind, status, destination, error, finished_at)
         VALUES ('scheduled', 'failed', 'file:///var/backups', 'pg_dump: connection refused', now())",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    browser.open(&app.url("/dashboard/platform")).await;
    browser
        .follow("a[href='/dashboard/platform/backups']")
        .await;
    let failed_backup = browser
        .find("tr[data-status='failed']")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        failed_backup.contains("pg_dump: connection refused"),
        "{failed_backup}"
    );
    browser.assert_accessible("backups").await;
    browser.screenshot("backups").await;

    // Pause `dash` for everyone: the tenant's new job waits.
    browser.open(&app.url("/dashboard/platform/queues")).await;
    browser.follow("#pause-dash").await;
    browser.find("#resume-dash").await;
    let global: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM queue_pauses WHERE organization_id IS NULL AND queue = 'dash')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(global);
    let waiting = push(
        &app,
        &Step {
            customer: "t-2".into(),
        },
        tenant.organization_id,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(state_of(&app, waiting).await, "available");

    browser.close().await;
    engine.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn swagger_ui_renders_under_its_content_security_policy() {
    let app = TestApp::spawn().await;
    let browser = Browser::start().await;
    browser.open(&app.url("/docs/")).await;
    // Its inline script ran (the policy allows it), fetched the spec from this origin and drew
    // the operations.
    browser
        .wait_for(".swagger-ui .opblock", Duration::from_secs(20))
        .await;
    let title = browser
        .eval("return document.querySelector('.swagger-ui .info .title').innerText;")
        .await;
    assert!(
        title.as_str().unwrap_or_default().contains("Zoark API"),
        "{title}"
    );
    browser.close().await;
}
