//! The job engine's semantics against real Postgres: transactional enqueue, priorities, delayed
//! jobs, persisted retries, discarding, snooze, timeouts, panics, unknown kinds, rescue,
//! cancellation, manual retry, unique jobs, pruning and graceful shutdown. And its faults: a
//! stalled worker, a database outage, an outcome Postgres refuses, a completer that cannot write,
//! an attempt that outlives its deadline. And apalis: the workers under its monitor, and the
//! `jobs` table through its backend traits.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
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
    assert!(
        r.errors
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["duration_ms"].is_u64()),
        "every failed attempt records how long it ran: {}",
        r.errors
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
    // Its own timeout, shorter than the kind's 2 s.
    let quick = push(
        &app,
        &probe("slow"),
        opts().timeout(Duration::from_millis(300)),
    )
    .await;
    let insert = |kind: &'static str, args: &'static str, max_attempts: i32| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, Uuid>(
                "INSERT INTO jobs (kind, queue, args, max_attempts) VALUES ($1, 'test', $2::jsonb, $3) RETURNING id",
            )
            .bind(kind)
            .bind(args)
            .bind(max_attempts)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let unknown = insert("nobody.handles_this", "{}", 5).await;
    let undecodable = insert("test.probe", r#"{"labels": 1}"#, 5).await;
    let unknown_last = insert("nobody.handles_this", "{}", 1).await;
    let fine = push(&app, &probe("fine"), opts()).await;
    let engine = app.start_engine(engine_config(&[("test", 6)]), registry);
    let started = Utc::now();
    let s = wait_for(&app, slow, "discarded", Duration::from_secs(5)).await;
    let p = wait_for(&app, panics, "discarded", Duration::from_secs(5)).await;
    let q = wait_for(&app, quick, "discarded", Duration::from_secs(5)).await;
    let u = wait_for(&app, unknown, "retryable", Duration::from_secs(5)).await;
    let d = wait_for(&app, undecodable, "retryable", Duration::from_secs(5)).await;
    let last = wait_for(&app, unknown_last, "discarded", Duration::from_secs(5)).await;
    wait_for(&app, fine, "completed", Duration::from_secs(5)).await;
    engine.stop().await;
    assert_eq!(error_kinds(&s), ["timeout"]);
    assert!(
        s.errors[0]["error"].as_str().unwrap().contains("2s"),
        "{}",
        s.errors
    );
    assert_eq!(error_kinds(&q), ["timeout"]);
    assert!(
        q.errors[0]["error"].as_str().unwrap().contains("300ms"),
        "the job's own timeout: {}",
        q.errors
    );
    assert_eq!(error_kinds(&p), ["panic"]);
    assert!(
        p.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("boom in the handler")
    );
    // A kind or payload this worker cannot run may be known to the next version of the worker
    // (a rolling deploy): retried after minutes, discarded only when its attempts are spent.
    for (r, kind, says) in [
        (&u, "unknown_kind", "nobody.handles_this"),
        (&d, "undecodable", "test.probe"),
    ] {
        assert_eq!(error_kinds(r), [kind]);
        assert!(
            r.errors[0]["error"].as_str().unwrap().contains(says),
            "{}",
            r.errors
        );
        assert!(
            r.run_at >= started + chrono::Duration::minutes(4),
            "{kind}: retried at {} (started {started})",
            r.run_at
        );
    }
    assert_eq!(error_kinds(&last), ["unknown_kind"]);
}

/// A job claimed by a worker that then died (its heartbeat stopped 10 s ago): `running` on it.
async fn orphan_of_a_dead_worker(app: &TestApp) -> Uuid {
    let id = push(app, &probe("orphan"), Opts::platform()).await;
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
    id
}

#[tokio::test]
async fn the_running_jobs_of_a_dead_worker_are_rescued_and_run_again() {
    let app = TestApp::spawn().await;
    let id = orphan_of_a_dead_worker(&app).await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let engine = app.start_engine(engine_config(&[("test", 1)]), recording(seen.clone()));
    // A worker rescues once its own lease is as old as the rescue window (3 s).
    let r = wait_for(&app, id, "completed", Duration::from_secs(8)).await;
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

/// What the handlers of a test saw: for each job id, the runs in progress (more than one at a
/// time is a double run), every run, and the runs that returned `Ok`.
#[derive(Debug, Default)]
struct Ledger {
    running: HashMap<Uuid, usize>,
    overlaps: Vec<Uuid>,
    runs: HashMap<Uuid, usize>,
    succeeded: HashMap<Uuid, usize>,
    /// When each job's latest run started.
    started: HashMap<Uuid, DateTime<Utc>>,
}

/// Marks a run finished when dropped: also when the engine stops polling the handler.
struct RunGuard(Arc<Mutex<Ledger>>, Uuid);

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Ok(mut ledger) = self.0.lock()
            && let Some(n) = ledger.running.get_mut(&self.1)
        {
            *n -= 1;
        }
    }
}

/// Probe handlers that sleep `sleep` (the label `block`: 300 ms) and keep the [`Ledger`]; the
/// label `fatal-nul` fails with an error text Postgres cannot store (a NUL character).
fn ledgered(ledger: Arc<Mutex<Ledger>>, sleep: Duration) -> Registry {
    Registry::new().register(move |p: Probe, ctx: JobContext| {
        let ledger = ledger.clone();
        async move {
            {
                let mut l = ledger.lock().unwrap();
                *l.runs.entry(ctx.id).or_default() += 1;
                l.started.insert(ctx.id, Utc::now());
                let now = l.running.entry(ctx.id).or_default();
                *now += 1;
                if *now > 1 {
                    l.overlaps.push(ctx.id);
                }
            }
            let _guard = RunGuard(ledger.clone(), ctx.id);
            let sleep = if p.label == "block" {
                Duration::from_millis(300)
            } else {
                sleep
            };
            tokio::time::sleep(sleep).await;
            if p.label == "fatal-nul" {
                return Err(JobError::Fatal(anyhow::anyhow!(
                    "the peer answered \u{0}\u{0} garbage"
                )));
            }
            *ledger.lock().unwrap().succeeded.entry(ctx.id).or_default() += 1;
            Ok(())
        }
    })
}

