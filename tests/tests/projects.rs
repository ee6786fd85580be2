//! Projects and the task board: project CRUD with members and computed metrics, tasks with
//! details, board moves in a stable order, the work history, filters, assignments (with their
//! email), validation, permissions and isolation between organizations.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use zoark_core::access::Role;
use zoark_tests::call;
use zoark_tests::{TestApp, field_names, fixtures, smtp::SmtpSink};

async fn project(app: &TestApp, token: &str, name: &str) -> String {
    let (status, body) = call(
        app,
        Method::POST,
        "/api/v1/projects",
        token,
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn task(app: &TestApp, token: &str, body: Value) -> Value {
    let (status, task) = call(app, Method::POST, "/api/v1/tasks", token, Some(body)).await;
    assert_eq!(status, 201, "{task}");
    task
}

async fn team_member(app: &TestApp, token: &str, name: &str, email: &str) -> String {
    let (status, body) = call(
        app,
        Method::POST,
        "/api/v1/team-members",
        token,
        Some(json!({ "name": name, "email": email })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// The titles of one board column, in board order.
async fn column(app: &TestApp, token: &str, project: &str, status: &str) -> Vec<String> {
    let (code, board) = call(
        app,
        Method::GET,
        &format!("/api/v1/projects/{project}/board"),
        token,
        None,
    )
    .await;
    assert_eq!(code, 200, "{board}");
    let column = board["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["status"] == status)
        .unwrap();
    assert_eq!(
        column["total"].as_i64().unwrap() as usize,
        column["tasks"].as_array().unwrap().len()
    );
    column["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["title"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_project_is_created_once_per_key_listed_archived_and_deleted_with_an_audit_entry() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let token = admin.access_token.as_str();

    let create = |key: &'static str, body: Value| {
        let app = &app;
        async move {
            let response = app
                .client
                .post(app.url("/api/v1/projects"))
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let replayed = response.headers().get("Idempotent-Replayed").is_some();
            (
                response.status(),
                replayed,
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, replayed, bridge) = create(
        "k-1",
        json!({"name": "Bridge", "description": "The northern span"}),
    )
    .await;
    assert_eq!((status.as_u16(), replayed), (201, false), "{bridge}");
    assert_eq!(bridge["health_score"], 100.0);
    assert_eq!(bridge["velocity"], 0.0);
    assert_eq!(bridge["archived"], false);
    let (status, replayed, again) = create(
        "k-1",
        json!({"name": "Bridge", "description": "The northern span"}),
    )
    .await;
    assert_eq!((status.as_u16(), replayed), (201, true));
    assert_eq!(again["id"], bridge["id"]);
    let (status, _, other) = create("k-1", json!({"name": "Tunnel"})).await;
    assert_eq!(status, 400, "{other}");
    let bridge_id = bridge["id"].as_str().unwrap();
    let tunnel = project(&app, token, "Tunnel_50%").await;
    project(&app, token, "Tower").await;

    // ETag and If-None-Match.
    let response = app
        .client
        .get(app.url(&format!("/api/v1/projects/{bridge_id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let tag = response.headers()["etag"].to_str().unwrap().to_owned();
    let response = app
        .client
        .get(app.url(&format!("/api/v1/projects/{bridge_id}")))
        .bearer_auth(token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 304);

    // `_` and `%` match literally; pages follow the cursor.
    let (_, found) = call(&app, Method::GET, "/api/v1/projects?q=l_50%25", token, None).await;
    assert_eq!(found["items"].as_array().unwrap().len(), 1, "{found}");
    let (_, found) = call(&app, Method::GET, "/api/v1/projects?q=_5", token, None).await;
    assert_eq!(found["items"][0]["id"], tunnel.as_str());
    let (_, page1) = call(&app, Method::GET, "/api/v1/projects?limit=2", token, None).await;
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = call(
        &app,
        Method::GET,
        &format!("/api/v1/projects?limit=2&cursor={cursor}"),
        token,
        None,
    )
    .await;
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    assert_eq!(page2["items"][0]["id"], bridge_id);
    assert!(page2["next_cursor"].is_null());

    // Archive hides it from the default list; null clears the description.
    let (status, archived) = call(
        &app,
        Method::PATCH,
        &format!("/api/v1/projects/{bridge_id}"),
        token,
        Some(json!({"archived": true, "description": null})),
    )
    .await;
    assert_eq!(status, 200, "{archived}");
    assert_eq!(archived["archived"], true);
    assert!(archived["description"].is_null());
    let (_, active) = call(&app, Method::GET, "/api/v1/projects", token, None).await;
    assert_eq!(active["items"].as_array().unwrap().len(), 2);
    let (_, only) = call(
        &app,
        Method::GET,
        "/api/v1/projects?archived=archived",
        token,
        None,
    )
    .await;
    assert_eq!(only["items"][0]["id"], bridge_id);
    let (status, problem) = call(
        &app,
        Method::GET,
        "/api/v1/projects?archived=maybe",
        token,
        None,
    )
    .await;
    assert_eq!(status, 400, "{problem}");

    // Members: idempotent add, list, remove (audited).
    let ada = team_member(&app, token, "Ada", "ada@example.com").await;
    let path = format!("/api/v1/projects/{bridge_id}/members/{ada}");
    let (status, _) = call(&app, Method::PUT, &path, token, None).await;
    assert_eq!(status, 201);
    let (status, _) = call(&app, Method::PUT, &path, token, None).await;
    assert_eq!(status, 200);
    let (_, members) = call(
        &app,
        Method::GET,
        &format!("/api/v1/projects/{bridge_id}/members"),
        token,
        None,
    )
    .await;
    assert_eq!(members["items"][0]["email"], "ada@example.com");
    let (_, got) = call(
        &app,
        Method::GET,
        &format!("/api/v1/projects/{bridge_id}"),
        token,
        None,
    )
    .await;
    assert_eq!(got["member_count"], 1);
    let (status, _) = call(&app, Method::DELETE, &path, token, None).await;
    assert_eq!(status, 204);
    let (status, problem) = call(&app, Method::DELETE, &path, token, None).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (404, Some("project_member_not_found"))
    );

    // Delete takes the tasks along and is audited with their number.
    task(
        &app,
        token,
        json!({"project_id": bridge_id, "title": "Paint"}),
    )
    .await;
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/projects/{bridge_id}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("/api/v1/projects/{bridge_id}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (tasks_deleted,): (Value,) = sqlx::query_as(
        "SELECT metadata->'tasks_deleted' FROM audit_log WHERE action = 'project.deleted'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(tasks_deleted, 1);
    let removed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'project.member_removed'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(removed, 1);
}

#[tokio::test]
async fn health_and_velocity_follow_the_tasks() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let token = admin.access_token.as_str();
    let p = project(&app, token, "Bridge").await;
    let past = (chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339();
    // Four open tasks: healthy, at risk, critical, healthy but overdue → trouble 0.5 + 1 + 0.5
    // = 2 of 4 → 50.
    for (title, health, due) in [
        ("a", "healthy", None),
        ("b", "at_risk", None),
        ("c", "critical", Some(past.clone())),
        ("d", "healthy", Some(past.clone())),
    ] {
        task(
            &app,
            token,
            json!({"project_id": p, "title": title, "health_status": health, "due_at": due}),
        )
        .await;
    }
    let (_, got) = call(
        &app,
        Method::GET,
        &format!("/api/v1/projects/{p}"),
        token,
        None,
    )
    .await;
    assert_eq!(got["health_score"], 50.0, "{got}");
    assert_eq!(got["task_counts"]["backlog"], 4);
    assert_eq!(got["task_counts"]["overdue"], 2);
    // Eight tasks done in the last four weeks → two a week; done tasks no longer count
    // against health.
    for i in 0..8 {
        task(
            &app,
            token,
            json!({"project_id": p, "title": format!("done {i}"), "status": "done"}),
        )
        .await;
    }
    let (_, got) = call(
        &app,
        Method::GET,
        &format!("/api/v1/projects/{p}"),
        token,
        None,
    )
    .await;
    assert_eq!(got["velocity"], 2.0, "{got}");
    assert_eq!(got["health_score"], 50.0);
    let (_, below) = call(
        &app,
        Method::GET,
        "/api/v1/projects?health_below=60",
        token,
        None,
    )
    .await;
    assert_eq!(below["items"].as_array().unwrap().len(), 1);
    let (_, below) = call(
        &app,
        Method::GET,
        "/api/v1/projects?health_below=50",
        token,
        None,
    )
    .await;
    assert_eq!(below["items"].as_array().unwrap().len(), 0);
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/projects?health_below=101",
        token,
        None,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn moves_keep_a_stable_order_complete_and_reopen_and_are_recorded() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let token = admin.access_token.as_str();
    let p = project(&app, token, "Bridge").await;
    let mut ids = std::collections::HashMap::new();
    for title in ["a", "b", "c", "d"] {
        let t = task(&app, token, json!({"project_id": p, "title": title})).await;
        assert_eq!(t["status"], "backlog");
        ids.insert(title, t["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        column(&app, token, &p, "backlog").await,
        ["a", "b", "c", "d"]
    );
    let mv = |title: &'static str, body: Value| {
        let app = &app;
        let id = ids[title].clone();
        async move {
            call(
                app,
                Method::POST,
                &format!("/api/v1/tasks/{id}/move"),
                token,
                Some(body),
            )
            .await
        }
    };
    let (status, moved) = mv("d", json!({"status": "backlog", "at": "top"})).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        column(&app, token, &p, "backlog").await,
        ["d", "a", "b", "c"]
    );
    mv("c", json!({"status": "backlog", "after_task_id": ids["d"]})).await;
    assert_eq!(
        column(&app, token, &p, "backlog").await,
        ["d", "c", "a", "b"]
    );
    mv(
        "d",
        json!({"status": "backlog", "before_task_id": ids["b"]}),
    )
    .await;
    assert_eq!(
        column(&app, token, &p, "backlog").await,
        ["c", "a", "d", "b"]
    );

    // To done: completed; back out: reopened. Each change of column is in the history.
    let (_, done) = mv("a", json!({"status": "done"})).await;
    assert_eq!(done["status"], "done");
    assert!(done["completed_at"].is_string());
    let (_, reopened) = mv("a", json!({"status": "active"})).await;
    assert!(reopened["completed_at"].is_null());
    assert_eq!(column(&app, token, &p, "backlog").await, ["c", "d", "b"]);
    assert_eq!(column(&app, token, &p, "active").await, ["a"]);
    let (_, history) = call(
        &app,
        Method::GET,
        &format!("/api/v1/tasks/{}/history", ids["a"]),
        token,
        None,
    )
    .await;
    let actions: Vec<(&str, Value)> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["details"].clone()))
        .collect();
    assert_eq!(
        actions,
        [
            ("status_changed", json!({"from": "done", "to": "active"})),
            ("status_changed", json!({"from": "backlog", "to": "done"})),
            ("created", json!({"status": "backlog"})),
        ]
    );

    // Neighbours sharing a position (two creates raced): the column is renumbered in its
    // current order and the task lands between them.
    sqlx::query("UPDATE tasks SET position = 7 WHERE id = ANY($1::uuid[])")
        .bind(vec![
            ids["c"].parse::<uuid::Uuid>().unwrap(),
            ids["d"].parse::<uuid::Uuid>().unwrap(),
            ids["b"].parse::<uuid::Uuid>().unwrap(),
        ])
        .execute(&app.pool)
        .await
        .unwrap();
    let order = column(&app, token, &p, "backlog").await;
    let (status, _) = mv(
        "a",
        json!({"status": "backlog", "after_task_id": ids[order[0].as_str()]}),
    )
    .await;
    assert_eq!(status, 200);
    let mut expected = order.clone();
    expected.insert(1, "a".into());
    assert_eq!(column(&app, token, &p, "backlog").await, expected);
    assert_eq!(expected, ["b", "a", "c", "d"]);
    // Many moves into the same gap (right after `b`: 140 halvings, far more digits than a
    // midpoint keeps) never run out of room: the column is renumbered when it must.
    for _ in 0..70 {
        for title in ["c", "d"] {
            let (status, _) = mv(
                title,
                json!({"status": "backlog", "after_task_id": ids["b"]}),
            )
            .await;
            assert_eq!(status, 200);
        }
    }
    assert_eq!(
        column(&app, token, &p, "backlog").await,
        ["b", "d", "c", "a"]
    );

    // Anchors must be other tasks of the target column; one placement at most.
    let (status, problem) = mv("a", json!({"status": "done", "after_task_id": ids["c"]})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = mv("a", json!({"status": "backlog", "after_task_id": ids["a"]})).await;
    assert_eq!(status, 422);
    let (status, _) = mv(
        "a",
        json!({"status": "backlog", "after_task_id": ids["c"], "at": "top"}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, problem) = mv("a", json!({"status": "finished"})).await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/api/v1/tasks/{}/move", uuid::Uuid::now_v7()),
        token,
        Some(json!({"status": "done"})),
    )
    .await;
    assert_eq!(status, 404);
}

async fn count(app: &TestApp, token: &str, query: &str) -> usize {
    let (status, list) = call(app, Method::GET, query, token, None).await;
    assert_eq!(status, 200, "{query}: {list}");
    list["items"].as_array().unwrap().len()
}

#[tokio::test]
async fn details_history_and_filters() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let token = admin.access_token.as_str();
    let p = project(&app, token, "Bridge").await;
    let other = project(&app, token, "Tunnel").await;
    let ada = team_member(&app, token, "Ada", "ada@example.com").await;
    let t = task(
        &app,
        token,
        json!({"project_id": p, "title": "Rivets", "contact_person": "Mary", "people_count": 4,
               "process_stage": "in_progress", "health_status": "at_risk", "status": "active",
               "assignee_ids": [ada]}),
    )
    .await;
    assert_eq!(t["assignee_ids"], json!([ada]));
    assert_eq!(t["process_stage"], "in_progress");
    let id = t["id"].as_str().unwrap();
    task(&app, token, json!({"project_id": other, "title": "Lights"})).await;

    // ETag changes with the task.
    let tag_of = |app: &TestApp| {
        let url = app.url(&format!("/api/v1/tasks/{id}"));
        let client = app.client.clone();
        async move {
            let r = client.get(url).bearer_auth(token).send().await.unwrap();
            r.headers()["etag"].to_str().unwrap().to_owned()
        }
    };
    let before = tag_of(&app).await;
    let (status, patched) = call(
        &app,
        Method::PATCH,
        &format!("/api/v1/tasks/{id}"),
        token,
        Some(json!({"contact_person": null, "health_status": "critical", "people_count": 5})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert!(patched["contact_person"].is_null());
    assert_ne!(tag_of(&app).await, before);

    // Work log: a note and time spent.
    let (status, entry) = call(
        &app,
        Method::POST,
        &format!("/api/v1/tasks/{id}/history"),
        token,
        Some(json!({"kind": "work_logged", "minutes": 90, "note": "Spans 3 and 4"})),
    )
    .await;
    assert_eq!(status, 201, "{entry}");
    assert_eq!(
        entry["details"],
        json!({"minutes": 90, "note": "Spans 3 and 4"})
    );
    let (_, history) = call(
        &app,
        Method::GET,
        &format!("/api/v1/tasks/{id}/history"),
        token,
        None,
    )
    .await;
    let actions: Vec<&str> = history["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["work_logged", "updated", "assigned", "created"]);
    assert_eq!(
        history["items"][1]["details"]["fields"],
        json!(["contact_person", "people_count", "health_status"])
    );
    // The history is append-only in the database too.
    let refused = sqlx::query("UPDATE task_work_history SET action = 'x'")
        .execute(&app.pool)
        .await;
    assert!(refused.is_err());

    assert_eq!(count(&app, token, "/api/v1/tasks").await, 2);
    assert_eq!(
        count(&app, token, &format!("/api/v1/tasks?project_id={p}")).await,
        1
    );
    assert_eq!(count(&app, token, "/api/v1/tasks?status=active").await, 1);
    assert_eq!(count(&app, token, "/api/v1/tasks?status=gap").await, 0);
    assert_eq!(
        count(&app, token, &format!("/api/v1/tasks?assignee_id={ada}")).await,
        1
    );
    assert_eq!(
        count(&app, token, "/api/v1/tasks?health_status=critical").await,
        1
    );
    assert_eq!(
        count(&app, token, "/api/v1/tasks?process_stage=in_progress").await,
        1
    );
    assert_eq!(count(&app, token, "/api/v1/tasks?q=RIV").await, 1);
    let later = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339()
        .replace('+', "%2B");
    assert_eq!(
        count(&app, token, &format!("/api/v1/tasks?updated_after={later}")).await,
        0
    );
    assert_eq!(
        count(
            &app,
            token,
            &format!("/api/v1/tasks?updated_before={later}")
        )
        .await,
        2
    );
    let (status, _) = call(
        &app,
        Method::GET,
        "/api/v1/tasks?health_status=meh",
        token,
        None,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn bad_input_is_refused_with_every_field_named_and_nothing_written() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let token = admin.access_token.as_str();
    let p = project(&app, token, "Bridge").await;
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/projects",
        token,
        Some(json!({"name": " ", "description": "d".repeat(10_001)})),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(field_names(&problem), ["name", "description"]);
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/projects",
        token,
        Some(json!({"name": "Bridge", "description": "a\u{0}b"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["description".to_owned()])
    );
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/tasks",
        token,
        Some(json!({"project_id": p, "title": "", "people_count": -1,
                    "contact_person": "x".repeat(201)})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        field_names(&problem),
        ["title", "contact_person", "people_count"]
    );
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/tasks",
        token,
        Some(json!({"project_id": uuid::Uuid::now_v7(), "title": "t"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["project_id".to_owned()])
    );
    // An unknown assignee rolls the whole create back.
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/tasks",
        token,
        Some(json!({"project_id": p, "title": "t", "assignee_ids": [uuid::Uuid::now_v7()]})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["assignee_ids".to_owned()])
    );
    let (status, problem) = call(
        &app,
        Method::POST,
        "/api/v1/tasks",
        token,
        Some(json!({"project_id": p, "title": "t", "status": "someday", "colour": "red"})),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    let tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(tasks, 0);

    let t = task(&app, token, json!({"project_id": p, "title": "t"})).await;
    let id = t["id"].as_str().unwrap();
    let (status, problem) = call(
        &app,
        Method::PATCH,
        &format!("/api/v1/tasks/{id}"),
        token,
        Some(json!({"title": null})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&problem)),
        (422, vec!["title".to_owned()])
    );
    for (body, field) in [
        (json!({"kind": "note"}), "note"),
        (json!({"kind": "work_logged"}), "minutes"),
        (json!({"kind": "work_logged", "minutes": 2000}), "minutes"),
        (
            json!({"kind": "note", "note": "n", "occurred_at": "2999-01-01T00:00:00Z"}),
            "occurred_at",
        ),
    ] {
        let (status, problem) = call(
            &app,
            Method::POST,
            &format!("/api/v1/tasks/{id}/history"),
            token,
            Some(body.clone()),
        )
        .await;
        assert_eq!(
            (status.as_u16(), field_names(&problem)),
            (422, vec![field.to_owned()]),
            "{body}"
        );
    }
}

#[tokio::test]
async fn an_assignment_sends_one_email_and_roles_limit_who_may_do_what() {
    let smtp = SmtpSink::start().await;
    let mut builder = TestApp::builder();
    for (key, value) in smtp.env() {
        builder = builder.env(key, value);
    }
    let app = builder.spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Works").await;
    let token = admin.access_token.as_str();
    let member = fixtures::member(&app, admin.organization_id, "m@example.com", Role::Member).await;
    let viewer = fixtures::member(&app, admin.organization_id, "v@example.com", Role::Viewer).await;
    let p = project(&app, token, "Harbour Bridge").await;
    let ada = team_member(&app, token, "Ada Lovelace", "ada@example.com").await;

    // A member creates and assigns; a viewer reads only; deleting needs a lead.
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/projects",
        &member.access_token,
        Some(json!({"name": "Mine"})),
    )
    .await;
    assert_eq!(status, 403);
    let t = task(
        &app,
        &member.access_token,
        json!({"project_id": p, "title": "Inspect rivets", "due_at": "2030-05-01T12:00:00Z"}),
    )
    .await;
    let id = t["id"].as_str().unwrap();
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/tasks",
        &viewer.access_token,
        Some(json!({"project_id": p, "title": "x"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("/api/v1/tasks/{id}"),
        &viewer.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200);

    let path = format!("/api/v1/tasks/{id}/assignees/{ada}");
    let (status, assigned) = call(&app, Method::PUT, &path, &member.access_token, None).await;
    assert_eq!(status, 201, "{assigned}");
    assert_eq!(assigned["assignee_ids"], json!([ada]));
    let (status, _) = call(&app, Method::PUT, &path, &member.access_token, None).await;
    assert_eq!(status, 200);
    let (status, problem) = call(
        &app,
        Method::PUT,
        &format!("/api/v1/tasks/{id}/assignees/{}", uuid::Uuid::now_v7()),
        &member.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (404, Some("team_member_not_found"))
    );
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "one email for one assignment");
    let text = messages[0].decoded();
    assert!(messages[0].to.iter().any(|t| t.contains("ada@example.com")));
    for expected in [
        "Inspect rivets",
        "Harbour Bridge",
        "Ada Lovelace",
        "2030-05-01",
        &format!("/tasks/{id}"),
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }

    let (status, _) = call(&app, Method::DELETE, &path, &member.access_token, None).await;
    assert_eq!(status, 204);
    let (status, _) = call(&app, Method::DELETE, &path, &member.access_token, None).await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/tasks/{id}"),
        &member.access_token,
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = call(
        &app,
        Method::DELETE,
        &format!("/api/v1/tasks/{id}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE action LIKE 'task.%' ORDER BY created_at",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(audited, ["task.unassigned", "task.deleted"]);
}

#[tokio::test]
async fn another_organization_sees_none_of_it_and_cannot_use_its_people() {
    let app = TestApp::spawn().await;
    let a = fixtures::register(&app, "a@example.com", "A").await;
    let b = fixtures::register(&app, "b@example.com", "B").await;
    let pa = project(&app, &a.access_token, "secret-of-a").await;
    let ta = task(
        &app,
        &a.access_token,
        json!({"project_id": pa, "title": "secret-of-a"}),
    )
    .await;
    let ta = ta["id"].as_str().unwrap();
    let ada = team_member(&app, &a.access_token, "Ada", "ada@example.com").await;
    let pb = project(&app, &b.access_token, "B's").await;
    let tb = task(
        &app,
        &b.access_token,
        json!({"project_id": pb, "title": "B's"}),
    )
    .await;
    let tb = tb["id"].as_str().unwrap();

    let (_, list) = call(&app, Method::GET, "/api/v1/tasks", &b.access_token, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    let (_, list) = call(&app, Method::GET, "/api/v1/projects", &b.access_token, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // B cannot put A's task in its column, nor A's person on its task or project.
    let (status, _) = call(
        &app,
        Method::POST,
        &format!("/api/v1/tasks/{tb}/move"),
        &b.access_token,
        Some(json!({"status": "backlog", "after_task_id": ta})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/api/v1/tasks/{tb}/assignees/{ada}"),
        &b.access_token,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        Method::PUT,
        &format!("/api/v1/projects/{pb}/members/{ada}"),
        &b.access_token,
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/tasks",
        &b.access_token,
        Some(json!({"project_id": pa, "title": "into A"})),
    )
    .await;
    assert_eq!(status, 422);
    let (status, _) = call(
        &app,
        Method::GET,
        &format!("/api/v1/tasks?project_id={pa}"),
        &b.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let a_tasks: i64 = sqlx::query_scalar("SELECT count(*) FROM tasks WHERE project_id = $1")
        .bind(pa.parse::<uuid::Uuid>().unwrap())
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(a_tasks, 1);
}
