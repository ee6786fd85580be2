//! The team directory: create (idempotent), list with filters and pages, get with ETag and
//! If-None-Match, patch (null clears), delete (audited); validation and permissions.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use zoark_core::access::Role;
use zoark_tests::call;
use zoark_tests::{TestApp, field_names, fixtures};

#[tokio::test]
async fn the_directory_keeps_people_with_their_hours_and_answers_304_while_unchanged() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let (status, ada) = call(
        &app,
        Method::POST,
        "/api/v1/team-members",
        token,
        Some(
            json!({"name": "Ada Lovelace", "email": "ada@example.com", "role": "Engineer",
                    "department": "R&D", "time_zone": "Europe/London", "work_starts_at": "09:00",
                    "work_ends_at": "17:30", "working_days": [5, 1, 2, 2]}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{ada}");
    assert_eq!(ada["work_ends_at"], "17:30");
    assert_eq!(ada["working_days"], json!([1, 2, 5]));
    let id = ada["id"].as_str().unwrap().to_owned();
    for (name, email, dept) in [
        ("Grace", "grace@example.com", "Ops"),
        ("Linus", "linus@example.com", "r&d"),
    ] {
        let (status, _) = call(
            &app,
            Method::POST,
            "/api/v1/team-members",
            token,
            Some(json!({"name": name, "email": email, "department": dept})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let (status, dup) = call(
        &app,
        Method::POST,
        "/api/v1/team-members",
        token,
        Some(json!({"name": "Again", "email": "ADA@example.com"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), dup["code"].as_str()),
        (409, Some("team_member_exists"))
    );

    let (_, list) = call(
        &app,
        Method::GET,
        "/api/v1/team-members?department=R%26D",
        token,
        None,
    )
    .await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Linus", "Ada Lovelace"]);
    let (_, list) = call(&app, Method::GET, "/api/v1/team-members?q=GRA", token, None).await;
    assert_eq!(list["items"][0]["email"], "grace@example.com");
    let (_, list) = call(&app, Method::GET, "/api/v1/team-members?q=%25", token, None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        0,
        "% is matched literally"
    );
    let (_, page) = call(
        &app,
        Method::GET,
        "/api/v1/team-members?limit=2",
        token,
        None,
    )
    .await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = call(
        &app,
        Method::GET,
        &format!("/api/v1/team-members?limit=2&cursor={cursor}"),
        token,
        None,
    )
    .await;
    assert_eq!(rest["items"][0]["name"], "Ada Lovelace");

    // ETag and If-None-Match.
    let path = format!("/api/v1/team-members/{id}");
    let first = app.call(Method::GET, &path, Some(token), None).await;
    let tag = first.headers()["etag"].to_str().unwrap().to_owned();
    let cached = app
        .client
        .get(app.url(&path))
        .bearer_auth(token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    let (status, patched) = call(
        &app,
        Method::PATCH,
        &path,
        token,
        Some(json!({"department": null, "work_starts_at": null, "work_ends_at": null})),
    )
    .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        (
            patched["department"].clone(),
            patched["work_starts_at"].clone()
        ),
        (Value::Null, Value::Null)
    );
    assert_eq!(patched["role"], "Engineer", "absent fields stay");
    let changed = app
        .client
        .get(app.url(&path))
        .bearer_auth(token)
        .header("If-None-Match", &tag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_ne!(changed.headers()["etag"].to_str().unwrap(), tag);

    let (status, _) = call(&app, Method::DELETE, &path, token, None).await;
    assert_eq!(status, 204);
    let (status, gone) = call(&app, Method::GET, &path, token, None).await;
    assert_eq!(
        (status.as_u16(), gone["code"].as_str()),
        (404, Some("team_member_not_found"))
    );
    let action: String =
        sqlx::query_scalar("SELECT action FROM audit_log WHERE action = 'team_member.deleted'")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(action, "team_member.deleted");
}

#[tokio::test]
async fn bad_people_are_refused_field_by_field_and_viewers_only_read() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/team-members",
        token,
        Some(
            json!({"name": "", "email": "nope", "avatar_url": "javascript:alert(1)",
                    "time_zone": "Mars/Olympus", "work_starts_at": "18:00", "work_ends_at": "09:00",
                    "working_days": [0, 8]}),
        ),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        field_names(&body),
        [
            "name",
            "email",
            "avatar_url",
            "time_zone",
            "work_ends_at",
            "working_days"
        ]
    );
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/team-members",
        token,
        Some(json!({"name": "Half", "email": "half@example.com", "work_starts_at": "09:00"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), field_names(&body)),
        (422, vec!["work_starts_at".to_owned()])
    );

    // The same Idempotency-Key replays; viewers read but do not write.
    let post = |key: &'static str| {
        let request = app
            .client
            .post(app.url("/api/v1/team-members"))
            .bearer_auth(token)
            .header("Idempotency-Key", key)
            .json(&json!({"name": "Once", "email": "once@example.com"}));
        async move { request.send().await.unwrap() }
    };
    let first = post("member-1").await;
    let second = post("member-1").await;
    assert_eq!(
        (first.status(), second.status()),
        (StatusCode::CREATED, StatusCode::CREATED)
    );
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let viewer = fixtures::member(&app, admin.organization_id, "v@example.com", Role::Viewer).await;
    let (status, list) = call(
        &app,
        Method::GET,
        "/api/v1/team-members",
        &viewer.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), list["items"].as_array().unwrap().len()),
        (200, 1)
    );
    let (status, _) = call(
        &app,
        Method::POST,
        "/api/v1/team-members",
        &viewer.access_token,
        Some(json!({"name": "X", "email": "x@example.com"})),
    )
    .await;
    assert_eq!(status, 403);
}