async fn push_many(app: &TestApp, label: &str, n: usize) -> Vec<Uuid> {
    push_many_with(app, label, n, Opts::platform().max_attempts(10)).await
}

async fn push_many_with(app: &TestApp, label: &str, n: usize, opts: Opts) -> Vec<Uuid> {
    let jobs = (0..n)
        .map(|_| NewJob::new(&probe(label), opts.clone()).unwrap())
        .collect();
    let mut conn = app.pool.acquire().await.unwrap();
    enqueue_many(&mut conn, jobs)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect()
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&app.pool).await.unwrap()
}

async fn wait_until_finished(app: &TestApp, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let open = count(app, "SELECT count(*) FROM jobs WHERE finalized_at IS NULL").await;
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} jobs unfinished after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every job completed, no job ran on two workers at once, and no job whose handler succeeded
/// ran again.
async fn assert_each_completed_once(app: &TestApp, ids: &[Uuid], ledger: &Mutex<Ledger>) {
    let not_completed = count(app, "SELECT count(*) FROM jobs WHERE state <> 'completed'").await;
    assert_eq!(not_completed, 0, "every job completed");
    let ledger = ledger.lock().unwrap();
    assert!(
        ledger.overlaps.is_empty(),
        "{} jobs ran on two workers at once, e.g. {:?}",
        ledger.overlaps.len(),
        ledger.overlaps.first()
    );
    let twice: Vec<_> = ids
        .iter()
        .filter(|id| ledger.succeeded.get(id).copied().unwrap_or(0) != 1)
        .collect();
    assert!(
        twice.is_empty(),
        "{} jobs did not succeed exactly once, e.g. {:?} succeeded {:?} times in {:?} runs",
        twice.len(),
        twice.first(),
        twice.first().and_then(|id| ledger.succeeded.get(id)),
        twice.first().and_then(|id| ledger.runs.get(id)),
    );
}

#[tokio::test]
async fn a_stalled_worker_never_runs_a_job_beside_the_worker_that_rescued_it() {
    let app = TestApp::spawn().await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let ids = push_many(&app, "work", 500).await;
    let config = || engine_config(&[("test", 4)]);
    let sleep = Duration::from_millis(80);
    let stalls = app.start_engine(config(), ledgered(ledger.clone(), sleep));
    let healthy = app.start_engine(config(), ledgered(ledger.clone(), sleep));
    tokio::time::sleep(Duration::from_millis(700)).await;
    // The stalled worker's heartbeat stops for twice the rescue window (3 s) while its fetchers
    // and handlers go on: it must fence itself, and the claim must refuse it once its row is
    // gone; the healthy worker rescues what it held.
    stalls.hooks().pause_heartbeat(true);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let workers = count(&app, "SELECT count(*) FROM job_workers").await;
    assert_eq!(workers, 1, "the stalled worker was presumed dead");
    stalls.hooks().pause_heartbeat(false);
    wait_until_finished(&app, Duration::from_secs(30)).await;
    stalls.stop().await;
    healthy.stop().await;
    assert_each_completed_once(&app, &ids, &ledger).await;
    let lease_lost = count(
        &app,
        "SELECT count(*) FROM jobs WHERE errors @> '[{\"kind\": \"lease_lost\"}]'",
    )
    .await;
    let rescued = count(
        &app,
        "SELECT count(*) FROM jobs WHERE errors @> '[{\"kind\": \"rescued\"}]'",
    )
    .await;
    assert!(
        lease_lost + rescued > 0,
        "the stalled worker was running jobs when it fenced itself"
    );
}

#[tokio::test]
async fn a_heartbeat_that_times_out_leaves_no_statement_behind_to_block_the_next() {
    let app = TestApp::spawn().await;
    let engine = app.start_engine(engine_config(&[("test", 2)]), Registry::new());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(count(&app, "SELECT count(*) FROM job_workers").await, 1);
    // Another session holds the worker's row for four heartbeat intervals (500 ms each, less
    // than the fencing delay): every heartbeat meanwhile waits on that lock and times out.
    let mut holder = app.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM job_workers FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let waiting = count(
        &app,
        "SELECT count(*) FROM pg_stat_activity
         WHERE pid <> pg_backend_pid() AND query LIKE '%WITH hb AS%' AND wait_event_type = 'Lock'",
    )
    .await;
    assert!(
        waiting <= 1,
        "{waiting} heartbeats still wait on the row after their worker gave up on them"
    );
    holder.rollback().await.unwrap();
    // The next heartbeat goes through at once.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fresh = count(
        &app,
        "SELECT count(*) FROM job_workers WHERE heartbeat_at > now() - interval '1 second'",
    )
    .await;
    assert_eq!(fresh, 1, "the heartbeat reached its row again");
    engine.stop().await;
}

/// `jobs` available jobs, analyzed while none runs; then the first `running` of them (by id) are
/// running, spread over the registered workers, with a deadline an hour away. Returns their ids.
async fn running_after_stale_statistics(app: &TestApp, jobs: i64, running: i64) -> Vec<Uuid> {
    sqlx::query(
        "INSERT INTO jobs (kind, queue, args, max_attempts) \
         SELECT 'test.probe', 'test', '{}', 3 FROM generate_series(1, $1)",
    )
    .bind(jobs)
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "UPDATE jobs SET state = 'running', attempt = 1, attempted_at = now(), \
             deadline_at = now() + interval '1 hour', \
             worker_id = (SELECT id FROM job_workers ORDER BY id \
                          OFFSET (hashtext(jobs.id::text) & 65535) % (SELECT count(*) FROM job_workers) LIMIT 1) \
         WHERE id IN (SELECT id FROM jobs ORDER BY id LIMIT $1) RETURNING id",
    )
    .bind(running)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

