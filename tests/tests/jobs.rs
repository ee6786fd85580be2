//! The job engine's semantics against real Postgres: transactional enqueue, priorities, delayed
//! jobs, persisted retries, discarding, snooze, timeouts, panics, unknown kinds, rescue,
//! cancellation, manual retry, unique jobs, pruning and graceful shutdown.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;
use zoark_jobs::{Job, JobState, NewJob, Opts, Priority, enqueue, enqueue_many};
use zoark_tests::{TestApp, engine_config};
use zoark_worker::engine::{JobContext, JobError, Registry};

/// A test job: what it does is decided by the handler the test registers.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Probe {
    label: String,
}

impl Job for Probe {
    const NAME: &'static str = "test.probe";
    const QUEUE: &'static str = "test";
    const MAX_ATTEMPTS: i32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(2);

    fn backoff(_attempt: i32) -> Duration {
        Duration::from_millis(50)
    }
}

/// Like [`Probe`], with the platform's real backoff (tens of seconds).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SlowRetry {}

impl Job for SlowRetry {
    const NAME: &'static str = "test.slow_retry";
    const QUEUE: &'static str = "test";
}

fn probe(label: &str) -> Probe {
    Probe {
        label: label.to_owned(),
    }
}

#[derive(Debug)]
struct Row {
    state: String,
    attempt: i32,
    errors: Value,
    run_at: DateTime<Utc>,
}

async fn row(app: &TestApp, id: Uuid) -> Row {
    let (state, attempt, errors, run_at) =
        sqlx::query_as::<_, (String, i32, Value, DateTime<Utc>)>(
            "SELECT state, attempt, errors, run_at FROM jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    Row {
        state,
        attempt,
        errors,
        run_at,
    }
}

