//! Team members' documents: uploads sniffed against the allow-list and bounded by the size
//! limit, stored in object storage (a local directory, or S3 through wiremock) with their
//! SHA-256, downloaded as attachments, deleted with their object, per tenant and per role.

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
    multipart::{Form, PDF, docx},
    wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{method, path, path_regex, query_param},
    },
};

async fn team_member(app: &TestApp, admin: &Account, email: &str) -> Uuid {
    let (status, body) = app
        .call_json(
            Method::POST,
            "/api/v1/team-members",
            Some(&admin.access_token),
            Some(&json!({"name": "Ada Lovelace", "email": email})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().parse().unwrap()
}

async fn setup(app: &TestApp) -> (Account, Uuid) {
    let admin = fixtures::register(app, "admin@example.com", "Acme").await;
    let member = team_member(app, &admin, "ada@example.com").await;
    (admin, member)
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn upload(
    app: &TestApp,
    token: &str,
    member: Uuid,
    form: &Form,
    key: Option<&str>,
) -> (StatusCode, Value) {
    json_of(
        app.upload(
            Method::POST,
            &format!("/api/v1/team-members/{member}/documents"),
            Some(token),
            form,
            key,
        )
        .await,
    )
    .await
}

fn object_path(app: &TestApp, key: &str) -> PathBuf {
    PathBuf::from(&app.settings.storage.local_dir).join(key)
}

async fn storage_key(app: &TestApp, document: &Value) -> String {
    sqlx::query_scalar(
        "SELECT f.storage_key FROM team_documents d JOIN stored_files f ON f.id = d.file_id
         WHERE d.id = $1",
    )
    .bind(document["id"].as_str().unwrap().parse::<Uuid>().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn stored_files(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM stored_files")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Every file under the storage directory.
fn objects(app: &TestApp) -> Vec<PathBuf> {
    fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        std::path::Path::new(&app.settings.storage.local_dir),
        &mut out,
    );
    out
}

#[tokio::test]
async fn an_uploaded_pdf_downloads_byte_for_byte_with_its_hash_stored() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    let form = Form::new()
        .file("file", "march.pdf", "application/pdf", PDF)
        .text("name", "March timesheet")
        .text("kind", "timesheet");
    let (status, document) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{document}");
    let sha = hex::encode(Sha256::digest(PDF));
    assert_eq!(document["name"], "March timesheet");
    assert_eq!(document["kind"], "timesheet");
    assert_eq!(document["filename"], "march.pdf");
    assert_eq!(document["content_type"], "application/pdf");
    assert_eq!(document["size_bytes"], PDF.len());
    assert_eq!(document["sha256"], sha);
    let (stored_sha, uploaded_by): (Vec<u8>, Option<Uuid>) = sqlx::query_as(
        "SELECT f.sha256, f.uploaded_by FROM team_documents d JOIN stored_files f ON f.id = d.file_id
         WHERE d.id = $1",
    )
    .bind(document["id"].as_str().unwrap().parse::<Uuid>().unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(hex::encode(stored_sha), sha);
    assert_eq!(uploaded_by, Some(admin.user_id));
    let key = storage_key(&app, &document).await;
    assert!(
        key.starts_with(&format!("organizations/{}/files/", admin.organization_id)),
        "{key}"
    );
    assert_eq!(std::fs::read(object_path(&app, &key)).unwrap(), PDF);

    let response = app
        .call(
            Method::GET,
            &format!(
                "/api/v1/documents/{}/content",
                document["id"].as_str().unwrap()
            ),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/pdf");
    assert_eq!(header("x-content-type-options"), "nosniff");
    assert_eq!(header("content-length"), PDF.len().to_string());
    assert!(
        header("content-disposition").starts_with("attachment; filename=\"march.pdf\""),
        "{}",
        header("content-disposition")
    );
    assert_eq!(response.bytes().await.unwrap().as_ref(), PDF);
}

#[tokio::test]
async fn documents_list_newest_first_by_kind_in_pages() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    for (filename, bytes, kind) in [
        ("a.csv", b"day,hours\nmon,8\n".as_slice(), "timesheet"),
        ("b.txt", b"notes".as_slice(), "report"),
        ("c.pdf", PDF, "timesheet"),
    ] {
        let form = Form::new()
            .file("file", filename, "application/octet-stream", bytes)
            .text("kind", kind);
        let (status, body) = upload(&app, &admin.access_token, member, &form, None).await;
        assert_eq!(status, 201, "{body}");
    }
    let list = |query: &'static str| {
        let app = &app;
        let token = admin.access_token.clone();
        async move {
            app.call_json(
                Method::GET,
                &format!("/api/v1/team-members/{member}/documents{query}"),
                Some(&token),
                None,
            )
            .await
        }
    };
    let (status, page) = list("?kind=timesheet&limit=1").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["items"][0]["filename"], "c.pdf");
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (_, next) = app
        .call_json(
            Method::GET,
            &format!("/api/v1/team-members/{member}/documents?kind=timesheet&cursor={cursor}"),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(next["items"][0]["filename"], "a.csv");
    assert_eq!(next["items"][0]["content_type"], "text/csv; charset=utf-8");
    assert_eq!(next["items"].as_array().unwrap().len(), 1);
    assert!(next["next_cursor"].is_null());
    let (_, reports) = list("?kind=report").await;
    assert_eq!(reports["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        reports["items"][0]["name"], "b.txt",
        "the name defaults to the file's"
    );
    let (status, problem) = list("?kind=memo").await;
    assert_eq!(status, 400, "{problem}");
}

#[tokio::test]
async fn the_type_comes_from_the_bytes_not_the_name_or_the_claimed_content_type() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    for (what, bytes) in [
        (
            "a Windows executable",
            b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff".as_slice(),
        ),
        (
            "an ELF executable",
            b"\x7fELF\x02\x01\x01\x00\x00\x00".as_slice(),
        ),
        (
            "an HTML page",
            b"<!DOCTYPE html><html><script>alert(1)</script></html>".as_slice(),
        ),
        (
            "a PNG image",
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".as_slice(),
        ),
    ] {
        let form = Form::new().file("file", "invoice.pdf", "application/pdf", bytes);
        let (status, problem) = upload(&app, &admin.access_token, member, &form, None).await;
        assert_eq!(status, 415, "{what}: {problem}");
        assert_eq!(problem["code"], "unsupported_media_type", "{what}");
    }
    assert_eq!(stored_files(&app).await, 0, "nothing refused is recorded");
    assert!(objects(&app).is_empty(), "nothing refused is stored");

    // Text claimed to be a PDF is stored as what it is.
    let form = Form::new().file("file", "notes.pdf", "application/pdf", "héllo".as_bytes());
    let (status, document) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{document}");
    assert_eq!(document["content_type"], "text/plain; charset=utf-8");

    let bytes = docx();
    let form = Form::new().file("file", "../../contract.docx", "text/plain", &bytes);
    let (status, document) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{document}");
    assert_eq!(
        document["content_type"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    assert_eq!(document["filename"], "contract.docx", "no path survives");
}

#[tokio::test]
async fn an_upload_over_the_limit_is_413_and_stores_nothing() {
    let app = TestApp::builder()
        .env("ZOARK_MAX_UPLOAD_BYTES", "1024")
        .spawn()
        .await;
    let (admin, member) = setup(&app).await;
    let big = "x".repeat(1025);
    let form = Form::new().file("file", "big.txt", "text/plain", big.as_bytes());
    let (status, problem) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 413, "{problem}");
    assert_eq!(problem["code"], "payload_too_large");
    assert_eq!(stored_files(&app).await, 0);
    assert!(objects(&app).is_empty());
    // The limit is on the file: exactly at it is fine.
    let form = Form::new().file("file", "ok.txt", "text/plain", &big.as_bytes()[..1024]);
    let (status, document) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{document}");
    assert_eq!(document["size_bytes"], 1024);
}

#[tokio::test]
async fn malformed_forms_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    let cases = [
        (Form::new().text("name", "no file"), "file"),
        (
            Form::new().file("file", "empty.txt", "text/plain", b""),
            "file",
        ),
        (
            Form::new()
                .file("file", "a.txt", "text/plain", b"a")
                .text("kind", "memo"),
            "kind",
        ),
        (
            Form::new()
                .file("file", "a.txt", "text/plain", b"a")
                .text("name", &"n".repeat(256)),
            "name",
        ),
        (
            Form::new()
                .file("file", "a.txt", "text/plain", b"a")
                .text("owner", "me"),
            "owner",
        ),
        (
            Form::new().file("file", "a.txt", "text/plain", b"a").file(
                "file",
                "b.txt",
                "text/plain",
                b"b",
            ),
            "file",
        ),
    ];
    for (form, field) in cases {
        let (status, problem) = upload(&app, &admin.access_token, member, &form, None).await;
        assert_eq!(status, 422, "{field}: {problem}");
        assert_eq!(field_names(&problem), vec![field.to_owned()], "{problem}");
    }
    let (status, problem) = app
        .call_json(
            Method::POST,
            &format!("/api/v1/team-members/{member}/documents"),
            Some(&admin.access_token),
            Some(&json!({"name": "not a form"})),
        )
        .await;
    assert_eq!(status, 415, "{problem}");
    assert_eq!(problem["code"], "unsupported_media_type");
    assert_eq!(stored_files(&app).await, 0);
    assert!(objects(&app).is_empty());
}

#[tokio::test]
async fn deleting_a_document_removes_its_object_and_rows_and_is_audited() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    let form = Form::new().file("file", "r.pdf", "application/pdf", PDF);
    let (_, document) = upload(&app, &admin.access_token, member, &form, None).await;
    let id = document["id"].as_str().unwrap().to_owned();
    let key = storage_key(&app, &document).await;
    assert!(object_path(&app, &key).exists());

    let (status, body) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/documents/{id}"),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    assert!(!object_path(&app, &key).exists(), "the object is gone");
    assert_eq!(stored_files(&app).await, 0);
    let (documents, audited): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM team_documents),
                (SELECT count(*) FROM audit_log WHERE action = 'document.deleted')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((documents, audited), (0, 1));
    for path in [
        format!("/api/v1/documents/{id}"),
        format!("/api/v1/documents/{id}/content"),
    ] {
        let (status, problem) = app
            .call_json(Method::GET, &path, Some(&admin.access_token), None)
            .await;
        assert_eq!(status, 404, "{path}");
        assert_eq!(problem["code"], "document_not_found");
    }
}

#[tokio::test]
async fn a_viewer_reads_documents_but_cannot_upload_or_delete_them() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    let viewer = fixtures::member(&app, admin.organization_id, "v@example.com", Role::Viewer).await;
    let form = Form::new().file("file", "r.pdf", "application/pdf", PDF);
    let (_, document) = upload(&app, &admin.access_token, member, &form, None).await;
    let id = document["id"].as_str().unwrap();

    let (status, problem) = upload(&app, &viewer.access_token, member, &form, None).await;
    assert_eq!(status, 403, "{problem}");
    assert_eq!(problem["code"], "forbidden");
    let (status, _) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/documents/{id}"),
            Some(&viewer.access_token),
            None,
        )
        .await;
    assert_eq!(status, 403);
    let response = app
        .call(
            Method::GET,
            &format!("/api/v1/documents/{id}/content"),
            Some(&viewer.access_token),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), PDF);
    // A member may upload.
    let user = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    let (status, body) = upload(&app, &user.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn another_organization_gets_404_on_every_document_path() {
    let app = TestApp::spawn().await;
    let (a, member) = setup(&app).await;
    let b = fixtures::register(&app, "b@example.com", "Other").await;
    let form = Form::new().file("file", "secret-of-a.pdf", "application/pdf", PDF);
    let (_, document) = upload(&app, &a.access_token, member, &form, None).await;
    let id = document["id"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, format!("/api/v1/documents/{id}")),
        (Method::GET, format!("/api/v1/documents/{id}/content")),
        (Method::DELETE, format!("/api/v1/documents/{id}")),
        (
            Method::GET,
            format!("/api/v1/team-members/{member}/documents"),
        ),
    ] {
        let response = app
            .call(method.clone(), &path, Some(&b.access_token), None)
            .await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 404, "{method} {path}: {text}");
        assert!(!text.contains("secret-of-a"), "{text}");
    }
    let (status, _) = upload(&app, &b.access_token, member, &form, None).await;
    assert_eq!(status, 404, "B cannot upload to A's member");
    assert_eq!(stored_files(&app).await, 1, "A's document is untouched");
}

