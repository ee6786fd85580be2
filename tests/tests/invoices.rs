//! Invoices: create (idempotent, numbers unique per organization), list with filters, ETag,
//! status transitions that only approval pipelines may skip, delete rules, and the PDF (sniffed,
//! replaced, downloaded), per tenant and per role.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;
use zoark_core::access::Role;
use zoark_tests::{
    TestApp, field_names,
    fixtures::{self, Account},
    multipart::{Form, PDF},
};

struct Setup {
    admin: Account,
    project: Uuid,
}

async fn setup(app: &TestApp) -> Setup {
    let admin = fixtures::register(app, "admin@example.com", "Acme").await;
    let project = fixtures::project(&app.pool, admin.organization_id, "Bridge").await;
    Setup { admin, project }
}

fn new_invoice(project: Uuid, number: &str) -> Value {
    json!({
        "project_id": project, "number": number, "vendor": "Steel & Co",
        "amount_minor": 125_000, "currency": "EUR",
        "issued_on": "2026-11-01", "due_on": "2026-12-01",
    })
}

async fn create(app: &TestApp, token: &str, body: &Value) -> (StatusCode, Value) {
    app.call_json(Method::POST, "/api/v1/invoices", Some(token), Some(body))
        .await
}

async fn created(app: &TestApp, s: &Setup, number: &str) -> String {
    let (status, body) = create(app, &s.admin.access_token, &new_invoice(s.project, number)).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn patch(app: &TestApp, token: &str, id: &str, body: Value) -> (StatusCode, Value) {
    app.call_json(
        Method::PATCH,
        &format!("/api/v1/invoices/{id}"),
        Some(token),
        Some(&body),
    )
    .await
}

/// Approval pipelines set `approved`; until they exist, tests do it in SQL.
async fn approve(app: &TestApp, id: &str) {
    sqlx::query("UPDATE invoices SET status = 'approved' WHERE id = $1")
        .bind(id.parse::<Uuid>().unwrap())
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn put_pdf(app: &TestApp, token: &str, id: &str, form: &Form) -> (StatusCode, Value) {
    let response = app
        .upload(
            Method::PUT,
            &format!("/api/v1/invoices/{id}/pdf"),
            Some(token),
            form,
            None,
        )
        .await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn object_path(app: &TestApp, key: &str) -> PathBuf {
    PathBuf::from(&app.settings.storage.local_dir).join(key)
}

async fn pdf_key(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT f.storage_key FROM invoices i JOIN stored_files f ON f.id = i.pdf_file_id
         WHERE i.id = $1",
    )
    .bind(id.parse::<Uuid>().unwrap())
    .fetch_optional(&app.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_invoice_is_created_read_with_its_etag_and_listed_by_filters() {
    let app = TestApp::spawn().await;
    let s = setup(&app).await;
    let (status, invoice) = create(
        &app,
        &s.admin.access_token,
        &new_invoice(s.project, "INV-1"),
    )
    .await;
    assert_eq!(status, 201, "{invoice}");
    assert_eq!(invoice["status"], "pending");
    assert_eq!(invoice["amount_minor"], 125_000);
    assert_eq!(invoice["currency"], "EUR");
    assert_eq!(invoice["due_on"], "2026-12-01");
    assert_eq!(invoice["created_by"], s.admin.user_id.to_string());
    assert!(invoice["pdf"].is_null());
    let id = invoice["id"].as_str().unwrap();

    let url = app.url(&format!("/api/v1/invoices/{id}"));
    let first = app
        .client
        .get(&url)
        .bearer_auth(&s.admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let tag = first.headers()["etag"].to_str().unwrap().to_owned();
    let not_modified = app
        .client
        .get(&url)
        .bearer_auth(&s.admin.access_token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    patch(
        &app,
        &s.admin.access_token,
        id,
        json!({"vendor": "Iron Ltd"}),
    )
    .await;
    let changed = app
        .client
        .get(&url)
        .bearer_auth(&s.admin.access_token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200, "a change makes a new tag");

    let other_project = fixtures::project(&app.pool, s.admin.organization_id, "Tunnel").await;
    let mut later = new_invoice(other_project, "INV-2");
    later["due_on"] = json!("2027-03-01");
    later["status"] = json!("draft");
    assert_eq!(create(&app, &s.admin.access_token, &later).await.0, 201);
    let list = |query: String| {
        let app = &app;
        let token = s.admin.access_token.clone();
        async move {
            let (status, body) = app
                .call_json(
                    Method::GET,
                    &format!("/api/v1/invoices{query}"),
                    Some(&token),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["number"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(String::new()).await, ["INV-2", "INV-1"]);
    assert_eq!(list(format!("?project_id={}", s.project)).await, ["INV-1"]);
    assert_eq!(list("?status=draft".into()).await, ["INV-2"]);
    assert_eq!(list("?due_from=2027-01-01".into()).await, ["INV-2"]);
    assert_eq!(list("?due_to=2026-12-01".into()).await, ["INV-1"]);
    assert_eq!(list("?limit=1".into()).await, ["INV-2"]);
}

#[tokio::test]
async fn invalid_invoices_are_422_naming_each_field_and_numbers_are_unique() {
    let app = TestApp::spawn().await;
    let s = setup(&app).await;
    let mut bad = new_invoice(s.project, "INV-1");
    bad["amount_minor"] = json!(-1);
    bad["currency"] = json!("euro");
    bad["due_on"] = json!("2026-10-01");
    bad["vendor"] = json!("  ");
    let (status, problem) = create(&app, &s.admin.access_token, &bad).await;
    assert_eq!(status, 422, "{problem}");
    let mut fields = field_names(&problem);
    fields.sort();
    assert_eq!(fields, ["amount_minor", "currency", "due_on", "vendor"]);

    let mut approved = new_invoice(s.project, "INV-1");
    approved["status"] = json!("approved");
    let (status, problem) = create(&app, &s.admin.access_token, &approved).await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["status".to_owned()])
    );

    let (status, problem) = create(
        &app,
        &s.admin.access_token,
        &new_invoice(Uuid::now_v7(), "INV-1"),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["project_id".to_owned()])
    );

    let mut missing = new_invoice(s.project, "INV-1");
    missing.as_object_mut().unwrap().remove("number");
    let (status, problem) = create(&app, &s.admin.access_token, &missing).await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["number".to_owned()])
    );

    let id = created(&app, &s, "INV-1").await;
    let (status, problem) = create(
        &app,
        &s.admin.access_token,
        &new_invoice(s.project, "INV-1"),
    )
    .await;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "invoice_number_taken");
    created(&app, &s, "INV-2").await;
    let (status, problem) =
        patch(&app, &s.admin.access_token, &id, json!({"number": "INV-2"})).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("invoice_number_taken"))
    );
    // Another organization may use the same number.
    let other = fixtures::register(&app, "o@example.com", "Other").await;
    let other_project = fixtures::project(&app.pool, other.organization_id, "P").await;
    let (status, _) = create(
        &app,
        &other.access_token,
        &new_invoice(other_project, "INV-1"),
    )
    .await;
    assert_eq!(status, 201);

    let (status, problem) = patch(
        &app,
        &s.admin.access_token,
        &id,
        json!({"due_on": "2026-01-01"}),
    )
    .await;
    assert_eq!(status, 422, "due before the stored issue date: {problem}");
    assert_eq!(field_names(&problem), ["due_on"]);
    let (status, problem) =
        patch(&app, &s.admin.access_token, &id, json!({"currency": null})).await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["currency".to_owned()])
    );
}

