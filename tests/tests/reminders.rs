//! Reminders as agent runs: the team coordinator reminds the assignees of tasks due within a day
//! inside their own working hours, and the timesheet reminder asks each member at the close of
//! their working week (in their zone) for their timesheet, with a draft of their week written
//! by the LLM (wiremock speaking the OpenAI API) or a deterministic list without one — each once,
//! however often their schedules tick, with no run recorded for a tick with nothing to do;
//! delivered through real SMTP.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use chrono::{Datelike as _, Timelike as _, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};
use zoark_tests::{TestApp, agents::tick, fixtures, smtp::SmtpSink};

async fn post(app: &TestApp, token: &str, path: &str, body: Value) -> Value {
    let (status, body) = app
        .call_json(Method::POST, path, Some(token), Some(&body))
        .await;
    assert!(status.is_success(), "{path}: {body}");
    body
}

/// The fixed-offset zone (`Etc/GMT…`, signs inverted) where it is now `hour` o'clock, and the
/// weekday there (ISO, Monday = 1).
fn zone_at(hour: i64) -> (String, i64) {
    let now = Utc::now();
    let mut offset = (hour - i64::from(now.hour())).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    let zone = match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    };
    let local = now + chrono::Duration::hours(offset);
    (zone, i64::from(local.weekday().number_from_monday()))
}

fn received(smtp: &SmtpSink, who: &str, what: &str) -> Vec<String> {
    smtp.messages()
        .iter()
        .filter(|m| m.to.iter().any(|t| t.contains(who)))
        .map(|m| m.decoded())
        .filter(|body| body.contains(what))
        .collect()
}

