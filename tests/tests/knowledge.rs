//! The knowledge base and search: documents uploaded in several formats are extracted, cut into
//! chunks, embedded by the local model and found by keyword and by meaning, with citations;
//! per tenant, per role and per source; files without text end `failed` with the reason.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use zoark_core::access::Role;
use zoark_embed::{
    chunk::Section,
    extract::{self, ExtractError, Format},
};
use zoark_tests::{
    TestApp,
    fixtures::{self, Account},
    multipart::{Form, PDF, docx_with, encrypted_pdf, pdf_with_text},
};

const PDF_PHRASE: &str = "lubricated every forty operating hours with ISO VG 46 oil";
const DOCX_PHRASE: &str = "sixteen weeks of paid parental leave";
const HTML_PHRASE: &str = "equal weights of flour and water";

fn manual_pdf() -> Vec<u8> {
    pdf_with_text(&[
        &[
            "Hydraulic press P-200: operating manual.",
            "Read every safety instruction before switching the press on.",
        ],
        &[
            "Maintenance schedule.",
            "The hydraulic press must be lubricated every forty operating hours",
            "with ISO VG 46 oil, and its filters replaced twice a year.",
        ],
    ])
}

fn policy_docx() -> Vec<u8> {
    docx_with(&[
        (Some("Title"), "Employee handbook"),
        (
            None,
            "This handbook describes the benefits of every employee of Acme.",
        ),
        (Some("Heading1"), "Parental leave"),
        (
            None,
            "Employees are entitled to sixteen weeks of paid parental leave after the birth or \
             adoption of a child.",
        ),
    ])
}

const GUIDE_HTML: &str = r#"<!DOCTYPE html>
<html><head><title>Bakery</title><style>p { color: red }</style>
<script>var ignored = "javascript text is not indexed";</script></head>
<body><h1>Sourdough baking guide</h1>
<p>Good bread takes time.</p>
<h2>Feeding the starter</h2>
<p>Feed the starter with equal weights of flour and water twelve hours before mixing the dough.</p>
</body></html>"#;