#[tokio::test]
async fn a_retried_create_with_the_same_key_replays_the_first_invoice() {
    let app = TestApp::spawn().await;
    let s = setup(&app).await;
    let send = |body: Value| {
        let app = &app;
        let token = s.admin.access_token.clone();
        async move {
            app.client
                .post(app.url("/api/v1/invoices"))
                .bearer_auth(token)
                .header("Idempotency-Key", "invoice-1")
                .json(&body)
                .send()
                .await
                .unwrap()
        }
    };
    let first = send(new_invoice(s.project, "INV-1")).await;
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(new_invoice(s.project, "INV-1")).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM invoices")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let other = send(new_invoice(s.project, "INV-9")).await;
    assert_eq!(other.status(), 400);
}

#[tokio::test]
async fn status_moves_only_along_the_transitions_and_approval_is_not_for_patch() {
    let app = TestApp::spawn().await;
    let s = setup(&app).await;
    let token = &s.admin.access_token;
    let id = created(&app, &s, "INV-1").await;

    for to in ["approved", "rejected"] {
        let (status, problem) = patch(&app, token, &id, json!({"status": to})).await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(problem["code"], "invoice_status_set_by_approval");
    }
    let (status, problem) = patch(&app, token, &id, json!({"status": "paid"})).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("invoice_transition_not_allowed"))
    );
    let (status, body) = patch(&app, token, &id, json!({"status": "draft"})).await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("draft"))
    );
    let (_, body) = patch(&app, token, &id, json!({"status": "pending"})).await;
    assert_eq!(body["status"], "pending");

    approve(&app, &id).await;
    let (status, problem) = patch(&app, token, &id, json!({"amount_minor": 1})).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("invoice_not_editable"))
    );
    let (status, body) = patch(&app, token, &id, json!({"status": "paid"})).await;
    assert_eq!(
        (status.as_u16(), body["status"].as_str()),
        (200, Some("paid")),
        "{body}"
    );
    let (status, problem) = patch(&app, token, &id, json!({"status": "void"})).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("invoice_transition_not_allowed"))
    );
    let (status, problem) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/invoices/{id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("invoice_not_deletable"))
    );

    let audited: Vec<Value> = sqlx::query_scalar(
        "SELECT metadata FROM audit_log WHERE action = 'invoice.status_changed' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited.len(), 3, "draft, pending, paid: {audited:?}");
    assert_eq!(audited[2]["to"], "paid");

    // Void, then delete.
    let other = created(&app, &s, "INV-2").await;
    let (_, body) = patch(&app, token, &other, json!({"status": "void"})).await;
    assert_eq!(body["status"], "void");
    let (status, _) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/invoices/{other}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let deleted: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'invoice.deleted'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(deleted, 1);
}