/// Seen in a benchmark: with statistics gathered while no job ran, the rescue's update was
/// planned as a loop over the running jobs rescanning them all for each (2,000 running jobs:
/// 45 s), so every heartbeat of a busy worker timed out, the workers fenced themselves and
/// drains stalled. The running jobs are now read once.
#[tokio::test]
async fn the_rescue_reads_the_running_jobs_once_whatever_the_statistics_say() {
    let app = TestApp::spawn().await;
    // Four live workers whose leases are older than the window, so the rescue looks at every
    // running job; 3,000 jobs analyzed while none ran, then running on those workers.
    sqlx::query(
        "INSERT INTO job_workers (hostname, pid, queues, lease_since) \
         SELECT 'test', n, '{test}', now() - interval '1 hour' FROM generate_series(1, 4) n",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    running_after_stale_statistics(&app, 3000, 3000).await;
    // A few milliseconds once the jobs are read once; minutes when read once per job.
    let rescued = tokio::time::timeout(
        Duration::from_secs(10),
        zoark_worker::engine::rescue(&app.pool, Duration::from_secs(1)),
    )
    .await
    .expect("the rescue of 3,000 running jobs took over 10 s")
    .unwrap();
    assert_eq!(rescued, 0, "no worker is dead and no deadline has passed");
    assert_eq!(
        count(&app, "SELECT count(*) FROM jobs WHERE state = 'running'").await,
        3000
    );
}

/// The same trap for the completion: statistics gathered while no job ran, then 2,000 outcomes of
/// one worker. Written as the engine sends it (custom plans, so the worker id is a constant),
/// the statement once looped over the batch for every running row (7–22 s in a benchmark); now
/// no plan node filters more rows out of a join than the batch holds.
#[tokio::test]
async fn a_batch_of_outcomes_is_written_without_looping_over_the_batch_per_row() {
    let app = TestApp::spawn().await;
    let worker = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO job_workers (id, hostname, pid, queues) VALUES ($1, 'test', 1, '{test}')",
    )
    .bind(worker)
    .execute(&app.pool)
    .await
    .unwrap();
    let ids = running_after_stale_statistics(&app, 100_000, 2000).await;
    let n = ids.len();
    let mut tx = app.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL plan_cache_mode = force_custom_plan")
        .execute(&mut *tx)
        .await
        .unwrap();
    let explain = format!(
        "EXPLAIN (ANALYZE, FORMAT JSON) {}",
        zoark_worker::engine::sql::COMPLETE
    );
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .bind(&ids)
        .bind(vec![1_i32; n])
        .bind(vec!["completed".to_owned(); n])
        .bind(vec![None::<DateTime<Utc>>; n])
        .bind(vec![None::<Value>; n])
        .bind(vec![0_i32; n])
        .bind(worker)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    fn removed_by_joins(node: &Value) -> i64 {
        let here = node["Rows Removed by Join Filter"].as_i64().unwrap_or(0);
        let below: i64 = node["Plans"]
            .as_array()
            .map_or(0, |plans| plans.iter().map(removed_by_joins).sum());
        here + below
    }
    let top = &plan[0]["Plan"];
    let removed = removed_by_joins(top);
    assert!(
        removed <= 2000,
        "the completion compared {removed} pairs of rows it then threw away: {top}"
    );
    assert_eq!(
        top["Plans"][0]["Actual Rows"].as_i64(),
        Some(2000),
        "every outcome found its row: {top}"
    );
}

#[tokio::test]
async fn a_database_outage_longer_than_the_rescue_window_loses_no_outcome_and_reruns_nothing() {
    let app = TestApp::spawn().await;
    let proxy = zoark_tests::proxy::TcpProxy::start(app.database_address())
        .await
        .unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let sleep = Duration::from_millis(20);
    let start = || {
        zoark_tests::RunningEngine::start(
            app.pool_through(&proxy),
            engine_config(&[("test", 10)]),
            ledgered(ledger.clone(), sleep),
        )
    };
    let (one, two) = (start(), start());
    // Both leases older than the rescue window, then jobs, then the database goes away in the
    // middle of their run for longer than the window.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let ids = push_many(&app, "work", 1_500).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    proxy.cut();
    let succeeded_before = ledger.lock().unwrap().succeeded.len();
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.restore();
    wait_until_finished(&app, Duration::from_secs(40)).await;
    one.stop().await;
    two.stop().await;
    assert!(
        succeeded_before > 0 && succeeded_before < ids.len(),
        "the outage came in the middle of the run ({succeeded_before} done before it)"
    );
    assert_each_completed_once(&app, &ids, &ledger).await;
    let rescued = count(
        &app,
        "SELECT count(*) FROM jobs WHERE errors @> '[{\"kind\": \"rescued\"}]'",
    )
    .await;
    assert_eq!(
        rescued, 0,
        "no worker rescued another's jobs after the outage"
    );
}

#[tokio::test]
async fn an_outcome_postgres_refuses_is_recorded_and_the_rest_of_its_batch_written() {
    let app = TestApp::spawn().await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut ids = push_many(&app, "work", 1_000).await;
    let bad = push(&app, &probe("fatal-nul"), Opts::platform()).await;
    ids.extend(push_many(&app, "work", 1_000).await);
    let mut config = engine_config(&[("test", 500)]);
    config.claim_batch = 500;
    let engine = app.start_engine(config, ledgered(ledger.clone(), Duration::ZERO));
    let r = wait_for(&app, bad, "discarded", Duration::from_secs(20)).await;
    wait_until_finished(&app, Duration::from_secs(20)).await;
    engine.stop().await;
    assert_eq!(error_kinds(&r), ["outcome_refused"]);
    let said = r.errors[0]["error"].as_str().unwrap();
    assert!(
        said.contains("could not be written") && said.contains("discarded"),
        "{said}"
    );
    let completed = count(&app, "SELECT count(*) FROM jobs WHERE state = 'completed'").await;
    assert_eq!(completed, 2_000, "every other outcome was written");
}

