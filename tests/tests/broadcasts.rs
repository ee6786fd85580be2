//! Broadcasts end to end: API → one delivery and one job per recipient → worker → a real SMTP
//! server on loopback that can be told to fail. Exactly once per recipient through transient
//! failures, permanent refusals and bounces, suppression and RFC 8058 one-click unsubscribe,
//! scheduling, cancellation, idempotent creation and the delivery claim.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, time::Duration};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use zoark_core::access::Role;
use zoark_tests::call;
use zoark_tests::{
    TestApp, field_names, fixtures,
    smtp::{Auth, Fault, SmtpSink, Stage},
};

struct Setup {
    app: TestApp,
    smtp: SmtpSink,
    token: String,
    organization_id: Uuid,
    account_id: String,
}

async fn setup() -> Setup {
    let smtp = SmtpSink::start().await;
    let app = TestApp::builder()
        .env("ZOARK_EMAIL_RETRY_BASE_MS", "50")
        .env("ZOARK_PUBLIC_URL", "https://zoark.example")
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@engines.test", "Engines").await;
    let (status, account) = call(
        &app,
        Method::POST,
        "/api/v1/email-accounts",
        &admin.access_token,
        Some(json!({
            "provider": "smtp", "display_name": "Engines News", "from_address": "news@engines.test",
            "host": "127.0.0.1", "port": smtp.port, "security": "none"
        })),
    )
    .await;
    assert_eq!(status, 201, "{account}");
    Setup {
        account_id: account["id"].as_str().unwrap().to_owned(),
        organization_id: admin.organization_id,
        token: admin.access_token,
        app,
        smtp,
    }
}

impl Setup {
    async fn create(&self, body: Value) -> Value {
        let (status, created) = call(
            &self.app,
            Method::POST,
            "/api/v1/broadcasts",
            &self.token,
            Some(body),
        )
        .await;
        assert_eq!(status, 201, "{created}");
        created
    }

    fn body(&self, recipients: &[String]) -> Value {
        json!({
            "email_account_id": self.account_id,
            "subject": "Quarterly update",
            "body_text": "Hello team,\n\nthe numbers are in.",
            "recipients": recipients,
        })
    }

