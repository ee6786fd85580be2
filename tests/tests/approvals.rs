//! Approval pipelines: templates (create idempotent, list, ETag, patch replacing stages,
//! archive, delete), approvals moving through their stages with emails to each stage's
//! approvers, decisions only by approvers and one at a time, invoices following the outcome,
//! and overdue nudges with escalation.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;
use zoark_core::access::Role;
use zoark_tests::call;
use zoark_tests::{TestApp, field_names, fixtures, smtp::SmtpSink};

/// A project and an invoice of `organization_id` (projects and invoices have their own API on
/// other branches; the rows are what approvals need).
async fn new_invoice(app: &TestApp, organization_id: Uuid, number: &str) -> Uuid {
    let project: Uuid = sqlx::query_scalar(
        "INSERT INTO projects (organization_id, name) VALUES ($1, 'Site') RETURNING id",
    )
    .bind(organization_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query_scalar(
        "INSERT INTO invoices (organization_id, project_id, number, vendor, amount_minor, currency)
         VALUES ($1, $2, $3, 'Acme', 120000, 'EUR') RETURNING id",
    )
    .bind(organization_id)
    .bind(project)
    .bind(number)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

async fn invoice_status(app: &TestApp, id: Uuid) -> String {
    sqlx::query_scalar("SELECT status FROM invoices WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Every system email enqueued so far: (to, template, unsealed parameters), oldest first.
async fn emails(app: &TestApp) -> Vec<(String, String, Value)> {
    let rows: Vec<Value> =
        sqlx::query_scalar("SELECT args FROM jobs WHERE kind = 'email.send_system' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|args| {
            let plain = zoark_core::crypto::open_text(
                &app.settings.encryption_key,
                args["sealed_params"].as_str().unwrap(),
            )
            .unwrap();
            (
                args["to"].as_str().unwrap().to_owned(),
                args["template"].as_str().unwrap().to_owned(),
                serde_json::from_slice(&plain).unwrap(),
            )
        })
        .collect()
}

fn addresses(emails: &[(String, String, Value)]) -> Vec<&str> {
    let mut out: Vec<&str> = emails.iter().map(|(to, _, _)| to.as_str()).collect();
    out.sort_unstable();
    out
}

async fn template(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, template) = call(
        app,
        Method::POST,
        "/api/v1/approval-templates",
        token,
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{template}");
    template
}

async fn start(app: &TestApp, token: &str, template: &Value, kind: &str, id: Uuid) -> Value {
    let (status, approval) = call(
        app,
        Method::POST,
        "/api/v1/approvals",
        token,
        Some(json!({"template_id": template["id"], "subject_type": kind, "subject_id": id})),
    )
    .await;
    assert_eq!(status, 201, "{approval}");
    approval
}

/// GETs `path` with `If-None-Match: if_none_match`: the new entity tag, or `None` on a 304.
async fn etag(
    app: &TestApp,
    path: &str,
    token: &str,
    if_none_match: Option<&str>,
) -> Option<String> {
    let mut request = app.client.get(app.url(path)).bearer_auth(token);
    if let Some(tag) = if_none_match {
        request = request.header("If-None-Match", tag);
    }
    let response = request.send().await.unwrap();
    match response.status().as_u16() {
        304 => None,
        200 => Some(response.headers()["etag"].to_str().unwrap().to_owned()),
        other => panic!("GET {path}: {other}"),
    }
}

/// POSTs `action` (`approve`, `reject`, `cancel`) on `approval` with `body`.
async fn act(
    app: &TestApp,
    approval: &Value,
    action: &str,
    token: &str,
    body: Value,
) -> (reqwest::StatusCode, Value) {
    call(
        app,
        Method::POST,
        &path(approval, action),
        token,
        Some(body),
    )
    .await
}

fn path(approval: &Value, action: &str) -> String {
    format!(
        "/api/v1/approvals/{}/{action}",
        approval["id"].as_str().unwrap()
    )
}

#[tokio::test]
async fn templates_are_created_once_listed_cached_patched_archived_and_deleted() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let body = json!({"name": "Invoices", "description": "Two eyes", "subject_type": "invoice",
    "stages": [
        {"name": "Finance", "approver_role": "manager", "sla_seconds": 172800},
        {"name": "CFO", "approver_email": "cfo@example.com", "nudge_every_seconds": 7200,
         "escalate_after_nudges": 2, "escalate_to_role": "admin"}
    ]});
    let post = |key: &'static str, body: Value| {
        let request = app
            .client
            .post(app.url("/api/v1/approval-templates"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let first = post("tpl-1", body.clone()).await;
    let second = post("tpl-1", body.clone()).await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let created: Value = first.json().await.unwrap();
    assert_eq!(second.json::<Value>().await.unwrap()["id"], created["id"]);
    assert_eq!(
        created["stages"][1],
        json!({"position": 2, "name": "CFO", "approver_role": null, "approver_user_id": null,
               "approver_email": "cfo@example.com", "sla_seconds": 172800,
               "nudge_every_seconds": 7200, "escalate_after_nudges": 2, "escalate_to_role": "admin"})
    );
    let id = created["id"].as_str().unwrap().to_owned();
    template(
        &app,
        token,
        json!({"name": "Tasks", "subject_type": "task", "stages": [{"name": "Lead", "approver_role": "lead"}]}),
    )
    .await;
    let (_, list) = call(
        &app,
        Method::GET,
        "/api/v1/approval-templates?subject_type=invoice",
        token,
        None,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    let (_, page) = call(
        &app,
        Method::GET,
        "/api/v1/approval-templates?limit=1",
        token,
        None,
    )
    .await;
    assert_eq!(page["items"][0]["name"], "Tasks");
    let (_, rest) = call(
        &app,
        Method::GET,
        &format!(
            "/api/v1/approval-templates?limit=1&cursor={}",
            page["next_cursor"].as_str().unwrap()
        ),
        token,
        None,
    )
    .await;
    assert_eq!(rest["items"][0]["name"], "Invoices");

    // ETag until the stages change; replacing the list swaps positions in one transaction.
    let one = format!("/api/v1/approval-templates/{id}");
    let tag = etag(&app, &one, token, None).await.unwrap();
    assert_eq!(etag(&app, &one, token, Some(&tag)).await, None, "304");
    let (status, patched) = call(
        &app,
        Method::PATCH,
        &one,
        token,
        Some(json!({"description": null, "stages": [
            {"name": "CFO", "approver_email": "cfo@example.com"},
            {"name": "Finance", "approver_role": "manager"}
        ]})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (
            patched["stages"][0]["name"].as_str(),
            patched["stages"][1]["name"].as_str(),
            patched["description"].clone(),
            patched["name"].as_str()
        ),
        (Some("CFO"), Some("Finance"), Value::Null, Some("Invoices"))
    );
    assert!(
        etag(&app, &one, token, Some(&tag)).await.is_some(),
        "changed"
    );

    // A running approval keeps its copied steps through archive and delete.
    let invoice = new_invoice(&app, admin.organization_id, "INV-1").await;
    let approval = start(&app, token, &patched, "invoice", invoice).await;
    let (status, archived) = call(&app, Method::POST, &format!("{one}/archive"), token, None).await;
    assert_eq!(status, 200);
    assert!(archived["archived_at"].is_string());
    let (_, active) = call(
        &app,
        Method::GET,
        "/api/v1/approval-templates?archived=false",
        token,
        None,
    )
    .await;
    assert_eq!(active["items"][0]["name"], "Tasks");
    let other = new_invoice(&app, admin.organization_id, "INV-2").await;
    let (status, refused) = call(
        &app,
        Method::POST,
        "/api/v1/approvals",
        token,
        Some(json!({"template_id": id, "subject_type": "invoice", "subject_id": other})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), refused["code"].as_str()),
        (409, Some("approval_template_archived"))
    );
    let (status, _) = call(&app, Method::DELETE, &one, token, None).await;
    assert_eq!(status, 204);
    let (status, gone) = call(&app, Method::GET, &one, token, None).await;
    assert_eq!(
        (status.as_u16(), gone["code"].as_str()),
        (404, Some("approval_template_not_found"))
    );
    let (_, kept) = call(
        &app,
        Method::GET,
        &format!("/api/v1/approvals/{}", approval["id"].as_str().unwrap()),
        token,
        None,
    )
    .await;
    assert_eq!(
        (
            kept["template_id"].clone(),
            kept["steps"].as_array().unwrap().len()
        ),
        (Value::Null, 2)
    );
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'approval_template.%' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        actions,
        [
            "approval_template.created",
            "approval_template.created",
            "approval_template.archived",
            "approval_template.deleted"
        ]
    );
}

#[tokio::test]
async fn bad_templates_are_refused_field_by_field_and_only_managers_write_them() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let other = fixtures::register(&app, "other@example.com", "Elsewhere").await;
    let refuse = |body: Value| {
        let app = &app;
        async move {
            let (status, problem) = call(
                app,
                Method::POST,
                "/api/v1/approval-templates",
                token,
                Some(body),
            )
            .await;
            assert_eq!(status, 422, "{problem}");
            field_names(&problem)
        }
    };
    assert_eq!(
        refuse(json!({"name": "", "subject_type": "car", "stages": []})).await,
        ["name", "subject_type", "stages"]
    );
    assert_eq!(
        refuse(json!({"name": "X", "subject_type": "task", "stages": [
            {"name": "Nobody"},
            {"name": "Boss", "approver_role": "owner", "escalate_to_role": "member"},
            {"name": "Fast", "approver_email": "not-an-email", "sla_seconds": 0,
             "nudge_every_seconds": 60, "escalate_after_nudges": 0}
        ]}))
        .await,
        [
            "stages[0].approver_role",
            "stages[1].approver_role",
            "stages[1].escalate_to_role",
            "stages[2].approver_email",
            "stages[2].sla_seconds",
            "stages[2].nudge_every_seconds",
            "stages[2].escalate_after_nudges"
        ]
    );
    // A named approver must be a member of this organization.
    assert_eq!(
        refuse(json!({"name": "X", "subject_type": "task", "stages": [
            {"name": "Stranger", "approver_user_id": other.user_id}
        ]}))
        .await,
        ["stages[0].approver_user_id"]
    );
    assert_eq!(
        refuse(
            json!({"name": "X", "subject_type": "task", "project_id": Uuid::now_v7(),
            "stages": [{"name": "Lead", "approver_role": "lead"}]})
        )
        .await,
        ["project_id"]
    );
    let created = template(
        &app,
        token,
        json!({"name": "T", "subject_type": "task", "stages": [{"name": "Lead", "approver_role": "lead"}]}),
    )
    .await;
    let one = format!(
        "/api/v1/approval-templates/{}",
        created["id"].as_str().unwrap()
    );
    let (status, problem) = call(
        &app,
        Method::PATCH,
        &one,
        token,
        Some(json!({"name": null, "stages": null})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["name".to_owned(), "stages".to_owned()])
    );

    let member = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    let (status, list) = call(
        &app,
        Method::GET,
        "/api/v1/approval-templates",
        &member.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), list["items"].as_array().unwrap().len()),
        (200, 1)
    );
    for (method, path, body) in [
        (
            Method::POST,
            "/api/v1/approval-templates".to_owned(),
            Some(
                json!({"name": "X", "subject_type": "task", "stages": [{"name": "L", "approver_role": "lead"}]}),
            ),
        ),
        (Method::PATCH, one.clone(), Some(json!({"name": "Y"}))),
        (Method::POST, format!("{one}/archive"), None),
        (Method::DELETE, one.clone(), None),
    ] {
        let (status, problem) = call(&app, method, &path, &member.access_token, body).await;
        assert_eq!(
            (status.as_u16(), problem["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_invoice_passes_two_stages_and_each_stage_s_approvers_are_emailed() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let finance1 = fixtures::member(
        &app,
        admin.organization_id,
        "fin1@example.com",
        Role::Manager,
    )
    .await;
    fixtures::member(
        &app,
        admin.organization_id,
        "fin2@example.com",
        Role::Manager,
    )
    .await;
    let cfo = fixtures::member(&app, admin.organization_id, "cfo@example.com", Role::Member).await;
    let bystander =
        fixtures::member(&app, admin.organization_id, "lead@example.com", Role::Lead).await;
    let pipeline = template(
        &app,
        token,
        json!({"name": "Invoices", "subject_type": "invoice", "stages": [
            {"name": "Finance", "approver_role": "manager", "sla_seconds": 3600},
            {"name": "CFO", "approver_email": "CFO@example.com"}
        ]}),
    )
    .await;
    let invoice = new_invoice(&app, admin.organization_id, "INV-7").await;
    let approval = start(&app, &cfo.access_token, &pipeline, "invoice", invoice).await;
    assert_eq!(approval["status"], "in_progress");
    assert_eq!(
        (
            approval["steps"][0]["status"].as_str(),
            approval["steps"][1]["status"].as_str()
        ),
        (Some("pending"), Some("waiting"))
    );
    let due: chrono::DateTime<chrono::Utc> = approval["steps"][0]["due_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let since: chrono::DateTime<chrono::Utc> = approval["steps"][0]["pending_since"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        (due - since).num_seconds(),
        3600,
        "due after the stage's SLA"
    );

    // Both managers, and only they, are asked; the email names the invoice and its amount.
    let sent = emails(&app).await;
    assert_eq!(addresses(&sent), ["fin1@example.com", "fin2@example.com"]);
    let (_, kind, params) = &sent[0];
    assert_eq!(kind, "approval_request");
    assert_eq!(params["item_title"], "Invoice INV-7");
    assert_eq!(params["item_kind"], "invoice");
    assert_eq!(params["stage_name"], "Finance");
    assert_eq!(params["amount"], "1,200.00 EUR");
    assert_eq!(params["requester_name"], "Member");
    let approval_id = approval["id"].as_str().unwrap();
    assert!(
        params["approve_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/approvals/{approval_id}"))
    );

    // A second approval on the same invoice waits for this one to end.
    let (status, running) = call(
        &app,
        Method::POST,
        "/api/v1/approvals",
        token,
        Some(json!({"template_id": pipeline["id"], "subject_type": "invoice", "subject_id": invoice})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), running["code"].as_str()),
        (409, Some("approval_already_running"))
    );

    // A lead is below the manager stage and not the CFO: not an approver.
    let (status, problem) = act(
        &app,
        &approval,
        "approve",
        &bystander.access_token,
        json!({}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (403, Some("not_an_approver"))
    );
    let (status, moved) = act(
        &app,
        &approval,
        "approve",
        &finance1.access_token,
        json!({"comment": "Numbers check out"}),
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        (
            moved["steps"][0]["status"].as_str(),
            moved["steps"][0]["decided_by"].as_str(),
            moved["steps"][1]["status"].as_str()
        ),
        (
            Some("approved"),
            Some(finance1.user_id.to_string().as_str()),
            Some("pending")
        )
    );
    assert_eq!(invoice_status(&app, invoice).await, "pending");
    let sent = emails(&app).await;
    assert_eq!(sent.len(), 3);
    assert_eq!(sent[2].0, "cfo@example.com", "the member's own address");
    assert_eq!(sent[2].2["stage_name"], "CFO");
    // The CFO holds the member role only, but is the named address; having started this
    // approval, though, the CFO may not approve it (separation of duties, the default).
    let (status, problem) = act(&app, &approval, "approve", &cfo.access_token, json!({})).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (403, Some("self_approval_refused")),
        "{problem}"
    );
    let (status, done) = act(&app, &approval, "approve", token, json!({})).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "approved");
    assert!(done["completed_at"].is_string());
    assert_eq!(invoice_status(&app, invoice).await, "approved");
    assert_eq!(emails(&app).await.len(), 3, "nobody left to ask");
    let (status, problem) = act(&app, &approval, "approve", token, json!({})).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("approval_finished"))
    );

    // Filters and the ETag of an approval.
    let (_, list) = call(
        &app,
        Method::GET,
        &format!("/api/v1/approvals?status=approved&subject_id={invoice}"),
        token,
        None,
    )
    .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["steps"].as_array().unwrap().len(), 2);
    let (_, none) = call(
        &app,
        Method::GET,
        "/api/v1/approvals?status=in_progress",
        token,
        None,
    )
    .await;
    assert_eq!(none["items"].as_array().unwrap().len(), 0);
    let one = format!("/api/v1/approvals/{approval_id}");
    let tag = etag(&app, &one, token, None).await.unwrap();
    assert_eq!(etag(&app, &one, token, Some(&tag)).await, None, "304");
}

