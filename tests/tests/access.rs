//! The permission matrix against the served spec: every operation is in the matrix, declares its
//! security, refuses callers without credentials and the role just below its permission, and
//! answers 404 — never another organization's data, never a 500 — when a user of organization B
//! names organization A's resources.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use zoark_api::permissions::{OPERATIONS, least_role};
use zoark_core::access::Role;
use zoark_jobs::{Opts, diag::Record, enqueue};
use zoark_tests::{
    TestApp, fixtures,
    multipart::{Form, PDF},
};

struct Operation {
    id: String,
    method: Method,
    path: String,
    secured: bool,
}

async fn operations(app: &TestApp) -> Vec<Operation> {
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut out = Vec::new();
    for (path, methods) in spec["paths"].as_object().unwrap() {
        for (method, op) in methods.as_object().unwrap() {
            out.push(Operation {
                id: op["operationId"].as_str().unwrap().to_owned(),
                method: method.to_uppercase().parse().unwrap(),
                path: path.clone(),
                secured: op["security"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|r| r.get("BearerAuth").is_some())),
            });
        }
    }
    out
}

/// A body each operation accepts, so that only authorization can refuse it.
fn valid_body(operation_id: &str) -> Option<Value> {
    match operation_id {
        "auth_register" => Some(
            json!({"email": "new@example.com", "password": fixtures::PASSWORD,
                                        "name": "N", "organization_name": "O"}),
        ),
        "auth_login" => Some(json!({"email": "x@example.com", "password": "x"})),
        "auth_refresh" => Some(json!({"refresh_token": "zr_x"})),
        "organization_update" => Some(json!({"name": "Renamed"})),
        "members_update" => Some(json!({"role": "viewer"})),
        "api_keys_create" => Some(json!({"name": "k", "role": "viewer"})),
        "email_accounts_create" => Some(json!({"provider": "smtp", "display_name": "Ops",
            "from_address": "ops@example.com", "host": "smtp.example.com", "port": 587, "security": "starttls"})),
        "email_accounts_update" => Some(json!({"display_name": "Renamed"})),
        "email_accounts_test" => Some(json!({})),
        "email_accounts_oauth_complete" => Some(json!({"code": "c", "state": "s"})),
        "llm_credentials_create" => Some(
            json!({"name": "OpenAI", "base_url": "https://api.openai.com/v1",
            "api_key": "sk-secret-of-a", "default_model": "gpt-4o-mini"}),
        ),
        "llm_credentials_update" => Some(json!({"name": "Renamed"})),
        "broadcasts_create" => Some(json!({"email_account_id": Uuid::nil(), "subject": "Hello",
            "body_text": "Hi", "recipients": ["someone@example.com"]})),
        "webhooks_create" => {
            Some(json!({"url": "https://hooks.example.com/z", "event_types": ["*"]}))
        }
        "webhooks_update" => Some(json!({"enabled": false})),
        "suppressions_create" => Some(json!({"email": "quiet@example.com"})),
        "team_members_create" => Some(json!({"name": "Ada", "email": "ada@example.com"})),
        "team_members_update" => Some(json!({"department": "Ops"})),
        "projects_create" => Some(json!({"name": "Bridge"})),
        "projects_update" => Some(json!({"name": "Renamed"})),
        "tasks_create" => Some(json!({"project_id": Uuid::nil(), "title": "Paint"})),
        "tasks_update" => Some(json!({"title": "Renamed"})),
        "tasks_move" => Some(json!({"status": "done"})),
        "tasks_log_work" => Some(json!({"kind": "note", "note": "n"})),
        "agent_schedules_create" => {
            Some(json!({"agent_id": Uuid::nil(), "cron_expression": "0 9 * * *"}))
        }
        "agent_schedules_update" => Some(json!({"enabled": false})),
        "agents_create" => Some(json!({"name": "Keeper", "goal": "g", "instructions": "i"})),
        "agents_update" => Some(json!({"enabled": false})),
        "agent_runs_create" => Some(json!({"input": {}})),
        "ask" => Some(json!({"question": "Where?"})),
        "jobs_bulk_retry" | "jobs_bulk_cancel" => Some(json!({"filter": {}, "dry_run": true})),
        "invitations_create" => Some(json!({"email": "invitee@example.com", "role": "viewer"})),
        "auth_password_reset" => Some(json!({"email": "x@example.com"})),
        "auth_password_reset_confirm" => Some(json!({"token": "x", "new_password": "y"})),
        "auth_accept_invitation" => Some(json!({"token": "x", "name": "n", "password": "p"})),
        "approval_templates_create" => Some(json!({"name": "T", "subject_type": "task",
            "stages": [{"name": "Lead", "approver_role": "lead"}]})),
        "approval_templates_update" => Some(json!({"name": "Renamed"})),
        "approvals_start" => Some(json!({"template_id": Uuid::nil(), "subject_type": "task",
            "subject_id": Uuid::nil()})),
        "approvals_approve" => Some(json!({"comment": "ok"})),
        "approvals_reject" => Some(json!({"comment": "no"})),
        "invoices_create" => Some(json!({"project_id": Uuid::nil(), "number": "N-1",
            "vendor": "V", "amount_minor": 1, "currency": "EUR",
            "issued_on": "2026-01-01", "due_on": "2026-01-02"})),
        "invoices_update" => Some(json!({"vendor": "Renamed"})),
        _ => None,
    }
}