    async fn send(&self, id: &str) -> Value {
        let (status, sent) = call(
            &self.app,
            Method::POST,
            &format!("/api/v1/broadcasts/{id}/send"),
            &self.token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{sent}");
        sent
    }

    async fn get(&self, id: &str) -> Value {
        let (status, b) = call(
            &self.app,
            Method::GET,
            &format!("/api/v1/broadcasts/{id}"),
            &self.token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{b}");
        b
    }

    /// Runs a worker until the broadcast has a final status; returns it.
    async fn run_until_finished(&self, id: &str, timeout: Duration) -> Value {
        let token = CancellationToken::new();
        let worker = tokio::spawn(zoark_worker::run(
            (*self.app.settings).clone(),
            token.clone(),
        ));
        let deadline = tokio::time::Instant::now() + timeout;
        let broadcast = loop {
            let b = self.get(id).await;
            if !matches!(
                b["status"].as_str(),
                Some("draft" | "scheduled" | "sending")
            ) {
                break b;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "broadcast still {} after {timeout:?}: {}",
                b["status"],
                b["counts"]
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        token.cancel();
        worker.await.unwrap().unwrap();
        broadcast
    }

    async fn deliveries(&self, id: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let path = match &cursor {
                Some(c) => format!("/api/v1/broadcasts/{id}/deliveries?limit=200&cursor={c}"),
                None => format!("/api/v1/broadcasts/{id}/deliveries?limit=200"),
            };
            let (status, page) = call(&self.app, Method::GET, &path, &self.token, None).await;
            assert_eq!(status, 200, "{page}");
            items.extend(page["items"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return items,
            }
        }
    }
}

fn header<'a>(data: &'a str, name: &str) -> Option<&'a str> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    data.split("\r\n\r\n")
        .next()?
        .split("\r\n")
        .find_map(|line| {
            line.to_ascii_lowercase()
                .starts_with(&prefix)
                .then(|| line[prefix.len()..].trim())
        })
}

fn recipient_of(data: &str) -> String {
    header(data, "To")
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned()
}

#[tokio::test]
async fn a_broadcast_reaches_each_address_once_and_unsubscribes_in_one_click() {
    let s = setup().await;
    let org = s.organization_id;
    // A team member, a project with two members (one of them also listed by address, in
    // another case), and an address already suppressed.
    let ada: Uuid = sqlx::query_scalar(
        "INSERT INTO team_members (organization_id, name, email) VALUES ($1, 'Ada', 'ada@team.test') RETURNING id",
    )
    .bind(org)
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    let project: Uuid = sqlx::query_scalar(
        "INSERT INTO projects (organization_id, name) VALUES ($1, 'Apollo') RETURNING id",
    )
    .bind(org)
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    for (name, email) in [("Grace", "grace@team.test"), ("Linus", "linus@team.test")] {
        sqlx::query(
            "WITH m AS (INSERT INTO team_members (organization_id, name, email) VALUES ($1, $2, $3) RETURNING id)
             INSERT INTO project_members (organization_id, project_id, team_member_id) SELECT $1, $4, id FROM m",
        )
        .bind(org)
        .bind(name)
        .bind(email)
        .bind(project)
        .execute(&s.app.pool)
        .await
        .unwrap();
    }
    let (status, _) = call(
        &s.app,
        Method::POST,
        "/api/v1/email-suppressions",
        &s.token,
        Some(json!({"email": "gone@example.com"})),
    )
    .await;
    assert_eq!(status, 201);

    let created = s
        .create(json!({
            "email_account_id": s.account_id,
            "subject": "Launch <today>",
            "body_text": "Hello & welcome,\n\nwe launch today.",
            "body_html": "<p>Hello &amp; welcome</p>",
            "recipients": ["one@example.com", "GRACE@team.test", "gone@example.com"],
            "team_member_ids": [ada],
            "project_id": project,
        }))
        .await;
    assert_eq!(created["status"], "draft");
    let id = created["id"].as_str().unwrap().to_owned();
    let sent = s.send(&id).await;
    assert_eq!(sent["status"], "sending");
    assert_eq!(sent["recipient_count"], 5, "{sent}");
    assert_eq!(sent["counts"]["queued"], 4);
    assert_eq!(sent["counts"]["suppressed"], 1);
    // Sending twice is refused.
    let (status, again) = call(
        &s.app,
        Method::POST,
        &format!("/api/v1/broadcasts/{id}/send"),
        &s.token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), again["code"].as_str()),
        (409, Some("broadcast_not_sendable"))
    );