#[tokio::test]
async fn a_worker_stops_claiming_while_its_outcomes_cannot_be_written() {
    let app = TestApp::spawn().await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let blocker = push(&app, &probe("block"), Opts::platform()).await;
    let mut config = engine_config(&[("test", 20)]);
    config.claim_batch = 20;
    config.max_backlog = 100;
    let engine = app.start_engine(config, ledgered(ledger.clone(), Duration::ZERO));
    wait_for(&app, blocker, "running", Duration::from_secs(5)).await;
    // Postgres stalls the completer: the blocker's outcome waits on this row lock, and every
    // outcome after it waits behind that write.
    let mut lock = app.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(blocker)
        .execute(&mut *lock)
        .await
        .unwrap();
    let mut ids = push_many(&app, "work", 3_000).await;
    let mut most_held = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        let held = count(&app, "SELECT count(*) FROM jobs WHERE state = 'running'").await;
        most_held = most_held.max(held);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    lock.rollback().await.unwrap();
    wait_until_finished(&app, Duration::from_secs(60)).await;
    engine.stop().await;
    // Held = running in Postgres: in the handlers or waiting as an outcome in memory. Bounded by
    // the backlog limit (100) + the slots (20) + one claim (20), however long Postgres stalls.
    assert!(
        most_held > 100,
        "the completer was stalled (outcomes piled up to the limit): {most_held}"
    );
    assert!(
        most_held <= 141,
        "a worker under a stalled completer kept claiming: {most_held} jobs held"
    );
    ids.push(blocker);
    assert_each_completed_once(&app, &ids, &ledger).await;
}

