//! Agents and their schedules: built-in agents seeded with the organization; schedules created
//! (idempotent), validated (crontab expression, IANA zone, the organization's agent), listed,
//! read with ETag, changed (next run recomputed from now), deleted (audited); run by the
//! scheduler once per tick; permissions and isolation.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use chrono::{DateTime, Datelike as _, Timelike as _, Utc, Weekday};
use reqwest::Method;
use serde_json::{Value, json};
use zoark_core::access::Role;
use zoark_tests::call;
use zoark_tests::{TestApp, field_names, fixtures};

async fn agent(app: &TestApp, token: &str, kind: &str) -> String {
    let (status, list) = call(app, Method::GET, "/api/v1/agents", token, None).await;
    assert_eq!(status, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {list}"))["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// A new organization's built-in agents come with their schedules (the approval nudger every
/// five minutes, the coordinator and the timesheet reminder hourly, the monitor and the
/// escalator daily, the indexer every ten minutes; the broadcast sender runs when a broadcast
/// is due): checked, then removed so that each test counts its own.
async fn clear_builtin_schedules(app: &TestApp, org: uuid::Uuid) {
    let mut seeded: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.kind, s.cron_expression FROM agent_schedules s JOIN agents a ON a.id = s.agent_id
         WHERE s.organization_id = $1 AND s.enabled AND s.created_by IS NULL",
    )
    .bind(org)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    seeded.sort();
    let expected = [
        ("approval_nudger", "*/5 * * * *"),
        ("document_indexer", "*/10 * * * *"),
        ("task_escalator", "30 8 * * *"),
        ("task_monitor", "0 8 * * *"),
        ("team_coordinator", "15 * * * *"),
        ("timesheet_reminder", "15 * * * *"),
    ]
    .map(|(k, c)| (k.to_owned(), c.to_owned()));
    assert_eq!(seeded, expected);
    sqlx::query("DELETE FROM agent_schedules WHERE organization_id = $1")
        .bind(org)
        .execute(&app.pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_schedule_is_read_in_its_zone_changed_from_now_and_run_once_per_tick() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    clear_builtin_schedules(&app, admin.organization_id).await;
    let token = admin.access_token.as_str();
    let (_, agents) = call(&app, Method::GET, "/api/v1/agents", token, None).await;
    assert_eq!(agents["items"].as_array().unwrap().len(), 9, "{agents}");
    let monitor = agent(&app, token, "task_monitor").await;

    let body = json!({"agent_id": monitor, "cron_expression": "0  9 * * 1-5",
                      "time_zone": "Europe/Paris"});
    let create = || {
        app.client
            .post(app.url("/api/v1/agent-schedules"))
            .bearer_auth(token)
            .header("Idempotency-Key", "s-1")
            .json(&body)
            .send()
    };
    let response = create().await.unwrap();
    assert_eq!(response.status(), 201);
    let schedule: Value = response.json().await.unwrap();
    assert_eq!(schedule["cron_expression"], "0 9 * * 1-5");
    let replay = create().await.unwrap();
    assert_eq!(replay.headers()["Idempotent-Replayed"], "true");
    let replayed: Value = replay.json().await.unwrap();
    assert_eq!(replayed["id"], schedule["id"]);
    let id = schedule["id"].as_str().unwrap();

    // Weekdays at 09:00 in Paris.
    let upcoming: Vec<DateTime<Utc>> = schedule["upcoming"]
        .as_array()
        .unwrap()
        .iter()
        .map(at)
        .collect();
    assert_eq!(upcoming.len(), 3);
    assert_eq!(at(&schedule["next_run_at"]), upcoming[0]);
    for tick in &upcoming {
        let local = tick.with_timezone(&chrono_tz::Europe::Paris);
        assert_eq!((local.hour(), local.minute()), (9, 0), "{local}");
        assert!(!matches!(local.weekday(), Weekday::Sat | Weekday::Sun));
    }

    // ETag, then a change makes a new one.
    let response = app
        .client
        .get(app.url(&format!("/api/v1/agent-schedules/{id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let tag = response.headers()["etag"].to_str().unwrap().to_owned();
    let response = app
        .client
        .get(app.url(&format!("/api/v1/agent-schedules/{id}")))
        .bearer_auth(token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);
    let (status, changed) = call(
        &app,
        Method::PATCH,
        &format!("/api/v1/agent-schedules/{id}"),
        token,
        Some(json!({"cron_expression": "30 18 * * 0", "time_zone": "America/New_York"})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    let next = at(&changed["next_run_at"]).with_timezone(&chrono_tz::America::New_York);
    assert_eq!(
        (next.weekday(), next.hour(), next.minute()),
        (Weekday::Sun, 18, 30)
    );

    // The scheduler runs a due schedule once, however often it looks.
    sqlx::query("UPDATE agent_schedules SET next_run_at = now() - interval '1 hour' WHERE id = $1")
        .bind(id.parse::<uuid::Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let now = Utc::now();
    assert_eq!(
        zoark_scheduler::cron::run_agent_schedules(&mut conn, now)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        zoark_scheduler::cron::run_agent_schedules(&mut conn, now)
            .await
            .unwrap(),
        0
    );
    let (_, ran) = call(
        &app,
        Method::GET,
        &format!("/api/v1/agent-schedules/{id}"),
        token,
        None,
    )
    .await;
    assert!(ran["last_run_at"].is_string());
    assert!(at(&ran["next_run_at"]) > now);
    let jobs: Vec<(String, Value)> = sqlx::query_as("SELECT kind, args FROM jobs")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].0, "agents.run_scheduled");
    assert_eq!(jobs[0].1["agent_id"], monitor.as_str());

    // Disabled schedules are not run and show no upcoming ticks; filters see them.
    let (_, disabled) = call(
        &app,
        Method::PATCH,
        &format!("/api/v1/agent-schedules/{id}"),
        token,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(disabled["upcoming"], json!([]));
    assert!(disabled["next_run_at"].is_null());
    sqlx::query("UPDATE agent_schedules SET next_run_at = now() - interval '1 hour'")
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        zoark_scheduler::cron::run_agent_schedules(&mut conn, Utc::now())
            .await
            .unwrap(),
        0
    );
    let (_, list) = call(
        &app,
        Method::GET,
        "/api/v1/agent-schedules?enabled=false",
        token,
        None,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = call(
        &app,
        Method::GET,
        &format!("/api/v1/agent-schedules?agent_id={}", uuid::Uuid::now_v7()),
        token,
        None,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);

    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/agent-schedules/{id}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, problem) = call(
        &app,
        Method::GET,
        &format!("/api/v1/agent-schedules/{id}"),
        token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (404, Some("agent_schedule_not_found"))
    );
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'agent_schedule.%' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        ["agent_schedule.created", "agent_schedule.deleted"]
    );
}

#[tokio::test]
async fn bad_schedules_are_refused_field_by_field_and_only_managers_write_them() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    clear_builtin_schedules(&app, admin.organization_id).await;
    let token = admin.access_token.as_str();
    let monitor = agent(&app, token, "task_monitor").await;
    for (body, fields) in [
        (
            json!({"agent_id": monitor, "cron_expression": "every day", "time_zone": "Mars/Olympus"}),
            vec!["cron_expression", "time_zone"],
        ),
        (
            json!({"agent_id": monitor, "cron_expression": "0 0 9 * * *"}),
            vec!["cron_expression"],
        ),
        (
            json!({"agent_id": monitor, "cron_expression": "0 9 * * 8"}),
            vec!["cron_expression"],
        ),
        (
            json!({"agent_id": monitor, "cron_expression": "0 9 31 2 *"}),
            vec!["cron_expression"],
        ),
        (
            json!({"agent_id": uuid::Uuid::now_v7(), "cron_expression": "0 9 * * *"}),
            vec!["agent_id"],
        ),
    ] {
        let (status, problem) = call(
            &app,
            Method::POST,
            "/api/v1/agent-schedules",
            token,
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body}: {problem}");
        assert_eq!(field_names(&problem), fields, "{body}");
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_schedules")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);

    let lead = fixtures::member(&app, admin.organization_id, "l@example.com", Role::Lead).await;
    let viewer = fixtures::member(&app, admin.organization_id, "v@example.com", Role::Viewer).await;
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/agent-schedules",
        &lead.access_token,
        Some(json!({"agent_id": monitor, "cron_expression": "0 9 * * *"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/agent-schedules",
        &lead.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/agents",
        &viewer.access_token,
        None,
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn another_organization_cannot_schedule_or_see_a_foreign_agent() {
    let app = TestApp::spawn().await;
    let a = fixtures::register(&app, "a@example.com", "A").await;
    let b = fixtures::register(&app, "b@example.com", "B").await;
    clear_builtin_schedules(&app, a.organization_id).await;
    clear_builtin_schedules(&app, b.organization_id).await;
    let a_agent = agent(&app, &a.access_token, "approval_nudger").await;
    let (status, created) = call(
        &app,
        Method::POST,
        "/api/v1/agent-schedules",
        &a.access_token,
        Some(json!({"agent_id": a_agent, "cron_expression": "0 9 * * *"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/agent-schedules",
        &b.access_token,
        Some(json!({"agent_id": a_agent, "cron_expression": "0 9 * * *"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["agent_id".to_owned()])
    );
    let (_, list) = call(
        &app,
        Method::GET,
        "/api/v1/agent-schedules",
        &b.access_token,
        None,
    )
    .await;
    assert_eq!(list["items"], json!([]));
    let (_, agents) = call(&app, Method::GET, "/api/v1/agents", &b.access_token, None).await;
    assert!(
        agents["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["id"] != a_agent.as_str())
    );
    let (status, _) = call(
        &app,
        Method::PATCH,
        &format!(
            "/api/v1/agent-schedules/{}",
            created["id"].as_str().unwrap()
        ),
        &b.access_token,
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(status, 404);
}
