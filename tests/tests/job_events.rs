//! `zoark_job_events`: every change of a tenant job reaches the listeners once, however long the
//! kind and queue names the schema allows, and the API's reader parses every payload.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, time::Duration};

use sqlx::postgres::PgListener;
use uuid::Uuid;
use zoark_api::events::JobEvent;
use zoark_tests::{TestApp, fixtures};

const JOBS: usize = 300;

/// Reads notifications until `expected` events have arrived (or 10 s pass), then half a second
/// more to catch any extra; every payload must parse as the API's `Vec<JobEvent>`.
async fn receive(listener: &mut PgListener, expected: usize) -> Vec<JobEvent> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let wait = if events.len() < expected {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            Duration::from_millis(500)
        };
        let Ok(notification) = tokio::time::timeout(wait, listener.recv()).await else {
            return events;
        };
        let notification = notification.unwrap();
        let payload = notification.payload();
        assert!(payload.len() < 8000, "payload of {} bytes", payload.len());
        let batch: Vec<JobEvent> = serde_json::from_str(payload)
            .unwrap_or_else(|e| panic!("the API cannot read {payload}: {e}"));
        events.extend(batch);
    }
}

/// Every job of `ids`, and no other, appears exactly once among `events`.
fn assert_each_announced_once(events: &[JobEvent], ids: &[Uuid], change: &str) {
    let mut counts: HashMap<Uuid, usize> = HashMap::new();
    for event in events {
        *counts.entry(event.id).or_default() += 1;
    }
    assert_eq!(counts.len(), ids.len(), "every {change} job is announced");
    assert!(
        ids.iter().all(|id| counts.get(id) == Some(&1)),
        "each {change} job is announced exactly once"
    );
}

#[tokio::test]
async fn hundreds_of_tenant_jobs_with_the_longest_names_are_written_in_one_statement_and_each_change_is_announced_once()
 {
    let app = TestApp::spawn().await;
    let org = fixtures::organization(&app.pool, "Acme").await;
    // The longest names the CHECKs on jobs allow: 100 and 64 characters.
    let kind = format!(
        "reports.{}",
        "monthly_revenue_".repeat(6).get(..92).unwrap()
    );
    let queue = format!("tenant-exports-{}", "x".repeat(49));
    assert_eq!((kind.len(), queue.len()), (100, 64));
    let mut listener = PgListener::connect_with(&app.pool).await.unwrap();
    listener.listen("zoark_job_events").await.unwrap();

    let ids: Vec<Uuid> = sqlx::query_scalar(
        "INSERT INTO jobs (organization_id, kind, queue, args, max_attempts)
         SELECT $1, $2, $3, jsonb_build_object('n', n), 20 FROM generate_series(1, $4) AS n
         RETURNING id",
    )
    .bind(org)
    .bind(&kind)
    .bind(&queue)
    .bind(i32::try_from(JOBS).unwrap())
    .fetch_all(&app.pool)
    .await
    .expect("the insert of every job in one statement succeeds");
    assert_eq!(ids.len(), JOBS);
    let inserted = receive(&mut listener, JOBS).await;
    assert_each_announced_once(&inserted, &ids, "inserted");
    assert!(inserted.iter().all(|e| e.organization_id == org
        && e.kind == kind
        && e.queue == queue
        && e.state == "available"));

    let updated = sqlx::query(
        "UPDATE jobs SET state = 'cancelled', cancel_requested_at = now(), finalized_at = now()
         WHERE organization_id = $1",
    )
    .bind(org)
    .execute(&app.pool)
    .await
    .expect("the update of every job in one statement succeeds");
    assert_eq!(updated.rows_affected(), JOBS as u64);
    let cancelled = receive(&mut listener, JOBS).await;
    assert_each_announced_once(&cancelled, &ids, "updated");
    assert!(cancelled.iter().all(|e| e.state == "cancelled"));
}

/// The next close frame's code, within `within`.
async fn closed_with(
    socket: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    within: Duration,
) -> Option<u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .ok()??;
        if let Ok(Message::Close(frame)) = next {
            return frame.map(|f| u16::from(f.code));
        }
    }
}

#[tokio::test]
async fn an_open_stream_closes_when_its_session_is_revoked_or_its_key_or_member_removed() {
    let app = TestApp::builder()
        .env("ZOARK_STREAM_RECHECK_SECS", "1")
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "A").await;
    let member = fixtures::member(
        &app,
        admin.organization_id,
        "m@example.com",
        zoark_core::access::Role::Member,
    )
    .await;
    let key = fixtures::api_key(
        &app.pool,
        admin.organization_id,
        zoark_core::access::Role::Viewer,
    )
    .await;
    let mut by_admin = zoark_tests::event_socket(&app, &admin.access_token).await;
    let mut by_member = zoark_tests::event_socket(&app, &member.access_token).await;
    let mut by_key = zoark_tests::event_socket(&app, &key).await;
    // Live callers keep their streams across checks.
    assert_eq!(
        closed_with(&mut by_admin, Duration::from_millis(2500)).await,
        None
    );

    // Sign-out, removal from the organization, a revoked key: each stream closes (1008).
    let out = app
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            Some(&admin.access_token),
            None,
        )
        .await;
    assert!(out.status().is_success());
    sqlx::query("DELETE FROM memberships WHERE user_id = $1")
        .bind(member.user_id)
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE api_keys SET revoked_at = now()")
        .execute(&app.pool)
        .await
        .unwrap();
    for socket in [&mut by_admin, &mut by_member, &mut by_key] {
        assert_eq!(
            closed_with(socket, Duration::from_secs(5)).await,
            Some(1008)
        );
    }
}
