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
