//! Inbound email end to end: the organization's secret token (shown once, rotated), raw RFC 5322
//! messages posted to `/inbound-email/{token}` and filed by the email parser agent through the
//! real worker — a task from the obvious fields without an LLM, an invoice draft read by the LLM
//! (wiremock speaking the OpenAI API) with JSON-schema output — attachments in the knowledge
//! base, redeliveries answered with the first run, bad bodies and tokens refused.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{method, path},
};
use zoark_core::access::Role;
use zoark_tests::{TestApp, fixtures};

fn message(
    message_id: &str,
    subject: &str,
    text: &str,
    attachment: Option<(&str, &str)>,
) -> String {
    let head = format!(
        "From: Ada Lovelace <ada@vendor.example>\r\nTo: inbox@works.example\r\n\
         Subject: {subject}\r\nMessage-ID: <{message_id}>\r\nDate: Fri, 4 Dec 2026 10:00:00 +0000\r\n\
         MIME-Version: 1.0\r\n"
    );
    match attachment {
        None => format!("{head}Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"),
        Some((name, content)) => format!(
            "{head}Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n--b1\r\n\
             Content-Type: text/plain; name=\"{name}\"\r\n\
             Content-Disposition: attachment; filename=\"{name}\"\r\n\r\n{content}\r\n--b1--\r\n"
        ),
    }
}