#[tokio::test]
async fn an_attempt_past_its_deadline_on_a_live_worker_goes_back_to_the_queue_as_a_timeout() {
    let app = TestApp::spawn().await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let engine = app.start_engine(
        engine_config(&[("test", 1)]),
        ledgered(ledger.clone(), Duration::ZERO),
    );
    // An attempt this live worker claimed and whose outcome never reached Postgres.
    let id = push(
        &app,
        &probe("lost"),
        Opts::platform().run_at(Utc::now() + chrono::Duration::hours(1)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::query(
        "UPDATE jobs SET state = 'running', attempt = 1, attempted_at = now() - interval '10 seconds', \
         worker_id = (SELECT id FROM job_workers LIMIT 1), deadline_at = now() - interval '1 second' \
         WHERE id = $1",
    )
    .bind(id)
    .execute(&app.pool)
    .await
    .unwrap();
    let r = wait_for(&app, id, "completed", Duration::from_secs(10)).await;
    engine.stop().await;
    assert_eq!(error_kinds(&r), ["timeout"]);
    assert!(
        r.errors[0]["error"]
            .as_str()
            .unwrap()
            .contains("passed its deadline"),
        "{}",
        r.errors
    );
    assert_eq!(r.attempt, 2);
}

#[tokio::test]
async fn a_claimed_attempt_carries_its_deadline_timeout_plus_the_rescue_window() {
    let app = TestApp::spawn().await;
    let registry = Registry::new().register(|_: Probe, ctx: JobContext| async move {
        ctx.cancelled.cancelled().await;
        Ok(())
    });
    let own = push(
        &app,
        &probe("own"),
        Opts::platform().timeout(Duration::from_secs(40)),
    )
    .await;
    let kinds = push(&app, &probe("kind's"), Opts::platform()).await;
    let engine = app.start_engine(engine_config(&[("test", 2)]), registry);
    wait_for(&app, own, "running", Duration::from_secs(5)).await;
    wait_for(&app, kinds, "running", Duration::from_secs(5)).await;
    let deadline = |id: Uuid| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, f64>(
                "SELECT extract(epoch FROM deadline_at - attempted_at)::float8 FROM jobs WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // The job's own 40 s, or the kind's 2 s; plus the rescue window of 3 s.
    assert!((deadline(own).await - 43.0).abs() < 0.01);
    assert!((deadline(kinds).await - 5.0).abs() < 0.01);
    engine.stop().await;
    let left: i64 = count(
        &app,
        "SELECT count(*) FROM jobs WHERE deadline_at IS NOT NULL",
    )
    .await;
    assert_eq!(left, 0, "only running attempts have a deadline");
}

#[tokio::test]
async fn one_tenants_backlog_does_not_hold_back_another_tenant_or_a_platform_job() {
    let app = TestApp::spawn().await;
    let busy = organization(&app).await;
    let other = organization(&app).await;
    let started: Arc<Mutex<HashMap<String, std::time::Instant>>> = Arc::default();
    let registry = {
        let started = started.clone();
        Registry::new().register(move |p: Probe, _: JobContext| {
            let started = started.clone();
            async move {
                if p.label == "backlog" {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    started
                        .lock()
                        .unwrap()
                        .insert(p.label, std::time::Instant::now());
                }
                Ok(())
            }
        })
    };
    // 10,000 jobs of 50 ms: 25 s of work for 20 slots.
    push_many_with(&app, "backlog", 10_000, Opts::organization(busy)).await;
    let engine = app.start_engine(engine_config(&[("test", 20)]), registry);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let enqueued = std::time::Instant::now();
    // Another tenant's job, and a platform job (as password resets and invitations are), both
    // behind the backlog in time and at the same priority.
    push(&app, &probe("other tenant"), Opts::organization(other)).await;
    push(&app, &probe("platform"), Opts::platform()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let waiting = count(
        &app,
        "SELECT count(*) FROM jobs WHERE state IN ('available', 'scheduled', 'retryable')",
    )
    .await;
    engine.stop().await;
    let started = started.lock().unwrap();
    for label in ["other tenant", "platform"] {
        let at = started
            .get(label)
            .unwrap_or_else(|| panic!("the {label} job had not started 2 s after its enqueue"));
        let waited = at.duration_since(enqueued);
        assert!(waited < Duration::from_secs(2), "{label}: {waited:?}");
    }
    assert!(waiting > 8_000, "the backlog was still there: {waiting}");
}

/// The longest a job of the ledger waited between its (latest) claim and its (latest) start, in
/// ms: how long it sat in a claim-ahead buffer.
async fn claim_to_start(app: &TestApp, ledger: &Mutex<Ledger>) -> i64 {
    let claimed: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, attempted_at FROM jobs WHERE attempted_at IS NOT NULL")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let ledger = ledger.lock().unwrap();
    claimed
        .iter()
        .filter_map(|(id, at)| {
            ledger
                .started
                .get(id)
                .map(|s| (*s - *at).num_milliseconds())
        })
        .max()
        .unwrap()
}

/// The most jobs the worker held at once (claimed, and not finished: waiting in its buffer or
/// running), sampled for `within` or until `done` jobs have completed: the rows `running` in
/// Postgres, less those whose handler has returned (such a row stays `running` only until the
/// completer writes its outcome, a race with the next claim that says nothing of claiming ahead).
async fn most_held(app: &TestApp, ledger: &Mutex<Ledger>, within: Duration, done: i64) -> i64 {
    let mut most = 0;
    let until = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < until {
        let running: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs WHERE state = 'running'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
        let held = {
            let l = ledger.lock().unwrap();
            running
                .iter()
                .filter(|id| !(l.runs.contains_key(id) && l.running.get(id) == Some(&0)))
                .count()
        };
        most = most.max(i64::try_from(held).unwrap());
        if count(app, "SELECT count(*) FROM jobs WHERE state = 'completed'").await >= done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    most
}

#[tokio::test]
async fn a_queue_with_one_slot_claims_ahead_and_gives_unstarted_jobs_back_at_shutdown() {
    let app = TestApp::spawn().await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let ids = push_many(&app, "work", 400).await;
    let mut config = engine_config(&[("test", 1)]);
    config.claim_batch = 100;
    let engine = app.start_engine(
        config.clone(),
        ledgered(ledger.clone(), Duration::from_millis(5)),
    );
    let most = most_held(&app, &ledger, Duration::from_secs(20), 60).await;
    engine.stop().await;
    // 5 ms jobs: about 100 ms of them wait in the buffer (some 16), never more than a batch.
    assert!(
        most > 5,
        "one slot, yet the worker claimed one job at a time: {most} held"
    );
    assert!(most <= 101, "more than slots + a batch held: {most}");
    let running = count(&app, "SELECT count(*) FROM jobs WHERE state = 'running'").await;
    assert_eq!(running, 0, "nothing left running after shutdown");
    let given_back = count(
        &app,
        "SELECT count(*) FROM jobs WHERE state = 'available' AND attempt = 0 AND attempted_at IS NOT NULL",
    )
    .await;
    assert!(
        given_back > 0,
        "the buffer's unstarted jobs went back with their attempts unspent"
    );
    let spent = count(
        &app,
        "SELECT count(*) FROM jobs WHERE state = 'available' AND attempt <> 0",
    )
    .await;
    assert_eq!(spent, 0, "no job went back with an attempt spent");
    let waited = claim_to_start(&app, &ledger).await;
    assert!(
        waited > 20,
        "no job waited in a buffer (at most {waited} ms from claim to start)"
    );
    // Another worker finishes the rest; each job ran once.
    let engine = app.start_engine(config, ledgered(ledger.clone(), Duration::ZERO));
    wait_until_finished(&app, Duration::from_secs(20)).await;
    engine.stop().await;
    assert_each_completed_once(&app, &ids, &ledger).await;
}

#[tokio::test]
async fn jobs_that_take_longer_than_the_claim_ahead_window_are_not_claimed_ahead() {
    let app = TestApp::spawn().await;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let ids = push_many(&app, "work", 6).await;
    let engine = app.start_engine(
        engine_config(&[("test", 1)]),
        ledgered(ledger.clone(), Duration::from_millis(250)),
    );
    // 250 ms jobs: a buffered one would wait longer than the window, so none is claimed ahead:
    // another tenant's job or another worker could have started it meanwhile.
    wait_until_finished(&app, Duration::from_secs(20)).await;
    engine.stop().await;
    assert_each_completed_once(&app, &ids, &ledger).await;
    let waited = claim_to_start(&app, &ledger).await;
    assert!(
        waited < 150,
        "a job waited {waited} ms between its claim and its start, behind another's 250 ms"
    );
}

/// Shared buffers (hit or read) one claim of up to 250 `test` jobs by `worker` touches, by
/// `EXPLAIN (ANALYZE, BUFFERS)` inside a transaction that is rolled back.
async fn claim_buffers(app: &TestApp, worker: Uuid) -> i64 {
    let mut tx = app.pool.begin().await.unwrap();
    let explain = format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {}",
        zoark_worker::engine::sql::CLAIM
    );
    let plan: Value = sqlx::query_scalar(sqlx::AssertSqlSafe(explain))
        .bind("test")
        .bind(250_i64)
        .bind(worker)
        .bind(vec!["test.probe".to_owned()])
        .bind(vec![2_000_i64])
        .bind(3_000_i64)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let top = &plan[0]["Plan"];
    top["Shared Hit Blocks"].as_i64().unwrap() + top["Shared Read Blocks"].as_i64().unwrap()
}

#[tokio::test]
async fn a_claim_reads_the_due_jobs_only_however_many_wait_for_later_or_have_finished() {
    let app = TestApp::spawn().await;
    let worker = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO job_workers (id, hostname, pid, queues) VALUES ($1, 'test', 1, '{test}')",
    )
    .bind(worker)
    .execute(&app.pool)
    .await
    .unwrap();
    push(&app, &probe("due"), Opts::platform()).await;
    let alone = claim_buffers(&app, worker).await;
    // 20,000 reminders for later in the same queue, tenant and priority, and 50,000 finished jobs.
    sqlx::query(
        "INSERT INTO jobs (kind, queue, args, max_attempts, state, run_at) \
         SELECT 'test.probe', 'test', '{\"label\": \"later\"}', 3, 'scheduled', now() + interval '1 hour' \
         FROM generate_series(1, 20000)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (kind, queue, args, max_attempts, state, attempt, finalized_at) \
         SELECT 'test.probe', 'test', '{\"label\": \"done\"}', 3, 'completed', 1, now() \
         FROM generate_series(1, 50000)",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE jobs")
        .execute(&app.pool)
        .await
        .unwrap();
    let crowded = claim_buffers(&app, worker).await;
    assert!(
        crowded <= alone + 10,
        "the claim of one due job read {crowded} buffers beside 70,000 other jobs, {alone} alone"
    );
}

#[tokio::test]
async fn each_queue_runs_as_an_apalis_worker_under_the_monitor_from_start_to_exit() {
    let app = TestApp::spawn().await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let id = push(&app, &probe("one"), Opts::platform()).await;
    let engine = app.start_engine(
        engine_config(&[("test", 2), ("other", 1)]),
        recording(seen.clone()),
    );
    let hooks = engine.hooks().clone();
    wait_for(&app, id, "completed", Duration::from_secs(5)).await;
    let running = hooks.worker_events();
    engine.stop().await;
    let events = hooks.worker_events();
    for queue in ["test", "other"] {
        let of_queue: Vec<&str> = events
            .iter()
            .filter(|(worker, _)| worker.starts_with(&format!("{queue}@")))
            .map(|(_, event)| *event)
            .collect();
        assert_eq!(
            of_queue,
            ["start", "stop", "exit"],
            "{queue}'s apalis worker, as the monitor reported it: {events:?}"
        );
        assert!(
            running
                .iter()
                .any(|(w, e)| w.starts_with(&format!("{queue}@")) && *e == "start"),
            "{queue}'s worker had started while jobs ran: {running:?}"
        );
    }
    assert!(
        !running.iter().any(|(_, e)| *e == "exit"),
        "no worker exited before shutdown: {running:?}"
    );
    assert_eq!(*seen.lock().unwrap(), ["one"]);
}

mod apalis_backend {
    //! `zoark_worker::engine::storage::Jobs`: the `jobs` table through apalis's backend traits.

    use apalis_core::{
        backend::{FetchById, Filter, ListTasks, ResumeAbandoned, TaskSink, Vacuum},
        task::{builder::TaskBuilder, status::Status, task_id::TaskId},
    };
    use zoark_core::settings::JobRetention;
    use zoark_worker::engine::storage::Jobs;

    use super::*;

    /// label, queue, organization, state, priority, max attempts, unique key, run later.
    type Pushed = (
        String,
        String,
        Option<Uuid>,
        String,
        i16,
        i32,
        Option<String>,
        bool,
    );

    #[tokio::test]
    async fn a_task_pushed_through_apalis_is_enqueued_with_its_contract_and_its_options() {
        let app = TestApp::spawn().await;
        let org = organization(&app).await;
        let mut jobs = Jobs::<Probe>::organization(app.pool.clone(), org);
        jobs.push(probe("plain")).await.unwrap();
        let later = TaskBuilder::new(probe("later"))
            .priority(3)
            .max_attempts(7)
            .run_after(Duration::from_secs(3600))
            .idempotency_key("nightly")
            .build();
        jobs.push_task(later).await.unwrap();
        // The same unique key while the first is unfinished: no second job.
        let again = TaskBuilder::new(probe("again"))
            .idempotency_key("nightly")
            .build();
        jobs.push_task(again).await.unwrap();
        jobs.push_bulk(vec![probe("bulk-1"), probe("bulk-2")])
            .await
            .unwrap();
        let rows: Vec<Pushed> = sqlx::query_as(
            "SELECT args->>'label', queue, organization_id, state, priority, max_attempts,
                        unique_key, run_at > now() + interval '50 minutes'
                 FROM jobs WHERE kind = 'test.probe' ORDER BY args->>'label'",
        )
        .fetch_all(&app.pool)
        .await
        .unwrap();
        let some = Some(org);
        assert_eq!(
            rows,
            [
                (
                    "bulk-1".into(),
                    "test".into(),
                    some,
                    "available".into(),
                    0,
                    3,
                    None,
                    false
                ),
                (
                    "bulk-2".into(),
                    "test".into(),
                    some,
                    "available".into(),
                    0,
                    3,
                    None,
                    false
                ),
                (
                    "later".into(),
                    "test".into(),
                    some,
                    "scheduled".into(),
                    3,
                    7,
                    Some("nightly".into()),
                    true
                ),
                (
                    "plain".into(),
                    "test".into(),
                    some,
                    "available".into(),
                    0,
                    3,
                    None,
                    false
                ),
            ]
        );
        // A priority the jobs table does not know is refused, not clamped.
        let wrong = TaskBuilder::new(probe("wrong")).priority(10).build();
        assert!(jobs.push_task(wrong).await.is_err());
    }

    #[tokio::test]
    async fn fetch_by_id_and_listing_see_only_the_backends_kind_and_tenant() {
        let app = TestApp::spawn().await;
        let org = organization(&app).await;
        let other: Uuid =
            sqlx::query_scalar("INSERT INTO organizations (name) VALUES ('Other') RETURNING id")
                .fetch_one(&app.pool)
                .await
                .unwrap();
        let mine = push(&app, &probe("mine"), Opts::organization(org)).await;
        let done = push(&app, &probe("done"), Opts::organization(org)).await;
        sqlx::query("UPDATE jobs SET state = 'completed', finalized_at = now() WHERE id = $1")
            .bind(done)
            .execute(&app.pool)
            .await
            .unwrap();
        let theirs = push(&app, &probe("theirs"), Opts::organization(other)).await;
        let other_kind = push(&app, &SlowRetry {}, Opts::organization(org)).await;
        let platform = push(&app, &probe("platform"), Opts::platform()).await;
        let mut jobs = Jobs::<Probe>::organization(app.pool.clone(), org);

        let task = jobs
            .fetch_by_id(&TaskId::Uuid(mine))
            .await
            .unwrap()
            .expect("the tenant's own job");
        assert_eq!(task.args["label"], "mine");
        assert_eq!(task.task_id(), Some(&TaskId::Uuid(mine)));
        assert_eq!(task.status(), Status::Queued);
        assert_eq!(task.max_attempts(), Some(3));
        assert_eq!(task.queue().map(ToString::to_string), Some("test".into()));
        for hidden in [theirs, other_kind, platform] {
            assert!(
                jobs.fetch_by_id(&TaskId::Uuid(hidden))
                    .await
                    .unwrap()
                    .is_none(),
                "another tenant's, another kind's or a platform job"
            );
        }

        let all = Filter {
            status: None,
            page: 1,
            page_size: Some(10),
        };
        let listed: Vec<Value> = jobs
            .list_tasks(&all)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.args["label"].clone())
            .collect();
        assert_eq!(listed, ["done", "mine"], "newest first");
        let finished = Filter {
            status: Some(Status::Done),
            ..all.clone()
        };
        let listed = jobs.list_tasks(&finished).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].task_id(), Some(&TaskId::Uuid(done)));
        let second_page = Filter {
            status: None,
            page: 2,
            page_size: Some(1),
        };
        let listed = jobs.list_tasks(&second_page).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].args["label"], "mine");
    }

    #[tokio::test]
    async fn vacuum_deletes_the_kinds_finished_jobs_past_their_retention_only() {
        let app = TestApp::spawn().await;
        let insert = |kind: &'static str, state: &'static str, age_hours: i32| {
            let pool = app.pool.clone();
            async move {
                sqlx::query_scalar::<_, Uuid>(
                    "INSERT INTO jobs (kind, queue, args, max_attempts, state, finalized_at)
                     VALUES ($1, 'test', '{}', 1, $2, now() - make_interval(hours => $3)) RETURNING id",
                )
                .bind(kind)
                .bind(state)
                .bind(age_hours)
                .fetch_one(&pool)
                .await
                .unwrap()
            }
        };
        let old_completed = insert("test.probe", "completed", 2).await;
        let new_completed = insert("test.probe", "completed", 0).await;
        let old_cancelled = insert("test.probe", "cancelled", 2).await;
        let discarded = insert("test.probe", "discarded", 2).await;
        let old_discarded = insert("test.probe", "discarded", 24 * 8).await;
        let other_kind = insert("test.slow_retry", "completed", 2).await;
        let waiting = push(&app, &probe("waiting"), Opts::platform()).await;
        let mut jobs = Jobs::<Probe>::platform(app.pool.clone()).retention(JobRetention {
            finished: Duration::from_secs(3600),
            discarded: Duration::from_secs(7 * 86_400),
        });
        let ids = |app: &TestApp| {
            let pool = app.pool.clone();
            async move {
                let mut ids: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM jobs")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                ids.sort();
                ids
            }
        };
        assert_eq!(jobs.vacuum().await.unwrap(), 3);
        let mut left = vec![new_completed, discarded, other_kind, waiting];
        left.sort();
        assert_eq!(ids(&app).await, left);
        let _ = (old_completed, old_cancelled, old_discarded);
        // Whatever finished more than a minute ago, discarded or not; never an unfinished job.
        assert_eq!(
            jobs.vacuum_before(Duration::from_secs(60)).await.unwrap(),
            1
        );
        let mut left = vec![new_completed, other_kind, waiting];
        left.sort();
        assert_eq!(ids(&app).await, left);
    }

    #[tokio::test]
    async fn resume_abandoned_rescues_the_running_jobs_of_a_silent_worker() {
        let app = TestApp::spawn().await;
        let id = orphan_of_a_dead_worker(&app).await;
        let mut jobs =
            Jobs::<Probe>::platform(app.pool.clone()).rescue_after(Duration::from_secs(3));
        // Nobody rescues while no live worker has held its lease for the window: after an
        // outage, every worker looks silent.
        assert_eq!(jobs.resume_abandoned().await.unwrap(), 0);
        assert_eq!(row(&app, id).await.state, "running");
        sqlx::query(
            "INSERT INTO job_workers (hostname, pid, queues, lease_since) VALUES ('alive', 2, '{test}', now() - interval '1 minute')",
        )
        .execute(&app.pool)
        .await
        .unwrap();
        assert_eq!(jobs.resume_abandoned().await.unwrap(), 1);
        let r = row(&app, id).await;
        assert_eq!(r.state, "retryable");
        assert_eq!(error_kinds(&r), ["rescued"]);
    }
}