#[tokio::test]
async fn a_rejection_needs_a_comment_and_rejects_the_invoice_and_viewers_stay_out() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let viewer = fixtures::member(&app, admin.organization_id, "v@example.com", Role::Viewer).await;
    let member = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    let pipeline = template(
        &app,
        token,
        json!({"name": "Invoices", "subject_type": "invoice", "stages": [
            {"name": "Owner", "approver_user_id": admin.user_id},
            {"name": "Anyone", "approver_role": "member"}
        ]}),
    )
    .await;
    let invoice = new_invoice(&app, admin.organization_id, "INV-9").await;
    // Wrong kind and unknown subjects are named.
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/approvals",
        token,
        Some(json!({"template_id": pipeline["id"], "subject_type": "task", "subject_id": invoice})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (
            422,
            vec!["subject_type".to_owned(), "subject_id".to_owned()]
        )
    );
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/approvals",
        token,
        Some(json!({"template_id": Uuid::now_v7(), "subject_type": "invoice", "subject_id": Uuid::now_v7()})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["template_id".to_owned(), "subject_id".to_owned()])
    );
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/approvals",
        &viewer.access_token,
        Some(json!({"template_id": pipeline["id"], "subject_type": "invoice", "subject_id": invoice})),
    )
    .await;
    assert_eq!(status, 403);
    let approval = start(&app, token, &pipeline, "invoice", invoice).await;
    assert_eq!(addresses(&emails(&app).await), ["admin@example.com"]);
    // Approvals are for members up: a viewer neither reads nor acts on them.
    let (status, problem) = call(
        &app,
        Method::GET,
        &format!("/api/v1/approvals/{}", approval["id"].as_str().unwrap()),
        &viewer.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (403, Some("forbidden"))
    );
    for action in ["approve", "reject", "cancel"] {
        let (status, problem) = call(
            &app,
            Method::POST,
            &path(&approval, action),
            &viewer.access_token,
            Some(json!({"comment": "no"})),
        )
        .await;
        assert_eq!(
            (status.as_u16(), problem["code"].as_str()),
            (403, Some("forbidden")),
            "{action}"
        );
    }
    // A member neither decides a step named for the admin nor cancels what they did not start.
    let (status, problem) = act(
        &app,
        &approval,
        "reject",
        &member.access_token,
        json!({"comment": "no"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (403, Some("not_an_approver"))
    );
    let (status, problem) = call(
        &app,
        Method::POST,
        &path(&approval, "cancel"),
        &member.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (403, Some("not_the_starter"))
    );
    for body in [json!({}), json!({"comment": "   "})] {
        let (status, problem) = call(
            &app,
            Method::POST,
            &path(&approval, "reject"),
            token,
            Some(body),
        )
        .await;
        assert_eq!(
            (status.as_u16(), field_names(&problem)),
            (422, vec!["comment".to_owned()])
        );
    }
    let (status, rejected) = act(
        &app,
        &approval,
        "reject",
        token,
        json!({"comment": "Wrong vendor"}),
    )
    .await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["status"], "rejected");
    assert_eq!(rejected["steps"][0]["comment"], "Wrong vendor");
    assert_eq!(rejected["steps"][1]["status"], "skipped");
    assert_eq!(invoice_status(&app, invoice).await, "rejected");
    assert_eq!(emails(&app).await.len(), 1, "the next stage is never asked");

    // A new approval may start once the last ended; its starter cancels it (audited), and the
    // invoice keeps its status.
    let again = start(&app, &member.access_token, &pipeline, "invoice", invoice).await;
    let (status, cancelled) = call(
        &app,
        Method::POST,
        &path(&again, "cancel"),
        &member.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{cancelled}");
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(invoice_status(&app, invoice).await, "rejected");
    let (status, _) = call(&app, Method::POST, &path(&again, "cancel"), token, None).await;
    assert_eq!(status, 409);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'approval.cancelled'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(audited, 1);
}

#[tokio::test]
async fn two_approvers_deciding_the_same_step_at_once_exactly_one_wins() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.clone();
    let a = fixtures::member(&app, admin.organization_id, "a@example.com", Role::Manager).await;
    let b = fixtures::member(&app, admin.organization_id, "b@example.com", Role::Manager).await;
    let project: Uuid = sqlx::query_scalar(
        "INSERT INTO projects (organization_id, name) VALUES ($1, 'Site') RETURNING id",
    )
    .bind(admin.organization_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let pipeline = template(
        &app,
        &token,
        json!({"name": "Tasks", "subject_type": "task", "stages": [
            {"name": "Managers", "approver_role": "manager"},
            {"name": "Managers again", "approver_role": "manager"}
        ]}),
    )
    .await;
    // Repeated so that the requests really overlap at least some of the time.
    for round in 0..5 {
        let task: Uuid = sqlx::query_scalar(
            "INSERT INTO tasks (organization_id, project_id, title) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(admin.organization_id)
        .bind(project)
        .bind(format!("Task {round}"))
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let approval = start(&app, &token, &pipeline, "task", task).await;
        let step = approval["steps"][0]["id"].clone();
        let url = app.url(&path(&approval, "approve"));
        let race = |who: &fixtures::Account| {
            let request = app
                .client
                .post(&url)
                .bearer_auth(&who.access_token)
                .json(&json!({"step_id": step}));
            async move { request.send().await.unwrap() }
        };
        let (first, second) = tokio::join!(race(&a), race(&b));
        let mut statuses = [first.status().as_u16(), second.status().as_u16()];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 409], "round {round}");
        let loser: Value = if first.status() == 409 {
            first.json().await.unwrap()
        } else {
            second.json().await.unwrap()
        };
        assert_eq!(loser["code"], "approval_step_not_pending");
        let statuses: Vec<String> = sqlx::query_scalar(
            "SELECT status FROM approval_steps WHERE instance_id = $1 ORDER BY position",
        )
        .bind(approval["id"].as_str().unwrap().parse::<Uuid>().unwrap())
        .fetch_all(&app.pool)
        .await
        .unwrap();
        assert_eq!(statuses, ["approved", "pending"], "round {round}");
    }
}