#[tokio::test]
async fn a_retried_upload_replays_the_first_response_and_stores_once() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    let form = Form::new()
        .file("file", "r.pdf", "application/pdf", PDF)
        .text("kind", "report");
    let first = app
        .upload(
            Method::POST,
            &format!("/api/v1/team-members/{member}/documents"),
            Some(&admin.access_token),
            &form,
            Some("upload-1"),
        )
        .await;
    assert_eq!(first.status(), 201);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = app
        .upload(
            Method::POST,
            &format!("/api/v1/team-members/{member}/documents"),
            Some(&admin.access_token),
            &form,
            Some("upload-1"),
        )
        .await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(stored_files(&app).await, 1);
    assert_eq!(objects(&app).len(), 1);
    // The same key with other bytes is another request.
    let other = Form::new()
        .file("file", "r.pdf", "application/pdf", b"%PDF-1.4 other")
        .text("kind", "report");
    let (status, problem) =
        upload(&app, &admin.access_token, member, &other, Some("upload-1")).await;
    assert_eq!(status, 400, "{problem}");
    assert_eq!(field_names(&problem), vec!["Idempotency-Key".to_owned()]);
    assert_eq!(
        objects(&app).len(),
        1,
        "the refused retry left nothing behind"
    );
}

#[tokio::test]
async fn an_unchanged_document_answers_304_to_its_entity_tag() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    let form = Form::new().file("file", "r.pdf", "application/pdf", PDF);
    let (_, document) = upload(&app, &admin.access_token, member, &form, None).await;
    let url = app.url(&format!(
        "/api/v1/documents/{}",
        document["id"].as_str().unwrap()
    ));
    let first = app
        .client
        .get(&url)
        .bearer_auth(&admin.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let tag = first.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = first.json().await.unwrap();
    assert_eq!(body, document);
    let second = app
        .client
        .get(&url)
        .bearer_auth(&admin.access_token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), 304);
    assert_eq!(second.headers()["etag"].to_str().unwrap(), tag);
    let other = app
        .client
        .get(&url)
        .bearer_auth(&admin.access_token)
        .header("If-None-Match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);
}