/// What `jobs` holds per queue and state, counted the slow way.
async fn counted(
    app: &TestApp,
    org: Option<Uuid>,
) -> Vec<(String, zoark_jobs::counts::StateCounts)> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT queue, state, count(*) FROM jobs
         WHERE $1::uuid IS NULL OR organization_id = $1 GROUP BY queue, state ORDER BY queue",
    )
    .bind(org)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let mut out: Vec<(String, zoark_jobs::counts::StateCounts)> = Vec::new();
    for (queue, state, n) in rows {
        if out.last().is_none_or(|(q, _)| *q != queue) {
            out.push((queue.clone(), zoark_jobs::counts::StateCounts::default()));
        }
        let c = &mut out.last_mut().unwrap().1;
        match state.parse::<JobState>().unwrap() {
            JobState::Scheduled => c.scheduled = n,
            JobState::Available => c.available = n,
            JobState::Running => c.running = n,
            JobState::Retryable => c.retryable = n,
            JobState::Completed => c.completed = n,
            JobState::Discarded => c.discarded = n,
            JobState::Cancelled => c.cancelled = n,
        }
    }
    out
}

async fn maintained(
    app: &TestApp,
    org: Option<Uuid>,
) -> Vec<(String, zoark_jobs::counts::StateCounts)> {
    let mut conn = app.pool.acquire().await.unwrap();
    zoark_jobs::counts::by_queue(&mut conn, org).await.unwrap()
}