/// A `multipart/form-data` body for the upload operations (they take no JSON).
fn valid_form(operation_id: &str) -> Option<Form> {
    match operation_id {
        "documents_create" => Some(
            Form::new()
                .file("file", "a.pdf", "application/pdf", PDF)
                .text("kind", "report"),
        ),
        "invoices_pdf_put" => Some(Form::new().file("file", "a.pdf", "application/pdf", PDF)),
        "knowledge_create" => {
            Some(Form::new().file("file", "notes.txt", "text/plain", b"notes of the walk"))
        }
        _ => None,
    }
}

/// Calls an operation with its valid body: a form for uploads, JSON otherwise.
async fn send(app: &TestApp, op: &Operation, path: &str, token: Option<&str>) -> reqwest::Response {
    match valid_form(&op.id) {
        Some(form) => {
            app.upload(op.method.clone(), path, token, &form, None)
                .await
        }
        None => {
            app.call(op.method.clone(), path, token, valid_body(&op.id).as_ref())
                .await
        }
    }
}

fn below(role: Role) -> Option<Role> {
    let i = Role::ALL.iter().position(|r| *r == role)?;
    Role::ALL.get(i + 1).copied()
}

/// The path with `id` for every id parameter (`{provider}` is a name, not a resource).
fn with_ids(path: &str, id: Uuid) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').unwrap() + open;
        out.push_str(&rest[..open]);
        match &rest[open + 1..close] {
            "provider" => out.push_str("gmail"),
            _ => out.push_str(&id.to_string()),
        }
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    out
}

#[tokio::test]
async fn every_operation_is_in_the_matrix_and_declares_its_security() {
    let app = TestApp::spawn().await;
    let served: BTreeMap<String, bool> = operations(&app)
        .await
        .into_iter()
        .map(|o| (o.id, o.secured))
        .collect();
    let matrix: BTreeSet<&str> = OPERATIONS.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        served.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        matrix,
        "api/src/permissions.rs must list exactly the served operations"
    );
    for (id, permission) in OPERATIONS {
        assert_eq!(
            served[*id],
            permission.is_some(),
            "{id}: the spec's security must match the matrix"
        );
        if let Some(name) = permission {
            assert!(
                zoark_api::permissions::permission(name).is_some(),
                "{id}: unknown permission {name}"
            );
        }
    }
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/permissions.md"
    ))
    .unwrap();
    assert_eq!(
        committed,
        zoark_api::permissions::markdown(),
        "run cargo xtask openapi"
    );
}