async fn post_message(app: &TestApp, token: &str, body: &str, content_type: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/inbound-email/{token}")))
        .header("Content-Type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn new_token(app: &TestApp, access_token: &str) -> String {
    let (status, body) = app
        .call_json(
            Method::POST,
            "/api/v1/inbound-email/token",
            Some(access_token),
            None,
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body["path"],
        format!("/api/v1/inbound-email/{}", body["token"].as_str().unwrap())
    );
    body["token"].as_str().unwrap().to_owned()
}

async fn run_of(app: &TestApp, access_token: &str, accepted: &Value) -> Value {
    let run = accepted["run_id"].as_str().unwrap();
    let (status, body) = app
        .call_json(
            Method::GET,
            &format!("/api/v1/agent-runs/{run}"),
            Some(access_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn inbound_messages_become_tasks_or_invoice_drafts_with_their_attachments_once_each() {
    let llm = MockServer::start().await;
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let org = admin.organization_id;
    let access = admin.access_token.as_str();
    let project = fixtures::project(&app.pool, org, "Harbour Bridge").await;
    let member = fixtures::member(&app, org, "m@example.com", Role::Member).await;
    let (status, problem) = app
        .call_json(
            Method::POST,
            "/api/v1/inbound-email/token",
            Some(&member.access_token),
            None,
        )
        .await;
    assert_eq!(status, 403, "{problem}");
    let old = new_token(&app, access).await;
    let token = new_token(&app, access).await;
    assert_ne!(old, token);

    // Refused: an old token, an unknown one, another content type, a body that is no message.
    let mail = message(
        "gate-1@vendor.example",
        "Fix the gate",
        "The north gate sticks since Monday.",
        Some(("notes.txt", "Gate hinge model HX-4, bought in 2019.")),
    );
    for bad in [&old, "ie_nope"] {
        let (status, problem) = post_message(&app, bad, &mail, "message/rfc822").await;
        assert_eq!(status, 404, "{problem}");
        assert_eq!(problem["code"], "inbound_token_not_found");
    }
    let (status, problem) = post_message(&app, &token, &mail, "text/plain").await;
    assert_eq!(status, 415, "{problem}");
    let (status, problem) = post_message(&app, &token, "just words", "message/rfc822").await;
    assert!((400..500).contains(&status), "{status} {problem}");
    assert_eq!(problem["errors"][0]["field"], "body", "{problem}");

    // Without an LLM: a task from the subject, the sender and the text; the attachment in the
    // knowledge base.
    let (status, accepted) = post_message(&app, &token, &mail, "message/rfc822").await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["duplicate"], false);
    app.drain_jobs(Duration::from_secs(120)).await.unwrap();
    let run = run_of(&app, access, &accepted).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "event");
    assert_eq!(run["output"]["kind"], "task");
    assert_eq!(run["output"]["reading"], "template");
    assert!(
        run["output"]["note"]
            .as_str()
            .unwrap()
            .contains("no LLM provider")
    );
    let task = run["output"]["task_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let (title, description, task_project, created_by): (String, String, Uuid, Option<Uuid>) =
        sqlx::query_as(
            "SELECT title, description, project_id, created_by FROM tasks WHERE id = $1",
        )
        .bind(task)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(title, "Fix the gate");
    assert!(description.contains("ada@vendor.example"), "{description}");
    assert!(description.contains("north gate sticks"), "{description}");
    assert_eq!(task_project, project);
    assert_eq!(
        created_by,
        Some(admin.user_id),
        "filed as whoever made the token"
    );
    let (doc_title, status): (String, String) =
        sqlx::query_as("SELECT title, status FROM rag_documents WHERE id = $1")
            .bind(
                run["output"]["documents"][0]
                    .as_str()
                    .unwrap()
                    .parse::<Uuid>()
                    .unwrap(),
            )
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (doc_title.as_str(), status.as_str()),
        ("notes.txt", "indexed")
    );
    let parsed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agent_activity WHERE action = 'email_parsed'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(parsed, 1);

    // The provider delivers it again: the first message and run, nothing new.
    let (status, again) = post_message(&app, &token, &mail, "message/rfc822").await;
    assert_eq!(status, 202);
    assert_eq!(
        (&again["id"], &again["run_id"], &again["duplicate"]),
        (&accepted["id"], &accepted["run_id"], &json!(true))
    );
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_runs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(runs, 1);

    // With an LLM: an invoice draft read from the message (structured output).
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_764_806_400,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": null, "message": {
                "role": "assistant",
                "content": json!({"kind": "invoice", "title": "Steel invoice INV-7",
                    "description": "Pay for the March steel delivery.", "vendor": "Forge Ltd",
                    "invoice_number": "INV-7", "amount": "1200.50", "currency": "eur",
                    "due_on": "2026-12-31"}).to_string()}}],
            "usage": {"prompt_tokens": 200, "completion_tokens": 40, "total_tokens": 240}
        })))
        .mount(&llm)
        .await;
    let (status, body) = app
        .call_json(
            Method::POST,
            "/api/v1/llm-credentials",
            Some(access),
            Some(
                &json!({"name": "Mock", "base_url": format!("{}/v1", llm.uri()),
                         "api_key": "sk-test", "default_model": "gpt-4o-mini"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let invoice_mail = message(
        "inv-7@forge.example",
        "Invoice INV-7",
        "Please find our invoice INV-7 for 1,200.50 EUR, due 31 December 2026.",
        None,
    );
    let (status, accepted) = post_message(&app, &token, &invoice_mail, "message/rfc822").await;
    assert_eq!(status, 202, "{accepted}");
    app.drain_jobs(Duration::from_secs(120)).await.unwrap();
    let run = run_of(&app, access, &accepted).await;
    let errors: Vec<Value> =
        sqlx::query_scalar("SELECT errors FROM jobs WHERE kind = 'agents.run'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(run["status"], "succeeded", "{run} {errors:?}");
    assert_eq!(run["output"]["kind"], "invoice");
    assert_eq!(run["output"]["reading"], "llm");
    let kinds: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["llm_call", "tool_call"]);
    let invoice = run["output"]["invoice_id"]
        .as_str()
        .unwrap()
        .parse::<Uuid>()
        .unwrap();
    let row: (String, String, i64, String, String, chrono::NaiveDate) = sqlx::query_as(
        "SELECT number, vendor, amount_minor, currency, status, due_on FROM invoices WHERE id = $1",
    )
    .bind(invoice)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "INV-7".into(),
            "Forge Ltd".into(),
            120_050,
            "EUR".into(),
            "draft".into(),
            chrono::NaiveDate::from_ymd_opt(2026, 12, 31).unwrap()
        )
    );
    let asked: Vec<Value> = zoark_tests::peers::json_bodies(&llm).await;
    assert_eq!(asked.len(), 1);
    assert_eq!(
        asked[0]["response_format"]["json_schema"]["name"],
        "inbound_email"
    );
    assert!(
        asked[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("1,200.50 EUR")
    );
}