#[tokio::test]
async fn the_counts_the_engine_maintains_match_the_jobs_table_through_every_change() {
    let app = TestApp::spawn().await;
    let acme = organization(&app).await;
    let other = organization(&app).await;
    let registry = Registry::new().register(|p: Probe, _: JobContext| async move {
        match p.label.as_str() {
            "fail" => Err(JobError::Retry(anyhow::anyhow!("no"))),
            _ => Ok(()),
        }
    });
    // Bulk (COPY) and single enqueues, tenant and platform, due and later.
    let mut jobs: Vec<NewJob> = Vec::new();
    for i in 0..40 {
        let label = if i % 4 == 0 { "fail" } else { "ok" };
        let opts = match i % 3 {
            0 => Opts::organization(acme),
            1 => Opts::organization(other),
            _ => Opts::platform(),
        };
        jobs.push(NewJob::new(&probe(label), opts).unwrap());
    }
    enqueue_many(&mut app.pool.acquire().await.unwrap(), jobs)
        .await
        .unwrap();
    let later = push(
        &app,
        &probe("ok"),
        Opts::organization(acme).run_at(Utc::now() + chrono::TimeDelta::hours(1)),
    )
    .await;
    for org in [None, Some(acme), Some(other)] {
        assert_eq!(maintained(&app, org).await, counted(&app, org).await);
    }

    // Run them all (fails retry, then are discarded), cancel the later one, prune some.
    let engine = app.start_engine(engine_config(&[("test", 4)]), registry);
    zoark_jobs::admin::cancel(&mut app.pool.acquire().await.unwrap(), Some(acme), later)
        .await
        .unwrap();
    wait_all_finished(&app).await;
    let all = maintained(&app, None).await;
    assert_eq!(all, counted(&app, None).await);
    assert_eq!(all[0].1.completed, 30);
    assert_eq!(all[0].1.discarded, 10);
    assert_eq!(all[0].1.cancelled, 1);
    sqlx::query("DELETE FROM jobs WHERE organization_id = $1 AND state = 'completed'")
        .bind(other)
        .execute(&app.pool)
        .await
        .unwrap();
    for org in [None, Some(acme), Some(other)] {
        assert_eq!(maintained(&app, org).await, counted(&app, org).await);
    }

    // The worker folds the tallies within a couple of seconds; counts stay exact across it.
    let mut pending = i64::MAX;
    for _ in 0..100 {
        pending = count(&app, "SELECT count(*) FROM job_tallies").await;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    engine.stop().await;
    assert_eq!(pending, 0, "the tallies were not folded");
    assert_eq!(maintained(&app, None).await, counted(&app, None).await);
    assert_eq!(
        maintained(&app, Some(other)).await,
        counted(&app, Some(other)).await
    );

    // Throughput: this minute's and this hour's buckets hold every completion and failure.
    let mut conn = app.pool.acquire().await.unwrap();
    for width in [
        zoark_jobs::counts::Width::Minute,
        zoark_jobs::counts::Width::Hour,
    ] {
        let series = zoark_jobs::counts::throughput(&mut conn, None, Some("test"), width, 3)
            .await
            .unwrap();
        assert_eq!(series.len(), 3);
        let total = |f: fn(&zoark_jobs::counts::Bucket) -> i64| series.iter().map(f).sum::<i64>();
        assert_eq!(total(|b| b.completed), 30);
        assert_eq!(total(|b| b.discarded), 10);
        assert_eq!(
            total(|b| b.retryable),
            20,
            "two failed attempts before each discard"
        );
        assert_eq!(total(|b| b.cancelled), 1);
        assert!(
            series
                .windows(2)
                .all(|w| w[0].start + width.delta() == w[1].start)
        );
    }
    let acme_only = zoark_jobs::counts::throughput(
        &mut conn,
        Some(acme),
        None,
        zoark_jobs::counts::Width::Hour,
        1,
    )
    .await
    .unwrap();
    let acme_completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM jobs WHERE organization_id = $1 AND state = 'completed'",
    )
    .bind(acme)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(acme_completed > 0);
    assert_eq!(acme_only[0].completed, acme_completed);
}