async fn upload(app: &TestApp, token: &str, name: &str, bytes: &[u8]) -> (StatusCode, Value) {
    let form = Form::new().file("file", name, "application/octet-stream", bytes);
    let response = app
        .upload(Method::POST, "/api/v1/knowledge", Some(token), &form, None)
        .await;
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn uploaded(app: &TestApp, token: &str, name: &str, bytes: &[u8]) -> String {
    let (status, body) = upload(app, token, name, bytes).await;
    assert_eq!(status, 201, "{name}: {body}");
    assert_eq!(body["status"], "pending", "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn document(app: &TestApp, token: &str, id: &str) -> Value {
    let (status, body) = app
        .call_json(
            Method::GET,
            &format!("/api/v1/knowledge/{id}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn search(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let url = format!(
        "/api/v1/search?q={}",
        url::form_urlencoded::byte_serialize(query.as_bytes()).collect::<String>()
    );
    let (status, body) = app.call_json(Method::GET, &url, Some(token), None).await;
    assert_eq!(status, 200, "{query}: {body}");
    body["items"].as_array().unwrap().clone()
}

async fn drain(app: &TestApp) {
    app.drain_jobs(Duration::from_secs(120)).await.unwrap();
}

#[tokio::test]
async fn pdf_docx_and_html_are_found_by_keyword_and_by_meaning_with_citations() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Acme").await;
    let token = &admin.access_token;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool)
        .await
        .unwrap();
    listener.listen("zoark_job_events").await.unwrap();
    let pdf = uploaded(&app, token, "press-manual.pdf", &manual_pdf()).await;
    let docx = uploaded(&app, token, "handbook.docx", &policy_docx()).await;
    let html = uploaded(&app, token, "bakery.html", GUIDE_HTML.as_bytes()).await;
    // Unrelated documents the right ones must outrank.
    uploaded(
        &app,
        token,
        "sales.txt",
        b"The quarterly sales report shows revenue growth in the northern region, led by \
          new customers in the retail sector.",
    )
    .await;
    uploaded(
        &app,
        token,
        "wifi.md",
        b"# Office network\n\nThe guest wireless network password changes every Monday.\n",
    )
    .await;
    uploaded(
        &app,
        token,
        "travel.csv",
        b"city,hotel,nights\nLisbon,Hotel Mar,3\nOslo,Fjord Inn,2\n",
    )
    .await;
    drain(&app).await;

    // Progress reached the job event stream, batch by batch, as the API reads it.
    let mut progress = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), listener.recv()).await {
        let events: Vec<zoark_api::events::JobEvent> = serde_json::from_str(n.payload()).unwrap();
        progress.extend(
            events
                .into_iter()
                .filter_map(|e| e.progress.map(|p| (e.kind, p))),
        );
    }
    assert!(!progress.is_empty());
    assert!(
        progress
            .iter()
            .all(|(kind, p)| kind == "rag.index_document" && p.done >= 1 && p.done <= p.total)
    );
    for id in [&pdf, &docx, &html] {
        let doc = document(&app, token, id).await;
        assert_eq!(doc["status"], "indexed", "{doc}");
        assert_eq!(doc["embedding_model"], "all-MiniLM-L6-v2", "{doc}");
        assert!(doc["chunks_total"].as_i64().unwrap() >= 1, "{doc}");
        assert_eq!(doc["chunks_done"], doc["chunks_total"], "{doc}");
        assert!(doc["error"].is_null(), "{doc}");
    }

    // Keyword: a phrase of each document ranks it first, its terms marked in the snippet.
    for (phrase, id) in [
        (PDF_PHRASE, &pdf),
        (DOCX_PHRASE, &docx),
        (HTML_PHRASE, &html),
    ] {
        let items = search(&app, token, phrase).await;
        assert_eq!(items[0]["document_id"], id.as_str(), "{phrase}: {items:#?}");
        assert_eq!(items[0]["source_type"], "knowledge");
        assert!(
            items[0]["snippet"].as_str().unwrap().contains("<mark>"),
            "{items:#?}"
        );
    }
    // Meaning: a paraphrase that shares (almost) no word with the text.
    for (paraphrase, id) in [
        ("how often should the machine be greased", &pdf),
        ("how much time off do new mothers and fathers get", &docx),
        ("preparing the yeast culture for bread", &html),
    ] {
        let items = search(&app, token, paraphrase).await;
        assert_eq!(
            items[0]["document_id"],
            id.as_str(),
            "{paraphrase}: {items:#?}"
        );
    }
    // Citations: the PDF's page, the DOCX's and the HTML's headings.
    let top = &search(&app, token, PDF_PHRASE).await[0];
    assert_eq!(top["citation"]["page"], 2, "{top}");
    assert_eq!(top["title"], "press-manual.pdf");
    let top = &search(&app, token, DOCX_PHRASE).await[0];
    assert_eq!(top["citation"]["heading"], "Parental leave", "{top}");
    let top = &search(&app, token, HTML_PHRASE).await[0];
    assert_eq!(top["citation"]["heading"], "Feeding the starter", "{top}");
    assert!(top["citation"]["page"].is_null());
    // Scripts are not text.
    assert!(
        search(&app, token, "javascript text is not indexed")
            .await
            .iter()
            .all(|i| !i["snippet"].as_str().unwrap().contains("javascript")),
    );

    // Another organization finds nothing of it, by keyword or meaning.
    let other = fixtures::register(&app, "other@example.com", "Globex").await;
    assert!(
        search(&app, &other.access_token, PDF_PHRASE)
            .await
            .is_empty()
    );
    assert!(
        search(
            &app,
            &other.access_token,
            "how often should the machine be greased"
        )
        .await
        .is_empty()
    );
    let (status, _) = app
        .call_json(
            Method::GET,
            &format!("/api/v1/knowledge/{pdf}"),
            Some(&other.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Deleting a document removes it from search at once.
    let (status, _) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/knowledge/{html}"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let items = search(&app, token, HTML_PHRASE).await;
    assert!(
        items.iter().all(|i| i["document_id"] != html.as_str()),
        "{items:#?}"
    );
    let chunks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM rag_chunks WHERE document_id = $1::uuid")
            .bind(&html)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(chunks, 0);
    app.stop().await;
}

async fn put_invoice_pdf(app: &TestApp, admin: &Account, id: &str, text: &str) {
    let form = Form::new().file(
        "file",
        "inv.pdf",
        "application/pdf",
        &pdf_with_text(&[&[text]]),
    );
    let response = app
        .upload(
            Method::PUT,
            &format!("/api/v1/invoices/{id}/pdf"),
            Some(&admin.access_token),
            &form,
            None,
        )
        .await;
    assert_eq!(response.status(), 200);
}

async fn invoice_with_pdf(app: &TestApp, admin: &Account, text: &str) -> String {
    let project = fixtures::project(&app.pool, admin.organization_id, "Bridge").await;
    let (status, body) = app
        .call_json(
            Method::POST,
            "/api/v1/invoices",
            Some(&admin.access_token),
            Some(&json!({
                "project_id": project, "number": "INV-7", "vendor": "Steel & Co",
                "amount_minor": 125_000, "currency": "EUR",
                "issued_on": "2026-11-01", "due_on": "2026-12-01",
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    put_invoice_pdf(app, admin, &id, text).await;
    id
}

#[tokio::test]
async fn invoice_text_is_found_only_by_those_who_may_read_invoices() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Acme").await;
    let phrase = "structural steel beams delivered to the bridge site";
    invoice_with_pdf(&app, &admin, &format!("Invoice for {phrase}.")).await;
    drain(&app).await;
    let member = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    let viewer = fixtures::member(&app, admin.organization_id, "v@example.com", Role::Viewer).await;
    let items = search(&app, &member.access_token, phrase).await;
    assert_eq!(items[0]["source_type"], "invoice", "{items:#?}");
    assert_eq!(items[0]["title"], "Invoice INV-7");
    assert!(search(&app, &viewer.access_token, phrase).await.is_empty());
    let (status, body) = app
        .call_json(
            Method::GET,
            "/api/v1/search?q=steel&source_type=invoice",
            Some(&viewer.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["items"], json!([]));
    // Replacing the PDF re-indexes the invoice: the old text goes, the new is found.
    let id: String = sqlx::query_scalar("SELECT id::text FROM invoices")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    put_invoice_pdf(&app, &admin, &id, "Invoice for concrete pillars.").await;
    drain(&app).await;
    let items = search(&app, &member.access_token, "structural steel beams").await;
    assert!(
        items
            .iter()
            .all(|i| !i["snippet"].as_str().unwrap().contains("steel")),
        "{items:#?}"
    );
    let items = search(&app, &member.access_token, "concrete pillars").await;
    assert_eq!(items[0]["source_type"], "invoice", "{items:#?}");
    let generations: i64 = sqlx::query_scalar("SELECT count(DISTINCT generation) FROM rag_chunks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(generations, 1, "the old generation's chunks are gone");
    app.stop().await;
}

#[tokio::test]
async fn team_documents_are_indexed_as_their_own_source() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Acme").await;
    let (status, body) = app
        .call_json(
            Method::POST,
            "/api/v1/team-members",
            Some(&admin.access_token),
            Some(&json!({"name": "Ada Lovelace", "email": "ada@example.com"})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let member = body["id"].as_str().unwrap().to_owned();
    let form = Form::new().file(
        "file",
        "contract.docx",
        "application/octet-stream",
        &docx_with(&[(None, "The analytical engine contract runs until March.")]),
    );
    let response = app
        .upload(
            Method::POST,
            &format!("/api/v1/team-members/{member}/documents"),
            Some(&admin.access_token),
            &form,
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
    let document: Value = response.json().await.unwrap();
    drain(&app).await;
    let items = search(&app, &admin.access_token, "analytical engine contract").await;
    assert_eq!(items[0]["source_type"], "team_document", "{items:#?}");
    assert_eq!(items[0]["title"], "contract.docx");
    // Deleting the team document deletes its index.
    let (status, _) = app
        .call_json(
            Method::DELETE,
            &format!("/api/v1/documents/{}", document["id"].as_str().unwrap()),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert!(
        search(&app, &admin.access_token, "analytical engine contract")
            .await
            .is_empty()
    );
    app.stop().await;
}

#[tokio::test]
async fn files_without_text_fail_with_the_reason_and_are_not_retried() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Acme").await;
    let token = &admin.access_token;
    let encrypted = uploaded(&app, token, "locked.pdf", &encrypted_pdf()).await;
    let scan = uploaded(&app, token, "scan.pdf", &pdf_with_text(&[&[]])).await;
    let broken = uploaded(&app, token, "broken.pdf", PDF).await;
    let empty_docx = uploaded(&app, token, "empty.docx", &docx_with(&[])).await;
    drain(&app).await;
    for (id, reason) in [
        (&encrypted, "encrypted"),
        (&scan, "no text layer"),
        (&broken, "cannot be read as PDF"),
        (&empty_docx, "no text"),
    ] {
        let doc = document(&app, token, id).await;
        assert_eq!(doc["status"], "failed", "{doc}");
        assert!(
            doc["error"].as_str().unwrap().contains(reason),
            "{reason}: {doc}"
        );
        assert_eq!(doc["chunks_done"], 0);
    }
    // Their jobs completed (a retry would read the same bytes).
    let states: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT state FROM jobs WHERE kind = 'rag.index_document'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(states, ["completed"]);
    let (status, body) = app
        .call_json(
            Method::GET,
            "/api/v1/knowledge?status=failed",
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["items"].as_array().unwrap().len(), 4, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_same_bytes_are_one_document_and_a_reindex_replaces_chunks_at_once() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Acme").await;
    let token = &admin.access_token;
    let id = uploaded(&app, token, "bakery.html", GUIDE_HTML.as_bytes()).await;
    let (status, body) = upload(&app, token, "copy.html", GUIDE_HTML.as_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], id.as_str());
    drain(&app).await;
    let total = document(&app, token, &id).await["chunks_total"].clone();
    let (status, body) = app
        .call_json(
            Method::POST,
            &format!("/api/v1/knowledge/{id}/reindex"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "pending");
    // Until the new generation is switched in, the old one is still found.
    assert_eq!(
        search(&app, token, HTML_PHRASE).await[0]["document_id"],
        id.as_str()
    );
    drain(&app).await;
    let doc = document(&app, token, &id).await;
    assert_eq!(doc["status"], "indexed");
    let (chunks, generations): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT generation) FROM rag_chunks WHERE document_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(Value::from(chunks), total);
    assert_eq!(generations, 1);
    // Indexed by another model (say, before the provider changed): the next worker to start
    // re-indexes it with the configured one.
    sqlx::query("UPDATE rag_documents SET embedding_model = 'older-model'")
        .execute(&app.pool)
        .await
        .unwrap();
    drain(&app).await;
    let doc = document(&app, token, &id).await;
    assert_eq!(doc["embedding_model"], "all-MiniLM-L6-v2", "{doc}");
    assert_eq!(doc["status"], "indexed");
    let (generation, reindexes): (i32, i64) = sqlx::query_as(
        "SELECT (SELECT generation FROM rag_documents),
                (SELECT count(*) FROM jobs WHERE kind = 'rag.reindex_organization')",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((generation, reindexes), (3, 1));
    // Refused: files that are not documents, and bad parameters.
    let (status, body) = upload(
        &app,
        token,
        "a.zip",
        &zoark_tests::multipart::zip(&[("a", b"b")]),
    )
    .await;
    assert_eq!(status, 415, "{body}");
    for query in ["q=", "q=x&limit=51", "q=x&language=klingon", "limit=5"] {
        let (status, body) = app
            .call_json(
                Method::GET,
                &format!("/api/v1/search?{query}"),
                Some(token),
                None,
            )
            .await;
        assert!(status == 400 || status == 422, "{query}: {status} {body}");
    }
    app.stop().await;
}

#[test]
fn extraction_keeps_headings_pages_and_structure_of_every_format() {
    let sections = extract::extract(Format::Pdf, &manual_pdf()).unwrap();
    assert_eq!(sections[0].page, Some(1));
    assert!(
        sections
            .iter()
            .any(|s| s.page == Some(2) && s.text.contains("ISO VG 46"))
    );
    let sections = extract::extract(Format::Docx, &policy_docx()).unwrap();
    assert_eq!(
        sections.last().unwrap(),
        &Section {
            page: None,
            heading: Some("Parental leave".into()),
            text: "Employees are entitled to sixteen weeks of paid parental leave after the \
                   birth or adoption of a child."
                .into(),
        }
    );
    let sections = extract::extract(Format::Html, GUIDE_HTML.as_bytes()).unwrap();
    assert_eq!(
        sections[0].heading.as_deref(),
        Some("Sourdough baking guide")
    );
    assert!(
        sections
            .iter()
            .all(|s| !s.text.contains("ignored") && !s.text.contains("color"))
    );
    let sections = extract::extract(
        Format::Markdown,
        b"intro\n\n## Setup\nrun it\n```\n# not a heading\n```\n",
    )
    .unwrap();
    assert_eq!(sections[1].heading.as_deref(), Some("Setup"));
    assert!(sections[1].text.contains("# not a heading"));
    let sections = extract::extract(Format::Csv, b"city,nights\nLisbon,3\n").unwrap();
    assert_eq!(sections[0].text, "city: Lisbon\nnights: 3");
    let sections = extract::extract(Format::Json, br#"{"a": {"b": [1, "x"]}, "c": null}"#).unwrap();
    assert_eq!(sections[0].text, "a.b[0]: 1\na.b[1]: x");
    assert_eq!(
        extract::extract(Format::Pdf, &encrypted_pdf()),
        Err(ExtractError::Encrypted)
    );
    assert_eq!(
        extract::extract(Format::Pdf, &pdf_with_text(&[&[], &[]])),
        Err(ExtractError::NoTextLayer)
    );
    assert!(matches!(
        extract::extract(Format::Pdf, b"%PDF-1.4 garbage"),
        Err(ExtractError::Unreadable { .. })
    ));
    assert!(matches!(
        extract::extract(Format::Docx, b"PK not a zip"),
        Err(ExtractError::Unreadable { .. })
    ));
    assert_eq!(
        extract::extract(Format::Text, b"   \n "),
        Err(ExtractError::Empty)
    );
}

#[test]
fn uploads_are_accepted_by_what_their_bytes_are() {
    use zoark_core::files::{Accept, FileType, sniff_accepted};
    let documents = Accept::Documents;
    assert_eq!(
        sniff_accepted(GUIDE_HTML.as_bytes(), "a.txt", documents),
        Ok(FileType::Html)
    );
    assert_eq!(
        sniff_accepted(b"# T\n", "a.md", documents),
        Ok(FileType::Markdown)
    );
    assert_eq!(
        sniff_accepted(&policy_docx(), "x", documents),
        Ok(FileType::Docx)
    );
    assert!(sniff_accepted(GUIDE_HTML.as_bytes(), "a.html", Accept::Uploads).is_err());
    assert!(
        sniff_accepted(
            &zoark_tests::multipart::zip(&[("a", b"b")]),
            "a.zip",
            documents
        )
        .is_err()
    );
}

/// An OpenAI-compatible `/embeddings` endpoint: each input's vector counts the words of a few
/// themes (so that texts about one theme are near), `usage` counts the words.
struct ThemeEmbeddings;

const THEMES: [&[&str]; 4] = [
    &[
        "press",
        "hydraulic",
        "oil",
        "lubricated",
        "machine",
        "greased",
    ],
    &["leave", "parental", "parents", "weeks", "child"],
    &["bread", "starter", "flour", "dough", "yeast"],
    &["sales", "revenue", "customers", "region"],
];

impl wiremock::Respond for ThemeEmbeddings {
    fn respond(&self, request: &wiremock::Request) -> wiremock::ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let inputs: Vec<String> = body["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_lowercase())
            .collect();
        let mut words = 0;
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(index, text)| {
                words += text.split_whitespace().count();
                let mut v: Vec<f32> = THEMES
                    .iter()
                    .map(|theme| theme.iter().filter(|w| text.contains(*w)).count() as f32)
                    .collect();
                v.extend([0.1; 4]);
                json!({"object": "embedding", "index": index, "embedding": v})
            })
            .rev() // out of order, as the API allows
            .collect();
        wiremock::ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "model": body["model"], "data": data,
            "usage": {"prompt_tokens": words, "total_tokens": words},
        }))
    }
}

#[tokio::test]
async fn an_openai_compatible_provider_embeds_with_snoozes_on_429_and_retries_on_5xx() {
    use zoark_tests::{
        peers::Peers,
        wiremock::{
            Mock, ResponseTemplate,
            matchers::{header, method, path},
        },
    };
    let peers = Peers::start().await;
    let app = TestApp::builder()
        .peers(&peers)
        .env("ZOARK_EMBEDDING_PROVIDER", "openai")
        .env("ZOARK_EMBEDDING_MODEL", "theme-embedder")
        .env("ZOARK_EMBEDDING_DIMENSIONS", "8")
        .spawn()
        .await;
    // Rate limited first, then down once, then answering.
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_string("slow down"),
        )
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&peers.embeddings)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(503).set_body_string("overloaded"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&peers.embeddings)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .and(header("authorization", "Bearer test-embedding-key"))
        .respond_with(ThemeEmbeddings)
        .with_priority(3)
        .mount(&peers.embeddings)
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Acme").await;
    let token = &admin.access_token;
    let pdf = uploaded(&app, token, "press-manual.pdf", &manual_pdf()).await;
    uploaded(&app, token, "bakery.html", GUIDE_HTML.as_bytes()).await;

    // The 429 snoozes the job for its Retry-After without spending an attempt.
    drain(&app).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drain(&app).await;
    // The 503 is an attempt that failed: retried after its backoff, the error kept.
    let (state, errors): (String, Value) = sqlx::query_as(
        "SELECT state, errors FROM jobs WHERE kind = 'rag.index_document'
         AND jsonb_array_length(errors) > 0",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(state, "retryable");
    assert!(
        errors[0]["error"].as_str().unwrap().contains("503"),
        "{errors}"
    );
    sqlx::query("UPDATE jobs SET run_at = now() WHERE state = 'retryable'")
        .execute(&app.pool)
        .await
        .unwrap();
    drain(&app).await;
    let doc = document(&app, token, &pdf).await;
    assert_eq!(doc["status"], "indexed", "{doc}");
    assert_eq!(doc["embedding_model"], "theme-embedder");
    assert!(doc["embedding_tokens"].as_i64().unwrap() > 10, "{doc}");
    let attempts: Vec<i32> =
        sqlx::query_scalar("SELECT attempt FROM jobs WHERE kind = 'rag.index_document'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(
        attempts.iter().all(|a| *a <= 2),
        "{attempts:?}: the snooze spent none"
    );
    // The query is embedded by the same provider: found by meaning through it.
    let items = search(&app, token, "how often should the machine be greased").await;
    assert_eq!(items[0]["document_id"], pdf.as_str(), "{items:#?}");
    app.stop().await;
}

/// A document indexed by the indexer's own functions with `count` chunks of `text`, each
/// embedded as `vector` (generation 1, switched to), then re-indexed as far as `written.0` chunks
/// of `written.1` embedded as `written.2` (generation 2, written but not yet switched to).
async fn document_with_generations(
    pool: &sqlx::PgPool,
    organization: uuid::Uuid,
    (count, text, vector): (i32, &str, Vec<f32>),
    written: (i32, &str, Vec<f32>),
) -> uuid::Uuid {
    use zoark_core::db::knowledge::{self, NewChunk};
    let document: uuid::Uuid = sqlx::query_scalar(
        "WITH f AS (INSERT INTO stored_files (organization_id, storage_key, filename, content_type,
                                              size_bytes, sha256)
                    VALUES ($1, gen_random_uuid()::text, 'a.txt', 'text/plain', 1,
                            sha256(gen_random_uuid()::text::bytea))
                    RETURNING id)
         INSERT INTO rag_documents (organization_id, title, source_type, file_id, content_type,
                                    content_sha256)
         SELECT $1, 'Doc', 'knowledge', f.id, 'text/plain', sha256(f.id::text::bytea)
         FROM f RETURNING id",
    )
    .bind(organization)
    .fetch_one(pool)
    .await
    .unwrap();
    let chunks = |n: i32, text: &str, vector: &[f32]| -> Vec<NewChunk> {
        (0..n)
            .map(|ordinal| NewChunk {
                ordinal,
                content: text.to_owned(),
                token_count: 3,
                page: None,
                heading: None,
                embedding: vector.to_vec(),
            })
            .collect()
    };
    let model = "all-MiniLM-L6-v2";
    let mut conn = pool.acquire().await.unwrap();
    let first = knowledge::begin_indexing(&mut conn, document)
        .await
        .unwrap()
        .unwrap();
    knowledge::write_chunks(&mut conn, &first, model, &chunks(count, text, &vector), 0)
        .await
        .unwrap();
    assert!(
        knowledge::finish(&mut conn, &first, model, 384)
            .await
            .unwrap()
    );
    let second = knowledge::begin_indexing(&mut conn, document)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.generation, 2);
    let (n, text, vector) = written;
    if n > 0 {
        knowledge::write_chunks(&mut conn, &second, model, &chunks(n, text, &vector), 0)
            .await
            .unwrap();
    }
    document
}

#[tokio::test]
async fn a_generation_being_written_is_never_searched_nor_crowds_the_current_one_out() {
    use zoark_core::{
        access::{Actor, Principal, ReadKnowledge},
        db::{
            knowledge::{self, Language, SearchQuery},
            tenant,
        },
        knowledge::SourceType,
    };
    let app = TestApp::spawn().await;
    let org = fixtures::organization(&app.pool, "Acme").await;
    let unit = |sign: f32| {
        let mut v = vec![0.0f32; 384];
        v[0] = sign;
        v
    };
    // Three current chunks that mention zebras, far from the query's vector; their document's
    // re-index has written 120 chunks that mention them more and sit on the query's vector (better
    // ranked both ways, not yet current); 60 current chunks of another document sit on the query's
    // vector too.
    let zebras = document_with_generations(
        &app.pool,
        org,
        (3, "a zebra crossed the road", unit(-1.0)),
        (120, "zebra zebra zebra, all zebras", unit(1.0)),
    )
    .await;
    document_with_generations(
        &app.pool,
        org,
        (60, "the quarterly budget review", unit(1.0)),
        (0, "", Vec::new()),
    )
    .await;

    let proof = Principal::authenticated(
        org,
        Role::Admin,
        Actor::ApiKey {
            key_id: uuid::Uuid::nil(),
        },
    )
    .authorize::<ReadKnowledge>()
    .unwrap();
    let mut tx = tenant::begin(&app.pool, &proof).await.unwrap();
    let hits = knowledge::search(
        &mut tx,
        &proof,
        &SearchQuery {
            text: "zebra",
            vector: unit(1.0),
            model: "all-MiniLM-L6-v2",
            sources: SourceType::ALL.to_vec(),
            from: None,
            to: None,
            language: Language::ENGLISH,
            limit: 10,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let found: Vec<i32> = hits
        .iter()
        .filter(|h| h.document_id == zebras)
        .map(|h| h.chunk_ordinal)
        .collect();
    assert_eq!(
        found.len(),
        3,
        "the current chunks with the word: {found:?}"
    );
    assert!(hits.iter().all(|h| !h.snippet.contains("all zebras")));
    app.stop().await;
}