#[tokio::test]
async fn every_secured_operation_refuses_no_credentials_and_the_role_just_below_its_own() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "A").await;
    let mut tokens = BTreeMap::new();
    for role in [Role::Manager, Role::Lead, Role::Member, Role::Viewer] {
        let user = fixtures::member(
            &app,
            admin.organization_id,
            &format!("{role}@example.com"),
            role,
        )
        .await;
        tokens.insert(role.as_str(), user.access_token);
    }
    let mut checked = 0;
    for op in operations(&app).await.into_iter().filter(|o| o.secured) {
        let path = with_ids(&op.path, Uuid::now_v7());
        let anonymous = send(&app, &op, &path, None).await;
        assert_eq!(anonymous.status(), 401, "{} without credentials", op.id);
        let role = least_role(&op.id).unwrap();
        if let Some(lower) = below(role) {
            let response = send(&app, &op, &path, Some(&tokens[lower.as_str()])).await;
            let status = response.status();
            let problem: Value = response.json().await.unwrap();
            assert_eq!(status, 403, "{} as {lower}: {problem}", op.id);
            assert_eq!(problem["code"], "forbidden");
            checked += 1;
        }
    }
    assert!(
        checked >= 8,
        "only {checked} operations need more than viewer"
    );
}

#[tokio::test]
async fn organization_b_gets_404_for_every_resource_of_organization_a() {
    let app = TestApp::spawn().await;
    let a = fixtures::register(&app, "a@example.com", "A").await;
    let a_member = fixtures::member(&app, a.organization_id, "a2@example.com", Role::Member).await;
    let b = fixtures::register(&app, "b@example.com", "B").await;
    let a_session: Uuid = sqlx::query_scalar(
        "SELECT id FROM sessions WHERE user_id = $1 ORDER BY created_at LIMIT 1",
    )
    .bind(a.user_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let (_, key) = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/api-keys",
                Some(&a.access_token),
                Some(&json!({"name": "A's key", "role": "viewer"})),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        ((), body["id"].as_str().unwrap().parse::<Uuid>().unwrap())
    };
    let a_account = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/email-accounts",
                Some(&a.access_token),
                valid_body("email_accounts_create").as_ref(),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_credential = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/llm-credentials",
                Some(&a.access_token),
                valid_body("llm_credentials_create").as_ref(),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_team_member = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/team-members",
                Some(&a.access_token),
                Some(&json!({"name": "secret-of-a", "email": "ops@example.com"})),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_broadcast = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/broadcasts",
                Some(&a.access_token),
                Some(
                    &json!({"email_account_id": a_account, "subject": "secret-of-a",
                    "body_text": "secret-of-a", "recipients": ["ops@example.com"]}),
                ),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_suppression = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/email-suppressions",
                Some(&a.access_token),
                Some(&json!({"email": "ops@example.com"})),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_project = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/projects",
                Some(&a.access_token),
                Some(&json!({"name": "secret-of-a"})),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_task = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/tasks",
                Some(&a.access_token),
                Some(&json!({"project_id": a_project, "title": "secret-of-a",
                             "assignee_ids": [a_team_member]})),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_agent: Uuid = sqlx::query_scalar(
        "SELECT id FROM agents WHERE organization_id = $1 AND kind = 'task_monitor'",
    )
    .bind(a.organization_id)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let a_run = {
        let response = app
            .call(
                Method::POST,
                &format!("/api/v1/agents/{a_agent}/runs"),
                Some(&a.access_token),
                Some(&json!({"input": {"secret": "secret-of-a"}})),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_schedule = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/agent-schedules",
                Some(&a.access_token),
                Some(&json!({"agent_id": a_agent, "cron_expression": "0 9 * * *"})),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_job = {
        let mut conn = app.pool.acquire().await.unwrap();
        let job = Record {
            marker: "secret-of-a".into(),
            ..Record::default()
        };
        enqueue(&mut conn, &job, Opts::organization(a.organization_id))
            .await
            .unwrap()
            .id
    };
    let a_template = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/approval-templates",
                Some(&a.access_token),
                Some(&json!({"name": "secret-of-a", "subject_type": "task",
                    "stages": [{"name": "secret-of-a", "approver_email": "ops@example.com"}]})),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_approval = {
        let task: Uuid = sqlx::query_scalar(
            "WITH p AS (INSERT INTO projects (organization_id, name) VALUES ($1, 'secret-of-a') RETURNING id)
             INSERT INTO tasks (organization_id, project_id, title) SELECT $1, id, 'secret-of-a' FROM p
             RETURNING id",
        )
        .bind(a.organization_id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        let response = app
            .call(
                Method::POST,
                "/api/v1/approvals",
                Some(&a.access_token),
                Some(
                    &json!({"template_id": a_template, "subject_type": "task", "subject_id": task}),
                ),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_document = {
        let form = Form::new().file("file", "secret-of-a.pdf", "application/pdf", PDF);
        let response = app
            .upload(
                Method::POST,
                &format!("/api/v1/team-members/{a_team_member}/documents"),
                Some(&a.access_token),
                &form,
                None,
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_invoice = {
        let project = fixtures::project(&app.pool, a.organization_id, "secret-of-a").await;
        let mut body = valid_body("invoices_create").unwrap();
        body["project_id"] = json!(project);
        body["number"] = json!("secret-of-a");
        let response = app
            .call(
                Method::POST,
                "/api/v1/invoices",
                Some(&a.access_token),
                Some(&body),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_knowledge = {
        let form = Form::new().file("file", "secret-of-a.txt", "text/plain", b"secret-of-a");
        let response = app
            .upload(
                Method::POST,
                "/api/v1/knowledge",
                Some(&a.access_token),
                &form,
                None,
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    let a_webhook = {
        let response = app
            .call(
                Method::POST,
                "/api/v1/webhooks",
                Some(&a.access_token),
                Some(
                    &json!({"url": "https://hooks.example.com/secret-of-a", "event_types": ["*"]}),
                ),
            )
            .await;
        let body: Value = response.json().await.unwrap();
        body["id"].as_str().unwrap().parse::<Uuid>().unwrap()
    };
    // One of A's resources for every path parameter the API has.
    let fixtures_by_path: BTreeMap<&str, Uuid> = BTreeMap::from([
        ("/api/v1/auth/sessions/{id}", a_session),
        ("/api/v1/organization/members/{user_id}", a_member.user_id),
        ("/api/v1/api-keys/{id}", key),
        ("/api/v1/email-accounts/{id}", a_account),
        ("/api/v1/email-accounts/{id}/test", a_account),
        ("/api/v1/team-members/{id}", a_team_member),
        ("/api/v1/broadcasts/{id}", a_broadcast),
        ("/api/v1/broadcasts/{id}/send", a_broadcast),
        ("/api/v1/broadcasts/{id}/cancel", a_broadcast),
        ("/api/v1/broadcasts/{id}/deliveries", a_broadcast),
        ("/api/v1/email-suppressions/{id}", a_suppression),
        ("/api/v1/projects/{id}", a_project),
        ("/api/v1/projects/{id}/members", a_project),
        ("/api/v1/projects/{id}/members/{team_member_id}", a_project),
        ("/api/v1/webhooks/{id}", a_webhook),
        ("/api/v1/webhooks/{id}/test", a_webhook),
        ("/api/v1/webhooks/{id}/rotate-secret", a_webhook),
        ("/api/v1/webhooks/{id}/deliveries", a_webhook),
        ("/api/v1/team-members/{id}/documents", a_team_member),
        ("/api/v1/documents/{id}", a_document),
        ("/api/v1/documents/{id}/content", a_document),
        ("/api/v1/invoices/{id}", a_invoice),
        ("/api/v1/invoices/{id}/pdf", a_invoice),
        ("/api/v1/projects/{id}/board", a_project),
        ("/api/v1/tasks/{id}", a_task),
        ("/api/v1/tasks/{id}/move", a_task),
        ("/api/v1/tasks/{id}/history", a_task),
        ("/api/v1/tasks/{id}/assignees/{team_member_id}", a_task),
        ("/api/v1/agents/{id}", a_agent),
        ("/api/v1/agents/{id}/runs", a_agent),
        ("/api/v1/agent-runs/{id}", a_run),
        ("/api/v1/agent-runs/{id}/cancel", a_run),
        ("/api/v1/agent-schedules/{id}", a_schedule),
        ("/api/v1/llm-credentials/{id}", a_credential),
        ("/api/v1/llm-credentials/{id}/test", a_credential),
        ("/api/v1/jobs/{id}", a_job),
        ("/api/v1/jobs/{id}/retry", a_job),
        ("/api/v1/jobs/{id}/cancel", a_job),
        ("/api/v1/approval-templates/{id}", a_template),
        ("/api/v1/approval-templates/{id}/archive", a_template),
        ("/api/v1/approvals/{id}", a_approval),
        ("/api/v1/approvals/{id}/approve", a_approval),
        ("/api/v1/approvals/{id}/reject", a_approval),
        ("/api/v1/approvals/{id}/cancel", a_approval),
        ("/api/v1/knowledge/{id}", a_knowledge),
        ("/api/v1/knowledge/{id}/reindex", a_knowledge),
    ]);
    let mut walked = 0;
    for op in operations(&app).await {
        // Paths whose only parameter is a provider name, a signed token (a capability naming
        // its own organization) or a queue name (each organization pauses its own jobs; see
        // jobs_api.rs) hold no tenant's resource.
        if !op.path.contains('{')
            || op.path.contains("{provider}")
            || op.path.contains("{token}")
            || op.path.contains("{name}")
        {
            continue;
        }
        // The operators' paths refuse everyone else before any lookup (the operators themselves:
        // jobs_api.rs).
        if op.path.starts_with("/api/v1/platform/") {
            let response = send(&app, &op, &with_ids(&op.path, a_job), Some(&b.access_token)).await;
            assert_eq!(response.status(), 403, "{} {} as B", op.method, op.path);
            continue;
        }
        let id = *fixtures_by_path
            .get(op.path.as_str())
            .unwrap_or_else(|| panic!("{}: add one of A's resources for this path", op.path));
        let path = with_ids(&op.path, id);
        let response = send(&app, &op, &path, Some(&b.access_token)).await;
        let status = response.status();
        let text = response.text().await.unwrap();
        assert_eq!(status, 404, "{} {path} as B: {text}", op.method);
        assert!(
            !text.contains("secret-of-a")
                && !text.contains("a2@example.com")
                && !text.contains("ops@example.com"),
            "{text}"
        );
        walked += 1;
    }
    assert!(walked >= 6);
    // And A's resources are untouched: the member is still a member, the key and session live.
    let (role, revoked_key, revoked_session): (String, bool, bool) = sqlx::query_as(
        "SELECT (SELECT role FROM memberships WHERE user_id = $1),
                (SELECT revoked_at IS NOT NULL FROM api_keys WHERE id = $2),
                (SELECT revoked_at IS NOT NULL FROM sessions WHERE id = $3)",
    )
    .bind(a_member.user_id)
    .bind(key)
    .bind(a_session)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (role.as_str(), revoked_key, revoked_session),
        ("member", false, false)
    );
    let (name,): (String,) = sqlx::query_as("SELECT name FROM team_members WHERE id = $1")
        .bind(a_team_member)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(name, "secret-of-a");
    let (broadcast_status, suppressed): (String, i64) = sqlx::query_as(
        "SELECT (SELECT status FROM broadcasts WHERE id = $1),
                (SELECT count(*) FROM email_suppressions WHERE id = $2)",
    )
    .bind(a_broadcast)
    .bind(a_suppression)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!((broadcast_status.as_str(), suppressed), ("draft", 1));
    let (project_name, task_title, task_status, assignees): (String, String, String, i64) =
        sqlx::query_as(
            "SELECT p.name, t.title, t.status,
                    (SELECT count(*) FROM task_assignments WHERE task_id = t.id)
             FROM tasks t JOIN projects p ON p.id = t.project_id WHERE t.id = $1",
        )
        .bind(a_task)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        (
            project_name.as_str(),
            task_title.as_str(),
            task_status.as_str(),
            assignees
        ),
        ("secret-of-a", "secret-of-a", "backlog", 1)
    );
    let (enabled,): (bool,) = sqlx::query_as("SELECT enabled FROM agent_schedules WHERE id = $1")
        .bind(a_schedule)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(enabled);
    let (template_name, approval_status): (String, String) = sqlx::query_as(
        "SELECT (SELECT name FROM approval_pipeline_templates WHERE id = $1),
                (SELECT status FROM approval_instances WHERE id = $2)",
    )
    .bind(a_template)
    .bind(a_approval)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        (template_name.as_str(), approval_status.as_str()),
        ("secret-of-a", "in_progress")
    );
}