#[tokio::test]
async fn an_args_search_examines_a_bounded_window_and_says_where_it_stopped() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..25 {
        let label = if i == 2 { "needle" } else { "hay" };
        ids.push(push(&app, &probe(label), Opts::platform()).await);
    }
    let filter = zoark_jobs::admin::JobFilter {
        args_value: Some("needle".into()),
        ..Default::default()
    };
    let mut conn = app.pool.acquire().await.unwrap();
    let scope = zoark_jobs::admin::Scope::Platform;
    // Newest first: ids[24..15] are examined, none matches; the search stopped at ids[15].
    let first = zoark_jobs::admin::list_within(&mut conn, scope, &filter, 5, Some(10))
        .await
        .unwrap();
    assert!(first.jobs.is_empty());
    assert_eq!(first.searched_to, Some(ids[15]));
    let second = zoark_jobs::admin::list_within(
        &mut conn,
        scope,
        &zoark_jobs::admin::JobFilter {
            before_id: Some(ids[15]),
            ..filter.clone()
        },
        5,
        Some(10),
    )
    .await
    .unwrap();
    assert!(second.jobs.is_empty());
    assert_eq!(second.searched_to, Some(ids[5]));
    let third = zoark_jobs::admin::list_within(
        &mut conn,
        scope,
        &zoark_jobs::admin::JobFilter {
            before_id: Some(ids[5]),
            ..filter.clone()
        },
        5,
        Some(10),
    )
    .await
    .unwrap();
    assert_eq!(
        third.jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[2]]
    );
    assert_eq!(third.searched_to, None, "fewer than the limit were left");
    // Unbounded (the API's list): the match at once.
    let all = zoark_jobs::admin::list(&mut conn, scope, &filter, 5)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|j| j.id).collect::<Vec<_>>(), [ids[2]]);
}