#[tokio::test]
async fn documents_go_to_an_s3_compatible_bucket_when_one_is_configured() {
    let s3 = MockServer::start().await;
    let objects = r"^/zoark-documents/uploads/organizations/[0-9a-f-]{36}/files/[0-9a-f]{32}$";
    Mock::given(method("PUT"))
        .and(path_regex(objects))
        .respond_with(ResponseTemplate::new(200).insert_header("ETag", "\"etag-1\""))
        .expect(1)
        .mount(&s3)
        .await;
    Mock::given(method("GET"))
        .and(path_regex(objects))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("ETag", "\"etag-1\"")
                .insert_header("Last-Modified", "Thu, 26 Nov 2026 09:00:00 GMT")
                .insert_header("Content-Type", "application/octet-stream")
                .set_body_bytes(PDF),
        )
        .expect(1)
        .mount(&s3)
        .await;
    let app = TestApp::builder()
        .env("ZOARK_S3_BUCKET", "zoark-documents")
        .env("ZOARK_S3_ENDPOINT", s3.uri())
        .env("ZOARK_S3_REGION", "eu-west-1")
        .env("ZOARK_S3_ACCESS_KEY_ID", "test-access-key")
        .env("ZOARK_S3_SECRET_ACCESS_KEY", "test-secret-key")
        .spawn()
        .await;
    let (admin, member) = setup(&app).await;
    let form = Form::new().file("file", "r.pdf", "application/pdf", PDF);
    let (status, document) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{document}");
    let key = storage_key(&app, &document).await;
    assert!(key.starts_with("uploads/organizations/"), "{key}");
    let requests = s3.received_requests().await.unwrap();
    let put = requests
        .iter()
        .find(|r| r.method.as_str() == "PUT")
        .unwrap();
    assert_eq!(put.body, PDF);
    assert_eq!(put.url.path(), format!("/zoark-documents/{key}"));

    let id = document["id"].as_str().unwrap();
    let response = app
        .call(
            Method::GET,
            &format!("/api/v1/documents/{id}/content"),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), PDF);

    // object_store deletes through DeleteObjects (POST ?delete with the keys).
    Mock::given(method("POST"))
        .and(path("/zoark-documents"))
        .and(query_param("delete", ""))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "application/xml")
                .set_body_string(format!(
                    r#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Deleted><Key>{key}</Key></Deleted>
</DeleteResult>"#
                )),
        )
        .expect(1)
        .mount(&s3)
        .await;
    let (status, _) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/documents/{id}"),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let requests = s3.received_requests().await.unwrap();
    let delete = requests
        .iter()
        .find(|r| r.method.as_str() == "POST")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&delete.body).contains(&format!("<Key>{key}</Key>")),
        "the document's object was deleted"
    );
    assert_eq!(stored_files(&app).await, 0);
}