#[tokio::test]
async fn due_tasks_are_reminded_in_working_hours_and_closing_weeks_get_a_drafted_timesheet_once() {
    // The members' hours are set around the current hour; stay clear of its end.
    let now = Utc::now();
    if now.minute() >= 58 {
        let wait = 60 * (60 - i64::from(now.minute())) - i64::from(now.second()) + 2;
        tokio::time::sleep(Duration::from_secs(u64::try_from(wait).unwrap())).await;
    }
    let smtp = SmtpSink::start().await;
    let llm = MockServer::start().await;
    let mut builder = TestApp::builder();
    for (key, value) in smtp.env() {
        builder = builder.env(key, value);
    }
    let app = builder.spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let org = admin.organization_id;
    let token = admin.access_token.as_str();
    let project = post(
        &app,
        token,
        "/api/v1/projects",
        json!({"name": "Harbour Bridge"}),
    )
    .await;
    // Ada: it is 10 o'clock where she works, today her only working day, from 10:00 to 11:00.
    // She is within her hours, and her week closes now (an hour before her day ends).
    let (ada_zone, ada_today) = zone_at(10);
    let ada = post(
        &app,
        token,
        "/api/v1/team-members",
        json!({"name": "Ada", "email": "ada@example.com", "time_zone": ada_zone,
               "working_days": [ada_today], "work_starts_at": "10:00", "work_ends_at": "11:00"}),
    )
    .await;
    // Grace: it is 2 o'clock at night where she works, Monday to Friday from 9 to 5.
    let (grace_zone, _) = zone_at(2);
    let grace = post(
        &app,
        token,
        "/api/v1/team-members",
        json!({"name": "Grace", "email": "grace@example.com", "time_zone": grace_zone}),
    )
    .await;
    let ada_id: Uuid = ada["id"].as_str().unwrap().parse().unwrap();
    // Ada logs work as herself: her team entry is her login.
    sqlx::query("UPDATE team_members SET user_id = $1 WHERE id = $2")
        .bind(admin.user_id)
        .bind(ada_id)
        .execute(&app.pool)
        .await
        .unwrap();
    // Seven tenths of a second past: a due time Postgres rounds up to the next second.
    let soon = (now + chrono::Duration::hours(3))
        .with_nanosecond(700_000_000)
        .unwrap()
        .to_rfc3339();
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
    post(
        &app,
        token,
        "/api/v1/tasks",
        json!({"project_id": project["id"], "title": "Survey", "due_at": soon, "status": "done",
               "assignee_ids": [ada["id"], grace["id"]]}),
    )
    .await;
    post(
        &app,
        token,
        &format!("/api/v1/tasks/{}/history", due["id"].as_str().unwrap()),
        json!({"kind": "work_logged", "minutes": 90}),
    )
    .await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();

    // The coordinator reminds Ada (within her hours) of the task due soon, not of the one due
    // in three days nor of the finished one; Grace is asleep.
    let run = tick(&app, org, "team_coordinator").await.unwrap().unwrap();
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    assert_eq!(run.output.unwrap()["task_due_reminders"], 1);
    assert_eq!(
        received(&smtp, "ada@example.com", "Inspect rivets is due soon").len(),
        1
    );
    assert!(received(&smtp, "grace@example.com", "is due soon").is_empty());
    assert!(received(&smtp, "ada@example.com", "Paint is due soon").is_empty());
    // Nothing more to do: the next tick records no run.
    assert!(tick(&app, org, "team_coordinator").await.unwrap().is_none());
    // Grace's day begins (her zone is now Ada's, her hours Ada's): she is reminded, once.
    sqlx::query(
        "UPDATE team_members SET time_zone = $2, working_days = $3, work_starts_at = '10:00',
         work_ends_at = '11:00' WHERE id = $1",
    )
    .bind(grace["id"].as_str().unwrap().parse::<Uuid>().unwrap())
    .bind(&ada_zone)
    .bind(vec![i16::try_from(ada_today).unwrap()])
    .execute(&app.pool)
    .await
    .unwrap();
    let run = tick(&app, org, "team_coordinator").await.unwrap().unwrap();
    assert_eq!(run.output.unwrap()["task_due_reminders"], 1);
    assert_eq!(
        received(&smtp, "grace@example.com", "Inspect rivets is due soon").len(),
        1
    );
    assert!(tick(&app, org, "team_coordinator").await.unwrap().is_none());
    assert_eq!(
        received(&smtp, "ada@example.com", "Inspect rivets is due soon").len(),
        1,
        "never twice"
    );
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agent_activity WHERE organization_id = $1 AND action = 'team_reminder'",
    )
    .bind(org)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(entries, 2);

    // The timesheet reminder, without an LLM: Ada's and Grace's weeks close now (Grace works
    // Ada's hours now). The draft lists the week; the run says it is a template.
    let run = tick(&app, org, "timesheet_reminder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    let output = run.output.unwrap();
    assert_eq!(output["drafts"], "template");
    assert!(output["note"].as_str().unwrap().contains("no LLM provider"));
    assert_eq!(output["reminded_members"].as_array().unwrap().len(), 2);
    let timesheet = received(&smtp, "ada@example.com", "Your timesheet");
    assert_eq!(timesheet.len(), 1);
    // One working day of one hour expected; 90 minutes logged.
    assert!(
        timesheet[0].contains("1.5 of the 1 hours"),
        "{}",
        timesheet[0]
    );
    assert!(
        timesheet[0].contains("1.5 h on Inspect rivets"),
        "{}",
        timesheet[0]
    );
    assert!(timesheet[0].contains(": Survey"), "{}", timesheet[0]);
    assert!(timesheet[0].contains("nothing was submitted for you"));
    assert!(
        tick(&app, org, "timesheet_reminder")
            .await
            .unwrap()
            .is_none(),
        "once per week"
    );

    // With an LLM provider, the draft is the LLM's, written from the week's facts (a new week
    // for Ada: her reminder of this one is forgotten).
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_764_806_400,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null, "message":
                {"role": "assistant", "content": "Monday: inspected the rivets (1.5 h)."}}],
            "usage": {"prompt_tokens": 80, "completion_tokens": 12, "total_tokens": 92}
        })))
        .mount(&llm)
        .await;
    post(
        &app,
        token,
        "/api/v1/llm-credentials",
        json!({"name": "Mock", "base_url": format!("{}/v1", llm.uri()), "api_key": "sk-test",
               "default_model": "gpt-4o-mini"}),
    )
    .await;
    sqlx::query("DELETE FROM reminders_sent WHERE kind = 'timesheet' AND team_member_id = $1")
        .bind(ada_id)
        .execute(&app.pool)
        .await
        .unwrap();
    let run = tick(&app, org, "timesheet_reminder")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    assert_eq!(run.output.unwrap()["drafts"], "llm");
    let asked: Vec<Value> = zoark_tests::peers::json_bodies(&llm).await;
    assert_eq!(asked.len(), 1);
    let facts = asked[0]["messages"][1]["content"].as_str().unwrap();
    assert!(
        facts.contains("Inspect rivets") && facts.contains("Survey"),
        "{facts}"
    );
    let timesheet = received(&smtp, "ada@example.com", "Your timesheet");
    assert_eq!(timesheet.len(), 2);
    assert!(
        timesheet[1].contains("Monday: inspected the rivets (1.5 h)."),
        "{}",
        timesheet[1]
    );
}