#[tokio::test]
async fn a_pdf_is_attached_replaced_downloaded_and_deleted_with_its_invoice() {
    let app = TestApp::spawn().await;
    let s = setup(&app).await;
    let token = &s.admin.access_token;
    let id = created(&app, &s, "INV-1").await;

    let (status, problem) = app
        .call_json(
            Method::GET,
            &format!("/api/v1/invoices/{id}/pdf"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (404, Some("invoice_pdf_not_found"))
    );

    let html = Form::new().file(
        "file",
        "invoice.pdf",
        "application/pdf",
        b"<html><body>pay here</body></html>",
    );
    let (status, problem) = put_pdf(&app, token, &id, &html).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let text = Form::new().file("file", "invoice.pdf", "application/pdf", b"just text");
    let (status, _) = put_pdf(&app, token, &id, &text).await;
    assert_eq!(
        status, 415,
        "text is allowed for documents, not as an invoice PDF"
    );
    assert!(pdf_key(&app, &id).await.is_none());

    let form = Form::new().file("file", "inv-1.pdf", "application/octet-stream", PDF);
    let (status, invoice) = put_pdf(&app, token, &id, &form).await;
    assert_eq!(status, 200, "{invoice}");
    assert_eq!(invoice["pdf"]["filename"], "inv-1.pdf");
    assert_eq!(invoice["pdf"]["sha256"], hex::encode(Sha256::digest(PDF)));
    let first_key = pdf_key(&app, &id).await.unwrap();
    assert!(object_path(&app, &first_key).exists());

    let second = b"%PDF-1.7\n% the corrected invoice\n%%EOF\n";
    let form = Form::new().file("file", "inv-1-v2.pdf", "application/pdf", second);
    let (status, invoice) = put_pdf(&app, token, &id, &form).await;
    assert_eq!(status, 200, "{invoice}");
    let second_key = pdf_key(&app, &id).await.unwrap();
    assert_ne!(first_key, second_key);
    assert!(
        !object_path(&app, &first_key).exists(),
        "the replaced PDF is deleted"
    );
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM stored_files")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(files, 1);

    let response = app
        .call(
            Method::GET,
            &format!("/api/v1/invoices/{id}/pdf"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/pdf");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    assert!(
        response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment; filename=\"inv-1-v2.pdf\"")
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), second);

    let (status, _) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/invoices/{id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(!object_path(&app, &second_key).exists());
    let files: i64 = sqlx::query_scalar("SELECT count(*) FROM stored_files")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(files, 0);
}

#[tokio::test]
async fn members_read_invoices_but_only_leads_write_them() {
    let app = TestApp::spawn().await;
    let s = setup(&app).await;
    let id = created(&app, &s, "INV-1").await;
    let member =
        fixtures::member(&app, s.admin.organization_id, "m@example.com", Role::Member).await;
    let viewer =
        fixtures::member(&app, s.admin.organization_id, "v@example.com", Role::Viewer).await;
    let lead = fixtures::member(&app, s.admin.organization_id, "l@example.com", Role::Lead).await;

    let (status, _) = app
        .call_json(
            Method::GET,
            &format!("/api/v1/invoices/{id}"),
            Some(&member.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = app
        .call_json(
            Method::GET,
            "/api/v1/invoices",
            Some(&viewer.access_token),
            None,
        )
        .await;
    assert_eq!(status, 403, "amounts are not for viewers");
    let (status, _) = create(&app, &member.access_token, &new_invoice(s.project, "INV-2")).await;
    assert_eq!(status, 403);
    let (status, _) = patch(&app, &member.access_token, &id, json!({"vendor": "X"})).await;
    assert_eq!(status, 403);
    let form = Form::new().file("file", "a.pdf", "application/pdf", PDF);
    let (status, _) = put_pdf(&app, &member.access_token, &id, &form).await;
    assert_eq!(status, 403);
    let (status, _) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/invoices/{id}"),
            Some(&member.access_token),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = create(&app, &lead.access_token, &new_invoice(s.project, "INV-2")).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn another_organization_gets_404_on_every_invoice_path() {
    let app = TestApp::spawn().await;
    let s = setup(&app).await;
    let id = created(&app, &s, "secret-of-a").await;
    let form = Form::new().file("file", "a.pdf", "application/pdf", PDF);
    assert_eq!(
        put_pdf(&app, &s.admin.access_token, &id, &form).await.0,
        200
    );
    let b = fixtures::register(&app, "b@example.com", "Other").await;
    for (method, path, body) in [
        (Method::GET, format!("/api/v1/invoices/{id}"), None),
        (Method::GET, format!("/api/v1/invoices/{id}/pdf"), None),
        (
            Method::PATCH,
            format!("/api/v1/invoices/{id}"),
            Some(json!({"status": "void"})),
        ),
        (Method::DELETE, format!("/api/v1/invoices/{id}"), None),
    ] {
        let response = app
            .call(method.clone(), &path, Some(&b.access_token), body.as_ref())
            .await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 404, "{method} {path}: {text}");
        assert!(!text.contains("secret-of-a"), "{text}");
    }
    assert_eq!(put_pdf(&app, &b.access_token, &id, &form).await.0, 404);
    let (_, list) = app
        .call_json(Method::GET, "/api/v1/invoices", Some(&b.access_token), None)
        .await;
    assert_eq!(list["items"], json!([]));
    // B cannot file an invoice under A's project either.
    let (status, problem) = create(&app, &b.access_token, &new_invoice(s.project, "B-1")).await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["project_id".to_owned()])
    );
    let (status, number): (String, String) =
        sqlx::query_as("SELECT status, number FROM invoices WHERE id = $1")
            .bind(id.parse::<Uuid>().unwrap())
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), number.as_str()),
        ("pending", "secret-of-a")
    );
}
