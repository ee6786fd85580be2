//! The hourly reminder pass: assignees of tasks due within a day, and team members at the close
//! of their working week (in their own time zone) asked for their timesheet with the hours they
//! logged — each once, however often the pass runs; delivered through real SMTP.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{Datelike as _, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use zoark_tests::{TestApp, fixtures, smtp::SmtpSink};
use zoark_worker::handlers::reminders::{Sent, send_reminders};

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (status, body) = app
        .call_json(Method::POST, path, Some(token), Some(&body))
        .await;
    assert!(status.is_success(), "{path}: {body}");
    body
}

#[tokio::test]
async fn due_tasks_and_closing_weeks_are_reminded_once_each() {
    let smtp = SmtpSink::start().await;
    let mut builder = TestApp::builder();
    for (key, value) in smtp.env() {
        builder = builder.env(key, value);
    }
    let app = builder.spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let token = admin.access_token.as_str();
    let project = post(
        &app,
        token,
        "/api/v1/projects",
        json!({"name": "Harbour Bridge"}),
    )
    .await;
    let now = Utc::now();
    // Ada works today only (in UTC), from midnight to a minute past: her week closes now.
    let today = i64::from(now.weekday().number_from_monday());
    let ada = post(
        &app,
        token,
        "/api/v1/team-members",
        json!({"name": "Ada", "email": "ada@example.com", "working_days": [today],
               "work_starts_at": "00:00", "work_ends_at": "00:01"}),
    )
    .await;
    // Grace works Monday to Friday in Tokyo, to 23:59: her week closes at 22:59 on Friday
    // there — unless that is now, she gets no timesheet reminder.
    let grace = post(
        &app,
        token,
        "/api/v1/team-members",
        json!({"name": "Grace", "email": "grace@example.com", "time_zone": "Asia/Tokyo",
               "work_starts_at": "00:00", "work_ends_at": "23:59"}),
    )
    .await;
    // Ada logs 90 minutes as herself: her team entry is her login.
    sqlx::query("UPDATE team_members SET user_id = $1 WHERE id = $2")
        .bind(admin.user_id)
        .bind(ada["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
    let soon = (now + chrono::Duration::hours(3)).to_rfc3339();
    let later = (now + chrono::Duration::days(3)).to_rfc3339();
    let due = post(
        &app,
        token,
        "/api/v1/tasks",
        json!({"project_id": project["id"], "title": "Inspect rivets", "due_at": soon,
               "assignee_ids": [ada["id"], grace["id"]]}),
    )
    .await;
    post(
        &app,
        token,
        "/api/v1/tasks",
        json!({"project_id": project["id"], "title": "Paint", "due_at": later,
               "assignee_ids": [ada["id"]]}),
    )
    .await;
    let done = post(
        &app,
        token,
        "/api/v1/tasks",
        json!({"project_id": project["id"], "title": "Survey", "due_at": soon, "status": "done",
               "assignee_ids": [grace["id"]]}),
    )
    .await;
    assert_eq!(done["status"], "done");
    post(
        &app,
        token,
        &format!("/api/v1/tasks/{}/history", due["id"].as_str().unwrap()),
        json!({"kind": "work_logged", "minutes": 90}),
    )
    .await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let assignment_emails = smtp.received();

    // The pass runs after the work was logged.
    let now = Utc::now();
    let tokyo = now.with_timezone(&chrono_tz::Asia::Tokyo);
    let grace_week_closes = tokyo.weekday() == chrono::Weekday::Fri
        && tokyo.time() >= chrono::NaiveTime::from_hms_opt(22, 59, 0).unwrap();
    let sent = send_reminders(&app.pool, &app.settings, now).await.unwrap();
    assert_eq!(
        sent,
        Sent {
            task_due: 2,
            timesheet: 1 + usize::from(grace_week_closes),
        }
    );
    // Again, and an hour later: nothing new.
    for at in [now, now + chrono::Duration::hours(1)] {
        let again = send_reminders(&app.pool, &app.settings, at).await.unwrap();
        assert_eq!(again, Sent::default());
    }
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let messages = smtp.messages();
    let reminders: Vec<_> = messages[assignment_emails..].iter().collect();
    assert_eq!(reminders.len(), 3 + usize::from(grace_week_closes));
    let to = |who: &str, what: &str| {
        reminders
            .iter()
            .filter(|m| m.to.iter().any(|t| t.contains(who)) && m.decoded().contains(what))
            .count()
    };
    assert_eq!(to("ada@example.com", "Inspect rivets is due soon"), 1);
    assert_eq!(to("grace@example.com", "Inspect rivets is due soon"), 1);
    assert_eq!(to("ada@example.com", "Paint"), 0, "due in three days");
    assert_eq!(to("grace@example.com", "Survey"), 0, "done");
    // One working day of one minute expected; 90 minutes logged.
    let timesheet = reminders
        .iter()
        .find(|m| {
            m.to.iter().any(|t| t.contains("ada@example.com")) && m.decoded().contains("timesheet")
        })
        .unwrap()
        .decoded();
    assert!(timesheet.contains("1.5 of the 0 hours"), "{timesheet}");
}