    let done = s.run_until_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "sent", "{done}");
    assert_eq!(done["counts"]["sent"], 4);
    let messages = s.smtp.messages();
    let mut to: Vec<String> = messages
        .iter()
        .map(|m| recipient_of(&m.data).to_lowercase())
        .collect();
    to.sort();
    assert_eq!(
        to,
        [
            "ada@team.test",
            "grace@team.test",
            "linus@team.test",
            "one@example.com"
        ]
    );

    let deliveries = s.deliveries(&id).await;
    assert_eq!(deliveries.len(), 5);
    let by_recipient: HashMap<String, &Value> = deliveries
        .iter()
        .map(|d| (d["recipient"].as_str().unwrap().to_lowercase(), d))
        .collect();
    let gone = by_recipient["gone@example.com"];
    assert_eq!(gone["status"], "suppressed");
    let one = by_recipient["one@example.com"];
    let history: Vec<&str> = one["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["queued", "sending", "sent"]);
    let delivery_id = one["id"].as_str().unwrap();
    let message = messages
        .iter()
        .find(|m| recipient_of(&m.data) == "one@example.com")
        .unwrap();
    // The Message-ID comes from the delivery id and is the recorded provider id.
    let message_id = format!("<{delivery_id}@engines.test>");
    assert_eq!(
        header(&message.data, "Message-ID"),
        Some(message_id.as_str())
    );
    assert_eq!(one["provider_message_id"], message_id);
    assert_eq!(
        header(&message.data, "List-Unsubscribe-Post"),
        Some("List-Unsubscribe=One-Click")
    );
    let link = header(&message.data, "List-Unsubscribe")
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned();
    assert!(
        link.starts_with("https://zoark.example/api/v1/unsubscribe/"),
        "{link}"
    );
    assert!(
        header(&message.data, "From")
            .unwrap()
            .contains("news@engines.test")
    );
    let decoded = message.decoded();
    assert!(decoded.contains("Hello &amp; welcome") && decoded.contains(&link));

    // One-click unsubscribe (RFC 8058): the client POSTs the form body to the link.
    let path = link.trim_start_matches("https://zoark.example");
    let page = s.app.get(path).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("method=\"post\""));
    let unsubscribed = reqwest::Client::new()
        .post(s.app.url(path))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(unsubscribed.status(), 200);
    // Twice is fine; a tampered token is not.
    let again = reqwest::Client::new()
        .post(s.app.url(path))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    let mut tampered = path.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let refused = reqwest::Client::new()
        .post(s.app.url(&tampered))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let (_, list) = call(
        &s.app,
        Method::GET,
        "/api/v1/email-suppressions",
        &s.token,
        None,
    )
    .await;
    let entries: Vec<(&str, &str)> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["email"].as_str().unwrap(), e["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        entries,
        [
            ("one@example.com", "unsubscribed"),
            ("gone@example.com", "manual")
        ]
    );

    // The next broadcast skips the unsubscribed address.
    let next = s
        .create(s.body(&["one@example.com".into(), "two@example.com".into()]))
        .await;
    let next_id = next["id"].as_str().unwrap();
    let sent = s.send(next_id).await;
    assert_eq!(
        (
            sent["counts"]["queued"].as_i64(),
            sent["counts"]["suppressed"].as_i64()
        ),
        (Some(1), Some(1))
    );
}