async fn wait_for(app: &TestApp, id: Uuid, state: &str, within: Duration) -> Row {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = row(app, id).await;
        if r.state == state {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} is {} (attempt {}, errors {}), expected {state} within {within:?}",
            r.state,
            r.attempt,
            r.errors
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn organization(app: &TestApp) -> Uuid {
    sqlx::query_scalar("INSERT INTO organizations (name) VALUES ('Acme') RETURNING id")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn push(app: &TestApp, job: &impl Job, opts: Opts) -> Uuid {
    let mut conn = app.pool.acquire().await.unwrap();
    enqueue(&mut conn, job, opts).await.unwrap().id
}

async fn wait_all_finished(app: &TestApp) {
    for _ in 0..250 {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE finalized_at IS NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
        if open == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("jobs still unfinished after 5 s");
}

fn error_kinds(r: &Row) -> Vec<String> {
    r.errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

/// A registry whose probe handler records labels and succeeds.
fn recording(seen: Arc<Mutex<Vec<String>>>) -> Registry {
    Registry::new().register(move |p: Probe, _: JobContext| {
        let seen = seen.clone();
        async move {
            seen.lock().unwrap().push(p.label);
            Ok(())
        }
    })
}

#[tokio::test]
async fn a_job_enqueued_in_a_rolled_back_transaction_never_exists() {
    let app = TestApp::spawn().await;
    let mut tx = app.pool.begin().await.unwrap();
    enqueue(&mut tx, &probe("ghost"), Opts::platform())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = app.pool.begin().await.unwrap();
    let kept = enqueue(&mut tx, &probe("kept"), Opts::platform())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(ids, vec![kept.id]);
    assert_eq!(kept.state, JobState::Available);
}

#[tokio::test]
async fn lower_priority_numbers_run_first() {
    let app = TestApp::spawn().await;
    for (label, priority) in [("p9", 9), ("p0", 0), ("p5", 5), ("p1", 1)] {
        push(
            &app,
            &probe(label),
            Opts::platform().priority(Priority::new(priority).unwrap()),
        )
        .await;
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let engine = app.start_engine(engine_config(&[("test", 1)]), recording(seen.clone()));
    wait_all_finished(&app).await;
    engine.stop().await;
    assert_eq!(*seen.lock().unwrap(), ["p0", "p1", "p5", "p9"]);
}

#[tokio::test]
async fn a_delayed_job_inserted_while_the_worker_idles_starts_on_time() {
    let app = TestApp::spawn().await;
    let started = Arc::new(Mutex::new(None));
    let s = started.clone();
    let registry = Registry::new().register(move |_: Probe, _: JobContext| {
        let s = s.clone();
        async move {
            *s.lock().unwrap() = Some(Utc::now());
            Ok(())
        }
    });
    // The poll backstop is 60 s: only the NOTIFY and the timer can start it on time.
    let engine = app.start_engine(engine_config(&[("test", 2)]), registry);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run_at = Utc::now() + chrono::Duration::milliseconds(1500);
    let id = push(&app, &probe("later"), Opts::platform().run_at(run_at)).await;
    assert_eq!(row(&app, id).await.state, "scheduled");
    wait_for(&app, id, "completed", Duration::from_secs(5)).await;
    engine.stop().await;
    let started = started.lock().unwrap().unwrap();
    let late = started - run_at;
    assert!(late >= chrono::Duration::zero(), "started {late} early");
    assert!(late <= chrono::Duration::seconds(1), "started {late} late");
}

#[tokio::test]
async fn a_failed_attempt_waits_for_its_stored_backoff_even_across_a_restart() {
    let app = TestApp::spawn().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let registry = || {
        let runs = runs.clone();
        Registry::new().register(move |_: SlowRetry, _: JobContext| {
            let runs = runs.clone();
            async move {
                if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                    Err(JobError::Retry(anyhow::anyhow!("provider unavailable")))
                } else {
                    Ok(())
                }
            }
        })
    };
    let id = push(&app, &SlowRetry {}, Opts::platform()).await;
    let engine = app.start_engine(engine_config(&[("test", 2)]), registry());
    let r = wait_for(&app, id, "retryable", Duration::from_secs(5)).await;
    assert_eq!(r.attempt, 1);
    assert_eq!(error_kinds(&r), ["error"]);
    assert!(
        r.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("provider unavailable")
    );
    let wait = r.run_at - Utc::now();
    assert!(
        wait > chrono::Duration::seconds(10),
        "backoff is only {wait}"
    );
    // A restarted worker does not claim it early.
    engine.stop().await;
    let engine = app.start_engine(engine_config(&[("test", 2)]), registry());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = row(&app, id).await;
    assert_eq!((r.state.as_str(), r.attempt), ("retryable", 1));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // When its time comes (moved forward here), it runs again and completes.
    sqlx::query("UPDATE jobs SET run_at = now() WHERE id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let r = wait_for(&app, id, "completed", Duration::from_secs(5)).await;
    engine.stop().await;
    assert_eq!(r.attempt, 2);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn exhausted_attempts_and_fatal_errors_discard_the_job_with_every_error_kept() {
    let app = TestApp::spawn().await;
    let registry = Registry::new().register(|p: Probe, ctx: JobContext| async move {
        if p.label == "fatal" {
            Err(JobError::Fatal(anyhow::anyhow!("invalid recipient")))
        } else {
            Err(JobError::Retry(anyhow::anyhow!(
                "attempt {} failed",
                ctx.attempt
            )))
        }
    });
    let flaky = push(&app, &probe("flaky"), Opts::platform()).await;
    let fatal = push(&app, &probe("fatal"), Opts::platform()).await;
    let engine = app.start_engine(engine_config(&[("test", 2)]), registry);
    let r = wait_for(&app, flaky, "discarded", Duration::from_secs(5)).await;
    let f = wait_for(&app, fatal, "discarded", Duration::from_secs(5)).await;
    engine.stop().await;
    assert_eq!(r.attempt, 3);
    let messages: Vec<&str> = r
        .errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["error"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["attempt 1 failed", "attempt 2 failed", "attempt 3 failed"]
    );
    assert_eq!(f.attempt, 1);
    assert_eq!(error_kinds(&f), ["fatal"]);
}

#[tokio::test]
async fn a_snoozed_job_runs_again_without_spending_an_attempt() {
    let app = TestApp::spawn().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let r2 = runs.clone();
    let registry = Registry::new().register(move |_: Probe, _: JobContext| {
        let runs = r2.clone();
        async move {
            if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(JobError::Snooze(Duration::from_millis(100)))
            } else {
                Ok(())
            }
        }
    });
    let id = push(&app, &probe("snooze"), Opts::platform()).await;
    let engine = app.start_engine(engine_config(&[("test", 1)]), registry);
    let r = wait_for(&app, id, "completed", Duration::from_secs(5)).await;
    engine.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(r.attempt, 1, "snoozes spent attempts");
    assert_eq!(r.errors, serde_json::json!([]));
}

#[tokio::test]
async fn timeouts_panics_and_unknown_kinds_are_recorded_and_the_worker_keeps_going() {
    let app = TestApp::spawn().await;
    let registry = Registry::new().register(|p: Probe, _: JobContext| async move {
        match p.label.as_str() {
            "slow" => tokio::time::sleep(Duration::from_secs(30)).await,
            "panic" => panic!("boom in the handler"),
            _ => {}
        }
        Ok(())
    });
    let opts = || Opts::platform().max_attempts(1);
    let slow = push(&app, &probe("slow"), opts()).await;
    let panics = push(&app, &probe("panic"), opts()).await;
    let unknown: Uuid = sqlx::query_scalar(
        "INSERT INTO jobs (kind, queue, args, max_attempts) VALUES ('nobody.handles_this', 'test', '{}', 5) RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let fine = push(&app, &probe("fine"), opts()).await;
    let engine = app.start_engine(engine_config(&[("test", 4)]), registry);
    let s = wait_for(&app, slow, "discarded", Duration::from_secs(5)).await;
    let p = wait_for(&app, panics, "discarded", Duration::from_secs(5)).await;
    let u = wait_for(&app, unknown, "discarded", Duration::from_secs(5)).await;
    wait_for(&app, fine, "completed", Duration::from_secs(5)).await;
    engine.stop().await;
    assert_eq!(error_kinds(&s), ["timeout"]);
    assert_eq!(error_kinds(&p), ["panic"]);
    assert!(
        p.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("boom in the handler")
    );
    assert_eq!(
        error_kinds(&u),
        ["unknown_kind"],
        "an unknown kind is discarded at once"
    );
    assert!(
        u.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("nobody.handles_this")
    );
}

#[tokio::test]
async fn the_running_jobs_of_a_dead_worker_are_rescued_and_run_again() {
    let app = TestApp::spawn().await;
    let id = push(&app, &probe("orphan"), Opts::platform()).await;
    // A worker that claimed the job and then died: its heartbeat stopped 10 s ago.
    let dead: Uuid = sqlx::query_scalar(
        "INSERT INTO job_workers (hostname, pid, queues, heartbeat_at) VALUES ('gone', 1, '{test}', now() - interval '10 seconds') RETURNING id",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE jobs SET state = 'running', attempt = 1, worker_id = $1, attempted_at = now() WHERE id = $2")
        .bind(dead)
        .bind(id)
        .execute(&app.pool)
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let engine = app.start_engine(engine_config(&[("test", 1)]), recording(seen.clone()));
    let r = wait_for(&app, id, "completed", Duration::from_secs(5)).await;
    engine.stop().await;
    assert_eq!(r.attempt, 2);
    assert_eq!(error_kinds(&r), ["rescued"]);
    assert_eq!(*seen.lock().unwrap(), ["orphan"]);
}

#[tokio::test]
async fn a_long_job_on_a_live_worker_is_not_rescued_and_runs_once() {
    let app = TestApp::spawn().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let registry = || {
        let runs = runs.clone();
        Registry::new().register(move |_: SlowRetry, _: JobContext| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                // Longer than rescue_after (3 s), shorter than the kind's timeout.
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(())
            }
        })
    };
    let id = push(&app, &SlowRetry {}, Opts::platform()).await;
    let one = app.start_engine(engine_config(&[("test", 1)]), registry());
    wait_for(&app, id, "running", Duration::from_secs(5)).await;
    let two = app.start_engine(engine_config(&[("test", 1)]), registry());
    let r = wait_for(&app, id, "completed", Duration::from_secs(10)).await;
    one.stop().await;
    two.stop().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!((r.attempt, r.errors.clone()), (1, serde_json::json!([])));
}

#[tokio::test]
async fn waiting_jobs_cancel_at_once_and_running_ones_cooperatively() {
    let app = TestApp::spawn().await;
    let registry = Registry::new().register(|_: Probe, ctx: JobContext| async move {
        ctx.cancelled.cancelled().await;
        Ok(())
    });
    let scheduled = push(
        &app,
        &probe("later"),
        Opts::platform().run_at(Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    let running = push(&app, &probe("now"), Opts::platform()).await;
    let engine = app.start_engine(engine_config(&[("test", 1)]), registry);
    wait_for(&app, running, "running", Duration::from_secs(5)).await;
    let mut conn = app.pool.acquire().await.unwrap();
    let job = zoark_jobs::admin::cancel(&mut conn, None, scheduled)
        .await
        .unwrap();
    assert_eq!(job.state, "cancelled");
    let job = zoark_jobs::admin::cancel(&mut conn, None, running)
        .await
        .unwrap();
    assert_eq!(job.state, "running", "a running job is asked to stop");
    let r = wait_for(&app, running, "cancelled", Duration::from_secs(2)).await;
    assert_eq!(error_kinds(&r), ["cancelled"]);
    let again = zoark_jobs::admin::cancel(&mut conn, None, running).await;
    assert!(
        matches!(again, Err(zoark_jobs::admin::AdminError::WrongState(..))),
        "{again:?}"
    );
    drop(conn);
    engine.stop().await;
}

#[tokio::test]
async fn discarded_and_cancelled_jobs_can_be_retried_by_hand() {
    let app = TestApp::spawn().await;
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = fail.clone();
    let registry = Registry::new().register(move |_: Probe, _: JobContext| {
        let fail = f.clone();
        async move {
            if fail.load(Ordering::SeqCst) {
                Err(JobError::Fatal(anyhow::anyhow!("not yet")))
            } else {
                Ok(())
            }
        }
    });
    let discarded = push(&app, &probe("d"), Opts::platform()).await;
    let cancelled = push(
        &app,
        &probe("c"),
        Opts::platform().run_at(Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    let mut conn = app.pool.acquire().await.unwrap();
    zoark_jobs::admin::cancel(&mut conn, None, cancelled)
        .await
        .unwrap();
    let engine = app.start_engine(engine_config(&[("test", 2)]), registry);
    wait_for(&app, discarded, "discarded", Duration::from_secs(5)).await;
    fail.store(false, Ordering::SeqCst);
    for id in [discarded, cancelled] {
        let job = zoark_jobs::admin::retry(&mut conn, None, id).await.unwrap();
        assert_eq!(job.state, "available");
    }
    let d = wait_for(&app, discarded, "completed", Duration::from_secs(5)).await;
    wait_for(&app, cancelled, "completed", Duration::from_secs(5)).await;
    drop(conn);
    engine.stop().await;
    assert_eq!(d.attempt, 2);
    assert_eq!(
        error_kinds(&d),
        ["fatal"],
        "the first attempt's error is kept"
    );
}

#[tokio::test]
async fn a_unique_key_held_by_an_unfinished_job_returns_that_job_even_under_concurrency() {
    let app = TestApp::spawn().await;
    let org = organization(&app).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let pool = app.pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let e = enqueue(
                &mut tx,
                &probe("u"),
                Opts::organization(org).unique_key("digest:42"),
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.commit().await.unwrap();
            e
        }));
    }
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let first = results[0].id;
    assert!(results.iter().all(|e| e.id == first), "{results:?}");
    assert_eq!(results.iter().filter(|e| !e.duplicate).count(), 1);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    // The same key in another tenant, and in a bulk batch with itself, behave the same way.
    let mut conn = app.pool.acquire().await.unwrap();
    let batch = vec![
        NewJob::new(&probe("a"), Opts::platform().unique_key("digest:42")).unwrap(),
        NewJob::new(&probe("b"), Opts::platform().unique_key("digest:42")).unwrap(),
        NewJob::new(&probe("c"), Opts::organization(org).unique_key("digest:42")).unwrap(),
        NewJob::new(&probe("d"), Opts::platform()).unwrap(),
    ];
    let out = enqueue_many(&mut conn, batch).await.unwrap();
    assert_eq!(out[0].id, out[1].id);
    assert!(!out[0].duplicate && out[1].duplicate);
    assert_eq!((out[2].id, out[2].duplicate), (first, true));
    assert!(!out[3].duplicate);
    // A finished job frees its key.
    sqlx::query("UPDATE jobs SET state = 'completed', finalized_at = now() WHERE id = $1")
        .bind(first)
        .execute(&app.pool)
        .await
        .unwrap();
    let fresh = enqueue(
        &mut conn,
        &probe("u"),
        Opts::organization(org).unique_key("digest:42"),
    )
    .await
    .unwrap();
    assert!(!fresh.duplicate && fresh.id != first);
}

#[tokio::test]
async fn bulk_enqueue_returns_ids_in_input_order() {
    let app = TestApp::spawn().await;
    let mut conn = app.pool.acquire().await.unwrap();
    let jobs: Vec<NewJob> = (0..12_000)
        .map(|i| NewJob::new(&probe(&i.to_string()), Opts::platform()).unwrap())
        .collect();
    let out = enqueue_many(&mut conn, jobs).await.unwrap();
    assert_eq!(out.len(), 12_000);
    for i in [0usize, 4_999, 5_000, 11_999] {
        let label: String = sqlx::query_scalar("SELECT args->>'label' FROM jobs WHERE id = $1")
            .bind(out[i].id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(label, i.to_string());
    }
}

/// A batch mixing plain jobs (streamed with COPY), unique and delayed ones (INSERT) stores every
/// payload byte for byte, belongs to the caller's transaction, and wakes an idle worker.
#[tokio::test]
async fn a_mixed_bulk_enqueue_keeps_payloads_tenants_and_the_transaction() {
    let app = TestApp::spawn().await;
    let org = organization(&app).await;
    let tricky = [
        "a,b",
        "say \"hi\"",
        "line\nbreak",
        "back\\slash",
        "\\N",
        "",
        "tab\there",
        "é ✓",
    ];
    let build = || -> Vec<NewJob> {
        (0..300)
            .map(|i| {
                let label = format!("{}#{i}", tricky[i % tricky.len()]);
                let opts = match i % 3 {
                    0 => Opts::organization(org),
                    1 => Opts::platform(),
                    _ if i % 30 == 2 => Opts::organization(org).unique_key(format!("k{i}")),
                    _ if i % 30 == 5 => {
                        Opts::platform().run_at(Utc::now() + chrono::Duration::hours(1))
                    }
                    _ => Opts::organization(org),
                };
                NewJob::new(&probe(&label), opts).unwrap()
            })
            .collect()
    };

    let mut tx = app.pool.begin().await.unwrap();
    enqueue_many(&mut tx, build()).await.unwrap();
    tx.rollback().await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "a rolled-back bulk enqueue leaves nothing");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let engine = app.start_engine(engine_config(&[("test", 20)]), recording(seen.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let jobs = build();
    let expected: Vec<(String, Option<Uuid>, bool)> = jobs
        .iter()
        .map(|j| {
            let label = j.args["label"].as_str().unwrap().to_owned();
            (label, j.opts.organization_id, j.opts.run_at.is_some())
        })
        .collect();
    let mut tx = app.pool.begin().await.unwrap();
    let out = enqueue_many(&mut tx, jobs).await.unwrap();
    tx.commit().await.unwrap();
    for (e, (label, org_id, delayed)) in out.iter().zip(&expected) {
        let (stored, stored_org, state): (String, Option<Uuid>, String) =
            sqlx::query_as("SELECT args->>'label', organization_id, state FROM jobs WHERE id = $1")
                .bind(e.id)
                .fetch_one(&app.pool)
                .await
                .unwrap();
        assert_eq!((&stored, &stored_org), (label, org_id));
        if *delayed {
            assert_eq!(state, "scheduled");
        }
    }
    // The engine polls every 60 s here: only the COPY's NOTIFY can wake it this soon.
    let immediate = expected.iter().filter(|(_, _, delayed)| !delayed).count();
    for _ in 0..250 {
        if seen.lock().unwrap().len() == immediate {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.stop().await;
    assert_eq!(seen.lock().unwrap().len(), immediate);
}

#[tokio::test]
async fn pruning_deletes_finished_jobs_past_their_retention_only() {
    let app = TestApp::builder()
        .env("ZOARK_JOBS_RETENTION_HOURS", "1")
        .spawn()
        .await;
    let mut ids = Vec::new();
    for (state, age_hours) in [
        ("completed", 2),
        ("completed", 0),
        ("cancelled", 2),
        ("discarded", 2),
        ("discarded", 24 * 8),
    ] {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO jobs (kind, queue, args, max_attempts, state, finalized_at)
             VALUES ('test.probe', 'test', '{}', 1, $1, now() - make_interval(hours => $2)) RETURNING id",
        )
        .bind(state)
        .bind(age_hours)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        ids.push(id);
    }
    // Sign-in bookkeeping: an old unlocked counter and an old reset token go, the rest stays.
    sqlx::query(
        "INSERT INTO login_throttle (key, failures, first_failure_at, locked_until, updated_at) VALUES
           ('email:old@example.com', 3, now() - interval '2 days', NULL, now() - interval '2 days'),
           ('email:locked@example.com', 10, now() - interval '2 days', now() + interval '1 hour', now() - interval '2 days'),
           ('ip:127.0.0.1', 1, now(), NULL, now())",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let user = zoark_core::db::users::insert(
        &mut app.pool.acquire().await.unwrap(),
        "u@example.com",
        "U",
        "$argon2id$x",
    )
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO password_reset_tokens (user_id, token_hash, created_at, expires_at) VALUES
           ($1, sha256('a'), now() - interval '3 days', now() - interval '2 days'),
           ($1, sha256('b'), now(), now() + interval '30 minutes')",
    )
    .bind(user)
    .execute(&app.pool)
    .await
    .unwrap();
    push(
        &app,
        &zoark_jobs::maintenance::PruneJobs {},
        Opts::platform(),
    )
    .await;
    app.drain_jobs(Duration::from_secs(10)).await.unwrap();
    let throttles: Vec<String> = sqlx::query_scalar("SELECT key FROM login_throttle ORDER BY key")
        .fetch_all(&app.pool)
        .await
        .unwrap();
    assert_eq!(throttles, ["email:locked@example.com", "ip:127.0.0.1"]);
    let resets: i64 = sqlx::query_scalar("SELECT count(*) FROM password_reset_tokens")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(resets, 1);
    let left: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'test.probe' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        left,
        vec![ids[1], ids[3]],
        "recent completed and week-old discarded jobs stay"
    );
}

#[tokio::test]
async fn shutdown_lets_short_jobs_finish_and_hands_long_ones_back_at_the_deadline() {
    let app = TestApp::spawn().await;
    let registry = Registry::new().register(|p: Probe, _: JobContext| async move {
        let ms = if p.label == "short" { 300 } else { 20_000 };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(())
    });
    let short = push(&app, &probe("short"), Opts::platform()).await;
    let long = push(&app, &SlowRetry {}, Opts::platform()).await;
    let registry = registry.register(|_: SlowRetry, _: JobContext| async {
        tokio::time::sleep(Duration::from_secs(20)).await;
        Ok(())
    });
    let engine = app.start_engine(engine_config(&[("test", 2)]), registry);
    wait_for(&app, short, "running", Duration::from_secs(5)).await;
    wait_for(&app, long, "running", Duration::from_secs(5)).await;
    let started = std::time::Instant::now();
    engine.stop().await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "shutdown took {took:?} with a 2 s deadline"
    );
    assert_eq!(row(&app, short).await.state, "completed");
    let l = row(&app, long).await;
    assert_eq!(
        (l.state.as_str(), l.attempt),
        ("available", 0),
        "handed back without spending the attempt"
    );
}