/// Runs the hourly prune job (which sweeps unreferenced files) and asserts it completed.
async fn run_prune(app: &TestApp) {
    let mut conn = app.pool.acquire().await.unwrap();
    let job = zoark_jobs::enqueue(
        &mut conn,
        &zoark_jobs::maintenance::PruneJobs {},
        zoark_jobs::Opts::platform(),
    )
    .await
    .unwrap()
    .id;
    app.drain_jobs(std::time::Duration::from_secs(20))
        .await
        .unwrap();
    let state: String = sqlx::query_scalar("SELECT state::text FROM jobs WHERE id = $1")
        .bind(job)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(state, "completed");
}

/// Moves every stored file's creation past the sweep's grace period.
async fn age_files(app: &TestApp, key: &str) {
    sqlx::query(
        "UPDATE stored_files SET created_at = now() - interval '2 hours' WHERE storage_key = $1",
    )
    .bind(key)
    .execute(&app.pool)
    .await
    .unwrap();
}

async fn file_row_exists(app: &TestApp, key: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM stored_files WHERE storage_key = $1)")
        .bind(key)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_prune_job_sweeps_the_files_of_a_deleted_member_and_keeps_referenced_and_fresh_ones() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    let kept_member = team_member(&app, &admin, "grace@example.com").await;
    let form = Form::new().file("file", "r.pdf", "application/pdf", PDF);
    let (status, gone) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{gone}");
    let (status, fresh) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{fresh}");
    let (status, kept) = upload(&app, &admin.access_token, kept_member, &form, None).await;
    assert_eq!(status, 201, "{kept}");
    let (gone, fresh, kept) = (
        storage_key(&app, &gone).await,
        storage_key(&app, &fresh).await,
        storage_key(&app, &kept).await,
    );
    age_files(&app, &gone).await;
    age_files(&app, &kept).await;
    let response = app
        .call(
            Method::DELETE,
            &format!("/api/v1/team-members/{member}"),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(response.status(), 204);
    // The cascade took the documents; the files are left to the sweep.
    assert!(file_row_exists(&app, &gone).await);
    assert!(object_path(&app, &gone).exists());

    run_prune(&app).await;

    assert!(
        !object_path(&app, &gone).exists(),
        "the orphan's object is deleted"
    );
    assert!(!file_row_exists(&app, &gone).await, "then its row");
    assert!(
        object_path(&app, &fresh).exists(),
        "an orphan inside the grace period stays"
    );
    assert!(file_row_exists(&app, &fresh).await);
    assert!(object_path(&app, &kept).exists(), "a referenced file stays");
    assert!(file_row_exists(&app, &kept).await);
    let response = app
        .call(
            Method::GET,
            &format!("/api/v1/team-members/{kept_member}/documents"),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_orphan_whose_object_is_already_gone_is_swept_without_error() {
    let app = TestApp::spawn().await;
    let (admin, member) = setup(&app).await;
    let form = Form::new().file("file", "r.pdf", "application/pdf", PDF);
    let (status, document) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{document}");
    let key = storage_key(&app, &document).await;
    age_files(&app, &key).await;
    sqlx::query("DELETE FROM team_documents")
        .execute(&app.pool)
        .await
        .unwrap();
    std::fs::remove_file(object_path(&app, &key)).unwrap();

    run_prune(&app).await;

    assert!(!file_row_exists(&app, &key).await);
    assert_eq!(stored_files(&app).await, 0);
}

#[tokio::test]
async fn an_orphan_whose_object_storage_refuses_the_delete_keeps_its_row_for_the_next_run() {
    let s3 = MockServer::start().await;
    let objects = r"^/zoark-documents/uploads/organizations/[0-9a-f-]{36}/files/[0-9a-f]{32}$";
    Mock::given(method("PUT"))
        .and(path_regex(objects))
        .respond_with(ResponseTemplate::new(200).insert_header("ETag", "\"etag-1\""))
        .mount(&s3)
        .await;
    // object_store deletes through the multi-object delete (`POST /bucket?delete`).
    Mock::given(method("POST"))
        .and(path("/zoark-documents"))
        .and(query_param("delete", ""))
        .respond_with(ResponseTemplate::new(403))
        .expect(1..)
        .mount(&s3)
        .await;
    let app = TestApp::builder()
        .env("ZOARK_S3_BUCKET", "zoark-documents")
        .env("ZOARK_S3_ENDPOINT", s3.uri())
        .env("ZOARK_S3_REGION", "eu-west-1")
        .env("ZOARK_S3_ACCESS_KEY_ID", "test-access-key")
        .env("ZOARK_S3_SECRET_ACCESS_KEY", "test-secret-key")
        .spawn()
        .await;
    let (admin, member) = setup(&app).await;
    let form = Form::new().file("file", "r.pdf", "application/pdf", PDF);
    let (status, document) = upload(&app, &admin.access_token, member, &form, None).await;
    assert_eq!(status, 201, "{document}");
    let key = storage_key(&app, &document).await;
    age_files(&app, &key).await;
    sqlx::query("DELETE FROM team_documents")
        .execute(&app.pool)
        .await
        .unwrap();

    run_prune(&app).await;

    assert!(
        file_row_exists(&app, &key).await,
        "the row waits for the object"
    );
}

/// Sends a document upload by hand over TCP: the first `held` bytes of the body, then waits for
/// `release` before the rest; returns the status line and body of the answer.
async fn upload_held(
    app: &TestApp,
    token: &str,
    member: Uuid,
    form: &Form,
    held: usize,
    release: tokio::sync::oneshot::Receiver<()>,
) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let body = form.body();
    let head = format!(
        "POST /api/v1/team-members/{member}/documents HTTP/1.1\r\nHost: {address}\r\n\
         Authorization: Bearer {token}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        form.content_type(),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..held]).await.unwrap();
    release.await.unwrap();
    stream.write_all(&body[held..]).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test]
async fn uploads_stream_through_and_a_replica_receives_a_bounded_number_at_once() {
    let app = TestApp::builder()
        .env("ZOARK_MAX_CONCURRENT_UPLOADS", "1")
        .spawn()
        .await;
    let (admin, member) = setup(&app).await;
    // A 3 MB text file, much larger than the sniffer's head and the read buffers, with a
    // multi-byte character on every line.
    let text: String = (0..60_000)
        .map(|i| format!("line {i:06} – ✓ ok\n"))
        .collect();
    let big = Form::new()
        .file("file", "log.txt", "text/plain", text.as_bytes())
        .text("name", "Log")
        .text("kind", "report");
    let (release, held) = tokio::sync::oneshot::channel();
    let first = {
        let (app, token) = (&app, admin.access_token.clone());
        let big = &big;
        async move { upload_held(app, &token, member, big, 1_000_000, held).await }
    };
    let second = async {
        // The first holds the only slot, half sent: the second waits 5 s, then is turned away.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let small = Form::new()
            .file("file", "a.txt", "text/plain", b"hello")
            .text("name", "A")
            .text("kind", "report");
        let started = std::time::Instant::now();
        let response = app
            .upload(
                Method::POST,
                &format!("/api/v1/team-members/{member}/documents"),
                Some(&admin.access_token),
                &small,
                None,
            )
            .await;
        let waited = started.elapsed();
        let retry_after = response.headers().get("retry-after").cloned();
        let (status, body) = json_of(response).await;
        release.send(()).unwrap();
        (status, body, retry_after, waited)
    };
    let (answer, (status, body, retry_after, waited)) = tokio::join!(first, second);
    assert_eq!(
        (status.as_u16(), body["code"].as_str()),
        (503, Some("uploads_busy")),
        "{body}"
    );
    assert!(retry_after.is_some());
    assert!(waited >= std::time::Duration::from_secs(4), "{waited:?}");
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let document: Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(document["size_bytes"], text.len());
    assert_eq!(
        document["sha256"],
        hex::encode(Sha256::digest(text.as_bytes()))
    );
    // Stored byte for byte; and with the slot free again, the next upload is taken.
    let stored = std::fs::read(object_path(&app, &storage_key(&app, &document).await)).unwrap();
    assert!(stored == text.as_bytes());
    let small = Form::new()
        .file("file", "b.txt", "text/plain", b"world")
        .text("name", "B")
        .text("kind", "report");
    let (status, _) = upload(&app, &admin.access_token, member, &small, None).await;
    assert_eq!(status, 201);
}