#[tokio::test]
async fn five_hundred_recipients_through_transient_failures_receive_exactly_one_message_each() {
    let s = setup().await;
    // 20 % of messages refused with 451 after their data, plus a few dropped connections and
    // 421 greetings.
    s.smtp.fail_share(Stage::Data, Fault::Reply(451), 20);
    s.smtp.fail_next(Stage::Rcpt, Fault::Drop, 5);
    s.smtp.fail_next(Stage::Connect, Fault::Reply(421), 3);
    s.smtp.fail_next(Stage::Mail, Fault::Reply(451), 5);
    let recipients: Vec<String> = (0..500).map(|i| format!("r{i:03}@example.com")).collect();
    let created = s.create(s.body(&recipients)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let sent = s.send(&id).await;
    assert_eq!(sent["counts"]["queued"], 500);
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE kind = 'email.send'")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    assert_eq!(jobs, 500, "one job per delivery");

    let done = s.run_until_finished(&id, Duration::from_secs(120)).await;
    assert_eq!(done["status"], "sent", "{done}");
    assert_eq!(done["counts"]["sent"], 500);
    assert!(
        s.smtp.injected() >= 100,
        "faults injected: {}",
        s.smtp.injected()
    );
    let messages = s.smtp.messages();
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for m in &messages {
        *per_recipient.entry(recipient_of(&m.data)).or_default() += 1;
    }
    assert_eq!(messages.len(), 500);
    assert_eq!(per_recipient.len(), 500);
    assert!(per_recipient.values().all(|n| *n == 1));
    let deliveries = s.deliveries(&id).await;
    let retried = deliveries
        .iter()
        .filter(|d| d["attempts"].as_i64().unwrap() > 1)
        .count();
    assert!(retried >= 90, "deliveries retried: {retried}");
    let retried_one = deliveries
        .iter()
        .find(|d| d["attempts"].as_i64().unwrap() > 1)
        .unwrap();
    let history: Vec<&str> = retried_one["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(&history[..3], ["queued", "sending", "retrying"]);
    assert_eq!(history.last(), Some(&"sent"));
}

#[tokio::test]
async fn permanent_refusals_fail_at_once_and_bounces_are_suppressed() {
    let s = setup().await;
    s.smtp.reject_recipient("nobody@example.com", 550);
    s.smtp.reject_recipient("policy@example.com", 554);
    let created = s
        .create(s.body(&[
            "ok@example.com".into(),
            "nobody@example.com".into(),
            "policy@example.com".into(),
        ]))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    s.send(&id).await;
    let done = s.run_until_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "partially_failed", "{done}");
    let deliveries = s.deliveries(&id).await;
    let status: HashMap<&str, (&str, i64)> = deliveries
        .iter()
        .map(|d| {
            (
                d["recipient"].as_str().unwrap(),
                (
                    d["status"].as_str().unwrap(),
                    d["attempts"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(status["ok@example.com"], ("sent", 1));
    assert_eq!(status["nobody@example.com"], ("bounced", 1));
    assert_eq!(status["policy@example.com"], ("failed", 1));
    let failed = deliveries
        .iter()
        .find(|d| d["recipient"] == "policy@example.com")
        .unwrap();
    assert!(
        failed["last_error"].as_str().unwrap().contains("554"),
        "{failed}"
    );
    // The failed delivery's job is discarded with the error; the bounce is suppressed.
    let (state, errors): (String, Value) = sqlx::query_as(
        "SELECT j.state, j.errors FROM jobs j JOIN email_deliveries d ON d.job_id = j.id
         WHERE d.recipient = 'policy@example.com'",
    )
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(state, "discarded");
    assert!(errors.to_string().contains("554"));
    let reason: String = sqlx::query_scalar(
        "SELECT reason FROM email_suppressions WHERE email = 'nobody@example.com'",
    )
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(reason, "hard_bounce");
}

#[tokio::test]
async fn an_account_whose_settings_cannot_work_fails_its_broadcast_at_once_and_says_why() {
    // A local sink without AUTH, and an account with a username and password: no
    // authentication mechanism can work, so nothing may sit retrying for an hour.
    let s = setup().await;
    s.smtp.set_auth(Auth::Absent);
    let account = format!("/api/v1/email-accounts/{}", s.account_id);
    let (status, _) = call(
        &s.app,
        Method::PATCH,
        &account,
        &s.token,
        Some(json!({"username": "news", "password": "smtp-secret-password"})),
    )
    .await;
    assert_eq!(status, 200);
    let recipients: Vec<String> = (0..3).map(|i| format!("r{i}@example.com")).collect();
    let created = s.create(s.body(&recipients)).await;
    let id = created["id"].as_str().unwrap().to_owned();
    s.send(&id).await;
    let done = s.run_until_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "failed", "{done}");
    for delivery in s.deliveries(&id).await {
        assert_eq!(
            (delivery["status"].as_str(), delivery["attempts"].as_i64()),
            (Some("failed"), Some(1)),
            "{delivery}"
        );
        let error = delivery["last_error"].as_str().unwrap();
        assert!(
            error.contains("authentication") || error.contains("needs_attention"),
            "{delivery}"
        );
    }
    let (_, shown) = call(&s.app, Method::GET, &account, &s.token, None).await;
    assert_eq!(shown["status"], "needs_attention", "{shown}");
    assert!(
        shown["status_reason"]
            .as_str()
            .unwrap()
            .contains("No compatible authentication mechanism"),
        "{shown}"
    );
    // Sending another broadcast through it is refused until its settings change.
    let again = s.create(s.body(&["later@example.com".into()])).await;
    let again = again["id"].as_str().unwrap().to_owned();
    let (status, refused) = call(
        &s.app,
        Method::POST,
        &format!("/api/v1/broadcasts/{again}/send"),
        &s.token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), refused["code"].as_str()),
        (409, Some("email_account_unusable")),
        "{refused}"
    );

    // Credentials the server refuses (535) need attention too.
    s.smtp.set_auth(Auth::Refused);
    let (status, fixed) = call(
        &s.app,
        Method::PATCH,
        &account,
        &s.token,
        Some(json!({"password": "another-password"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), fixed["status"].as_str()),
        (200, Some("active"))
    );
    let (status, queued) = call(
        &s.app,
        Method::POST,
        &format!("{account}/test"),
        &s.token,
        Some(json!({})),
    )
    .await;
    assert_eq!(status, 202, "{queued}");
    s.app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let (_, shown) = call(&s.app, Method::GET, &account, &s.token, None).await;
    assert_eq!(shown["status"], "needs_attention", "{shown}");
    assert!(
        shown["status_reason"].as_str().unwrap().contains("535"),
        "{shown}"
    );

    // New settings that work: the account sends again.
    s.smtp.set_auth(Auth::Absent);
    let (status, fixed) = call(
        &s.app,
        Method::PATCH,
        &account,
        &s.token,
        Some(json!({"username": null, "password": null})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), fixed["status"].as_str()),
        (200, Some("active"))
    );
    s.send(&again).await;
    let done = s.run_until_finished(&again, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "sent", "{done}");
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_response_even_under_concurrency() {
    let s = setup().await;
    let body = s.body(&["a@example.com".into()]);
    let post = |key: &'static str, body: Value| {
        let client = reqwest::Client::new();
        let url = s.app.url("/api/v1/broadcasts");
        let token = s.token.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let (first, second) = tokio::join!(post("k-1", body.clone()), post("k-1", body.clone()));
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    let replayed: Vec<bool> = [&first, &second]
        .iter()
        .map(|r| {
            r.headers()
                .get("Idempotent-Replayed")
                .is_some_and(|v| v == "true")
        })
        .collect();
    assert_eq!(replayed.iter().filter(|r| **r).count(), 1, "{replayed:?}");
    let (a, b): (Value, Value) = (first.json().await.unwrap(), second.json().await.unwrap());
    assert_eq!(a, b);
    let third = post("k-1", body.clone()).await;
    assert_eq!(third.status(), 201);
    assert_eq!(third.json::<Value>().await.unwrap()["id"], a["id"]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM broadcasts")
        .fetch_one(&s.app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    // The same key with another body is refused; another key creates another broadcast.
    let mut other = body.clone();
    other["subject"] = json!("Another");
    let refused = post("k-1", other.clone()).await;
    assert_eq!(refused.status(), 400);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(post("k-2", other).await.status(), 201);
    let empty = post("", body).await;
    assert_eq!(empty.status(), 400);
}

#[tokio::test]
async fn invalid_broadcasts_name_each_field_and_members_cannot_send() {
    let s = setup().await;
    let (status, body) = call(
        &s.app,
        Method::POST,
        "/api/v1/broadcasts",
        &s.token,
        Some(json!({
            "email_account_id": Uuid::now_v7(),
            "subject": "two\nlines",
            "body_text": " ",
            "recipients": ["ok@example.com", "not an address"],
            "team_member_ids": [Uuid::now_v7()],
            "project_id": Uuid::now_v7(),
            "scheduled_for": "2020-01-01T00:00:00Z",
        })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        field_names(&body),
        [
            "subject",
            "body_text",
            "recipients[1]",
            "scheduled_for",
            "email_account_id",
            "team_member_ids",
            "project_id"
        ]
    );
    let (status, body) = call(
        &s.app,
        Method::POST,
        "/api/v1/broadcasts",
        &s.token,
        Some(json!({"email_account_id": s.account_id, "subject": "s", "body_text": "t"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&body)),
        (422, vec!["recipients".to_owned()])
    );
    let (status, _) = call(
        &s.app,
        Method::GET,
        "/api/v1/broadcasts?status=nope",
        &s.token,
        None,
    )
    .await;
    assert_eq!(status, 400);

    // A member reads broadcasts but does not create, send or cancel them.
    let created = s.create(s.body(&["a@example.com".into()])).await;
    let id = created["id"].as_str().unwrap();
    let member = fixtures::member(&s.app, s.organization_id, "m@engines.test", Role::Member).await;
    let (status, list) = call(
        &s.app,
        Method::GET,
        "/api/v1/broadcasts",
        &member.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), list["items"].as_array().unwrap().len()),
        (200, 1)
    );
    let (status, _) = call(
        &s.app,
        Method::POST,
        &format!("/api/v1/broadcasts/{id}/send"),
        &member.access_token,
        None,
    )
    .await;
    assert_eq!(status, 403);
    // An account that must be reconnected cannot send.
    sqlx::query("UPDATE email_accounts SET status = 'disabled'")
        .execute(&s.app.pool)
        .await
        .unwrap();
    let (status, body) = call(
        &s.app,
        Method::POST,
        &format!("/api/v1/broadcasts/{id}/send"),
        &s.token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (409, Some("email_account_unusable"))
    );
}

#[tokio::test]
async fn a_scheduled_broadcast_is_sent_by_the_job_engine_and_cancelling_stops_one() {
    let s = setup().await;
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let mut body = s.body(&["later@example.com".into()]);
    body["scheduled_for"] = json!(at);
    let scheduled = s.create(body.clone()).await;
    assert_eq!(scheduled["status"], "scheduled");
    let id = scheduled["id"].as_str().unwrap().to_owned();
    let (state, run_at): (String, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT state, run_at FROM jobs WHERE kind = 'email.send_broadcast'")
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    assert_eq!(state, "scheduled");
    assert!((run_at - at).num_milliseconds().abs() < 5);

    // Another scheduled broadcast, cancelled: never sent.
    body["recipients"] = json!(["never@example.com"]);
    let cancelled = s.create(body).await;
    let cancelled_id = cancelled["id"].as_str().unwrap().to_owned();
    let (status, c) = call(
        &s.app,
        Method::POST,
        &format!("/api/v1/broadcasts/{cancelled_id}/cancel"),
        &s.token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), c["status"].as_str()),
        (200, Some("cancelled"))
    );
    let (status, c) = call(
        &s.app,
        Method::POST,
        &format!("/api/v1/broadcasts/{cancelled_id}/cancel"),
        &s.token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), c["code"].as_str()),
        (409, Some("broadcast_finished"))
    );

    let done = s.run_until_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "sent");
    let started: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(done["started_at"].clone()).unwrap();
    assert!(started >= at, "sent at {started}, scheduled for {at}");
    let to: Vec<String> = s
        .smtp
        .messages()
        .iter()
        .map(|m| recipient_of(&m.data))
        .collect();
    assert_eq!(to, ["later@example.com"]);
    let states: Vec<String> = sqlx::query_scalar(
        "SELECT state FROM jobs WHERE kind = 'email.send_broadcast' ORDER BY created_at",
    )
    .fetch_all(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(states, ["completed", "cancelled"]);
    // It was sent as a run of the broadcast sender agent: one email step, one activity entry.
    let (trigger, status, output): (String, String, Value) = sqlx::query_as(
        "SELECT r.trigger, r.status, r.output FROM agent_runs r JOIN agents a ON a.id = r.agent_id
         WHERE a.kind = 'broadcast_sender'",
    )
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(
        (trigger.as_str(), status.as_str()),
        ("schedule", "succeeded")
    );
    assert_eq!(output["broadcast_id"], id.as_str());
    assert_eq!(output["queued"], 1);
    let steps: Vec<(String, String)> =
        sqlx::query_as("SELECT kind, status FROM agent_run_steps ORDER BY position")
            .fetch_all(&s.app.pool)
            .await
            .unwrap();
    assert_eq!(steps, [("email".to_owned(), "succeeded".to_owned())]);
    let sent: Value =
        sqlx::query_scalar("SELECT context FROM agent_activity WHERE action = 'broadcast_sent'")
            .fetch_one(&s.app.pool)
            .await
            .unwrap();
    assert_eq!(sent["broadcast_id"], id.as_str());

    // A sending broadcast stops: its queued deliveries and their jobs are cancelled.
    let recipients: Vec<String> = (0..20).map(|i| format!("c{i}@example.com")).collect();
    let big = s.create(s.body(&recipients)).await;
    let big_id = big["id"].as_str().unwrap().to_owned();
    s.send(&big_id).await;
    let (status, c) = call(
        &s.app,
        Method::POST,
        &format!("/api/v1/broadcasts/{big_id}/cancel"),
        &s.token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["counts"]["cancelled"], 20);
    let waiting: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'email.send' AND state <> 'cancelled'
           AND id IN (SELECT job_id FROM email_deliveries WHERE broadcast_id = $1)",
    )
    .bind(Uuid::parse_str(&big_id).unwrap())
    .fetch_one(&s.app.pool)
    .await
    .unwrap();
    assert_eq!(waiting, 0);
    s.app.drain_jobs(Duration::from_secs(20)).await.unwrap();
    assert_eq!(s.smtp.messages().len(), 1, "nothing more was sent");
    assert_eq!(s.get(&big_id).await["status"], "cancelled");
}

#[tokio::test]
async fn a_delivery_is_sent_once_even_when_its_job_runs_twice() {
    let s = setup().await;
    let created = s
        .create(s.body(&["once@example.com".into(), "held@example.com".into()]))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    s.send(&id).await;
    let pool = &s.app.pool;
    // A second job for the same delivery (as if enqueued twice).
    let once: Uuid =
        sqlx::query_scalar("SELECT id FROM email_deliveries WHERE recipient = 'once@example.com'")
            .fetch_one(pool)
            .await
            .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    zoark_jobs::enqueue(
        &mut conn,
        &zoark_jobs::email::SendEmail { delivery_id: once },
        zoark_jobs::Opts::organization(s.organization_id),
    )
    .await
    .unwrap();
    // Another attempt holds a fresh claim on the second delivery: it must wait, not send.
    sqlx::query(
        "UPDATE email_deliveries SET status = 'sending', claimed_at = now() WHERE recipient = 'held@example.com'",
    )
    .execute(pool)
    .await
    .unwrap();
    drop(conn);
    s.app.drain_jobs(Duration::from_secs(20)).await.unwrap();
    let to: Vec<String> = s
        .smtp
        .messages()
        .iter()
        .map(|m| recipient_of(&m.data))
        .collect();
    assert_eq!(
        to,
        ["once@example.com"],
        "sent once, and the held one not at all"
    );
    let (state, run_at): (String, chrono::DateTime<chrono::Utc>) = sqlx::query_as(
        "SELECT j.state, j.run_at FROM jobs j JOIN email_deliveries d ON d.job_id = j.id
         WHERE d.recipient = 'held@example.com'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(state, "scheduled", "snoozed until the claim is stale");
    assert!(run_at > chrono::Utc::now() + chrono::Duration::seconds(60));
    // Once the claim is stale (its attempt is dead), the delivery is taken over and sent.
    for sql in [
        "UPDATE email_deliveries SET claimed_at = now() - interval '1 hour' WHERE recipient = 'held@example.com'",
        "UPDATE jobs SET run_at = now() WHERE state = 'scheduled' AND kind = 'email.send'",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    let done = s.run_until_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "sent");
    assert_eq!(s.smtp.messages().len(), 2);
}

/// The one window the claim cannot close, shown as it is: the server accepted the message but
/// the connection died before its answer, so the worker retries and the recipient gets a second
/// copy — with the same Message-ID, derived from the delivery, so that it can be recognised.
#[tokio::test]
async fn a_message_accepted_but_never_acknowledged_is_sent_again_with_the_same_message_id() {
    let s = setup().await;
    s.smtp.fail_next(Stage::Data, Fault::AcceptThenDrop, 1);
    let created = s.create(s.body(&["window@example.com".into()])).await;
    let id = created["id"].as_str().unwrap().to_owned();
    s.send(&id).await;
    let done = s.run_until_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(done["status"], "sent");
    let messages = s.smtp.messages();
    assert_eq!(messages.len(), 2, "the documented duplicate");
    let ids: Vec<&str> = messages
        .iter()
        .map(|m| header(&m.data, "Message-ID").unwrap())
        .collect();
    assert_eq!(ids[0], ids[1]);
    let deliveries = s.deliveries(&id).await;
    assert_eq!(deliveries[0]["attempts"], 2);
    assert_eq!(deliveries[0]["provider_message_id"], ids[0]);
}