/// One tick of the organization's approval nudger: how many approval steps its run nudged (no
/// run is recorded when nothing is due).
async fn nudge(app: &TestApp, org: Uuid) -> usize {
    match zoark_tests::agents::tick(app, org, "approval_nudger")
        .await
        .unwrap()
    {
        None => 0,
        Some(run) => {
            assert_eq!(run.status, "succeeded", "{:?}", run.error);
            let output = run.output.unwrap();
            let nudged = output["approval_steps_nudged"].as_u64().unwrap();
            assert!(
                nudged > 0,
                "a run was recorded with nothing to do: {output}"
            );
            usize::try_from(nudged).unwrap()
        }
    }
}

#[tokio::test]
async fn overdue_steps_are_nudged_once_per_interval_and_escalate_after_n_nudges() {
    let smtp = SmtpSink::start().await;
    let mut builder = TestApp::builder();
    for (key, value) in smtp.env() {
        builder = builder.env(key, value);
    }
    let app = builder.spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    fixtures::member(
        &app,
        admin.organization_id,
        "boss@example.com",
        Role::Manager,
    )
    .await;
    let pipeline = template(
        &app,
        token,
        json!({"name": "Invoices", "subject_type": "invoice", "stages": [
            {"name": "Clerk", "approver_email": "clerk@example.com", "sla_seconds": 3600,
             "nudge_every_seconds": 3600, "escalate_after_nudges": 2, "escalate_to_role": "manager"}
        ]}),
    )
    .await;
    let overdue = new_invoice(&app, admin.organization_id, "INV-1").await;
    let on_time = new_invoice(&app, admin.organization_id, "INV-2").await;
    let approval = start(&app, token, &pipeline, "invoice", overdue).await;
    start(&app, token, &pipeline, "invoice", on_time).await;
    let step: Uuid = approval["steps"][0]["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        nudge(&app, admin.organization_id).await,
        0,
        "nothing is due yet"
    );

    sqlx::query("UPDATE approval_steps SET due_at = now() - interval '1 minute' WHERE id = $1")
        .bind(step)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(nudge(&app, admin.organization_id).await, 1);
    assert_eq!(
        nudge(&app, admin.organization_id).await,
        0,
        "a rerun within the interval sends nothing"
    );
    let nudges = |sent: Vec<(String, String, Value)>| {
        sent.into_iter()
            .filter(|(_, t, _)| t == "approval_nudge")
            .map(|(to, _, p)| (to, p["escalated"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        nudges(emails(&app).await),
        [("clerk@example.com".to_owned(), json!(false))]
    );

    // The second nudge reaches the threshold: the managers are told too, once, escalated.
    let back =
        "UPDATE approval_steps SET last_nudged_at = now() - interval '61 minutes' WHERE id = $1";
    sqlx::query(back)
        .bind(step)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(nudge(&app, admin.organization_id).await, 1);
    assert_eq!(nudge(&app, admin.organization_id).await, 0);
    let sent = nudges(emails(&app).await);
    assert_eq!(
        sent[1..],
        [
            ("clerk@example.com".to_owned(), json!(false)),
            ("boss@example.com".to_owned(), json!(true))
        ]
    );
    let (count, escalated_at): (i32, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT nudge_count, escalated_at FROM approval_steps WHERE id = $1")
            .bind(step)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(count, 2);
    sqlx::query(back)
        .bind(step)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(nudge(&app, admin.organization_id).await, 1);
    let (count, again): (i32, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT nudge_count, escalated_at FROM approval_steps WHERE id = $1")
            .bind(step)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (count, again),
        (3, escalated_at),
        "escalated_at is stamped once"
    );
    assert_eq!(nudges(emails(&app).await).len(), 5);

    // Each run's emails went out through the worker, rendered, the escalated ones worded as
    // passed on; the activity feed has one entry per nudge.
    sqlx::query(back)
        .bind(step)
        .execute(&app.pool)
        .await
        .unwrap();
    assert_eq!(nudge(&app, admin.organization_id).await, 1);
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agent_activity WHERE action = 'approval_nudge' AND context->>'approval_step_id' = $1",
    )
    .bind(step.to_string())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(entries, 4);
    let count: i32 = sqlx::query_scalar("SELECT nudge_count FROM approval_steps WHERE id = $1")
        .bind(step)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 4);
    let messages = smtp.messages();
    let boss: Vec<_> = messages
        .iter()
        .filter(|m| m.to.iter().any(|t| t.contains("boss@example.com")))
        .collect();
    assert_eq!(boss.len(), 3, "three escalated nudges reached the manager");
    assert!(
        boss[0].decoded().contains("passed on to you"),
        "{}",
        boss[0].decoded()
    );
    let clerk = messages
        .iter()
        .filter(|m| m.to.iter().any(|t| t.contains("clerk@example.com")))
        .count();
    // The requests of both invoices and four nudges of the overdue one.
    assert_eq!(clerk, 6);
}

#[tokio::test]
async fn documents_and_tasks_are_approvable_and_a_project_template_keeps_to_its_project() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let org = admin.organization_id;
    let file: Uuid = sqlx::query_scalar(
        "INSERT INTO stored_files (organization_id, storage_key, filename, content_type, size_bytes, sha256)
         VALUES ($1, 'k/contract.pdf', 'contract.pdf', 'application/pdf', 10, sha256('x'::bytea))
         RETURNING id",
    )
    .bind(org)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let documents = template(
        &app,
        token,
        json!({"name": "Contracts", "subject_type": "document",
               "stages": [{"name": "Legal", "approver_role": "admin"}]}),
    )
    .await;
    start(&app, token, &documents, "document", file).await;
    let sent = emails(&app).await;
    assert_eq!(
        (sent[0].0.as_str(), sent[0].2["item_title"].as_str()),
        ("admin@example.com", Some("contract.pdf"))
    );

    let projects: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO projects (organization_id, name) VALUES ($1, 'One'), ($1, 'Two') RETURNING id",
    )
    .bind(org)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let tasks: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO tasks (organization_id, project_id, title)
         SELECT $1, p, 'Pour concrete' FROM unnest($2::uuid[]) AS p RETURNING id",
    )
    .bind(org)
    .bind(&projects)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let scoped = template(
        &app,
        token,
        json!({"name": "Site one", "subject_type": "task", "project_id": projects[0],
               "stages": [{"name": "Lead", "approver_role": "lead"}]}),
    )
    .await;
    let (_, listed) = call(
        &app,
        Method::GET,
        &format!("/api/v1/approval-templates?project_id={}", projects[0]),
        token,
        None,
    )
    .await;
    assert_eq!(listed["items"][0]["id"], scoped["id"]);
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/approvals",
        token,
        Some(json!({"template_id": scoped["id"], "subject_type": "task", "subject_id": tasks[1]})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["subject_id".to_owned()])
    );
    let approval = start(&app, token, &scoped, "task", tasks[0]).await;
    assert_eq!(approval["subject_type"], "task");
    let (_, tasks_only) = call(
        &app,
        Method::GET,
        "/api/v1/approvals?subject_type=task",
        token,
        None,
    )
    .await;
    assert_eq!(tasks_only["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn whoever_started_an_approval_may_approve_it_only_where_its_template_allows() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let strict = template(
        &app,
        token,
        json!({"name": "Strict", "subject_type": "invoice",
               "stages": [{"name": "Admins", "approver_role": "admin"}]}),
    )
    .await;
    assert_eq!(strict["allow_self_approval"], false, "the default");
    let invoice = new_invoice(&app, admin.organization_id, "INV-SELF-1").await;
    let approval = start(&app, token, &strict, "invoice", invoice).await;
    // Even an admin, who may decide every step, may not approve their own request...
    let (status, problem) = act(&app, &approval, "approve", token, json!({})).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (403, Some("self_approval_refused")),
        "{problem}"
    );
    // ...and allowing it on the template later does not change a running approval.
    let (status, patched) = call(
        &app,
        Method::PATCH,
        &format!(
            "/api/v1/approval-templates/{}",
            strict["id"].as_str().unwrap()
        ),
        token,
        Some(json!({"allow_self_approval": true})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), patched["allow_self_approval"].as_bool()),
        (200, Some(true))
    );
    let (status, _) = act(&app, &approval, "approve", token, json!({})).await;
    assert_eq!(status, 403);
    // Rejecting one's own request stays possible.
    let (status, rejected) = act(
        &app,
        &approval,
        "reject",
        token,
        json!({"comment": "Withdrawn"}),
    )
    .await;
    assert_eq!(
        (status.as_u16(), rejected["status"].as_str()),
        (200, Some("rejected"))
    );

    // Started under the new rule, the starter approves.
    let invoice = new_invoice(&app, admin.organization_id, "INV-SELF-2").await;
    let approval = start(&app, token, &strict, "invoice", invoice).await;
    assert_eq!(approval["allow_self_approval"], true);
    let (status, done) = act(&app, &approval, "approve", token, json!({})).await;
    assert_eq!(
        (status.as_u16(), done["status"].as_str()),
        (200, Some("approved"))
    );
}
