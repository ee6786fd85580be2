//! Scheduler leadership: one leader among replicas, and a follower takes over when it goes.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, time::Duration};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zoark_core::Settings;
use zoark_scheduler::Timing;
use zoark_tests::{TestApp, proxy::TcpProxy};

async fn wait_until(rx: &mut watch::Receiver<bool>, value: bool, timeout: Duration) -> bool {
    tokio::time::timeout(timeout, rx.wait_for(|v| *v == value))
        .await
        .is_ok()
}

#[tokio::test]
async fn exactly_one_of_three_replicas_leads_and_a_follower_takes_over_when_it_stops() {
    let app = TestApp::spawn().await;
    let timing = Timing {
        retry: Duration::from_millis(200),
        tick: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    };
    let mut replicas = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = watch::channel(false);
        let token = CancellationToken::new();
        let handle = tokio::spawn(zoark_scheduler::run(
            (*app.settings).clone(),
            timing,
            tx,
            token.clone(),
        ));
        replicas.push((rx, token, handle));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leaders: Vec<usize> = replicas
        .iter()
        .enumerate()
        .filter(|(_, r)| *r.0.borrow())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader, got {leaders:?}");

    let (_, token, handle) = replicas.remove(leaders[0]);
    token.cancel();
    handle.await.unwrap().unwrap();

    let mut took_over = false;
    for (rx, _, _) in &mut replicas {
        let mut rx = rx.clone();
        if wait_until(&mut rx, true, Duration::from_secs(3)).await {
            took_over = true;
            break;
        }
    }
    assert!(took_over, "a follower took over");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        replicas.iter().filter(|r| *r.0.borrow()).count(),
        1,
        "still exactly one leader"
    );
    for (_, token, handle) in replicas {
        token.cancel();
        handle.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn a_leader_whose_database_connection_hangs_gives_up_and_another_replica_takes_over() {
    let app = TestApp::spawn().await;
    let url = url::Url::parse(&app.database.url).unwrap();
    let proxy = TcpProxy::start(format!(
        "{}:{}",
        url.host_str().unwrap(),
        url.port().unwrap_or(5432)
    ))
    .await
    .unwrap();
    let mut proxied = url.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.port)).unwrap();
    let behind_proxy = Settings::from_source(&HashMap::from([
        ("DATABASE_URL".to_owned(), proxied.to_string()),
        ("ZOARK_ENV".to_owned(), "development".to_owned()),
    ]))
    .unwrap();
    let timing = Timing {
        retry: Duration::from_millis(200),
        tick: Duration::from_millis(100),
        timeout: Duration::from_secs(1),
    };
    let start = |settings: Settings| {
        let (tx, rx) = watch::channel(false);
        let token = CancellationToken::new();
        let handle = tokio::spawn(zoark_scheduler::run(settings, timing, tx, token.clone()));
        (rx, token, handle)
    };
    let (mut hung_rx, hung_token, hung_handle) = start(behind_proxy);
    assert!(
        wait_until(&mut hung_rx, true, Duration::from_secs(10)).await,
        "the replica behind the proxy leads"
    );
    let (mut other_rx, other_token, other_handle) = start((*app.settings).clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !*other_rx.borrow(),
        "one leader while the connection is fine"
    );

    // The leader's session stays open on the server but nothing answers any more.
    proxy.hang();
    assert!(
        wait_until(&mut other_rx, true, Duration::from_secs(8)).await,
        "another replica took over within 8 s of the hang"
    );
    assert!(!*hung_rx.borrow(), "the hung replica gave leadership up");
    // While the database stays unreachable for it, the hung replica keeps contending in vain.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!*hung_rx.borrow(), "no second leader");
    assert!(*other_rx.borrow(), "the new leader keeps leading");

    // Both stop promptly, the hung one too (its attempts time out).
    for (token, handle) in [(hung_token, hung_handle), (other_token, other_handle)] {
        token.cancel();
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("the replica stops within 5 s")
            .unwrap()
            .unwrap();
    }
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_cron_tick_is_enqueued_once_even_when_replicas_race_for_it() {
    let app = TestApp::spawn().await;
    let daily = Some("0 2 * * *");
    let table = zoark_scheduler::cron::CronTable::platform(daily).unwrap();
    // First sight records the latest tick without running it.
    let mut conn = app.pool.acquire().await.unwrap();
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T03:00:00Z")
        .unwrap()
        .to_utc();
    zoark_scheduler::cron::run_static(&mut conn, &table, now)
        .await
        .unwrap();
    assert_eq!(count(&app, "SELECT count(*) FROM jobs").await, 0);
    // Down for three hours: the rescue entry (every minute) missed 180 ticks, pruning 3, the
    // daily backup (02:00) 1.
    sqlx::query("UPDATE cron_ticks SET last_tick_at = last_tick_at - interval '3 hours'")
        .execute(&app.pool)
        .await
        .unwrap();
    let mut racers = Vec::new();
    for _ in 0..4 {
        let pool = app.pool.clone();
        racers.push(tokio::spawn(async move {
            let table = zoark_scheduler::cron::CronTable::platform(daily).unwrap();
            let mut conn = pool.acquire().await.unwrap();
            zoark_scheduler::cron::run_static(&mut conn, &table, now)
                .await
                .unwrap()
        }));
    }
    let mut total = 0;
    for r in racers {
        total += r.await.unwrap();
    }
    assert_eq!(total, 3, "one job per entry, whoever enqueued it");
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM jobs WHERE kind = 'maintenance.rescue_jobs'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM jobs WHERE kind = 'maintenance.prune_jobs'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM jobs WHERE kind = 'maintenance.backup_database'"
        )
        .await,
        1
    );
    // The same instant again enqueues nothing.
    zoark_scheduler::cron::run_static(&mut conn, &table, now)
        .await
        .unwrap();
    assert_eq!(count(&app, "SELECT count(*) FROM jobs").await, 3);
}

#[tokio::test]
async fn a_due_agent_schedule_runs_once_for_all_missed_ticks_and_moves_to_its_next_local_tick() {
    let app = TestApp::spawn().await;
    let org: uuid::Uuid =
        sqlx::query_scalar("INSERT INTO organizations (name) VALUES ('Acme') RETURNING id")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let agent: uuid::Uuid = sqlx::query_scalar(
        "SELECT id FROM agents WHERE organization_id = $1 AND kind = 'task_monitor'",
    )
    .bind(org)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    // The built-in agents' own schedules out of the way.
    sqlx::query("DELETE FROM agent_schedules WHERE organization_id = $1")
        .bind(org)
        .execute(&app.pool)
        .await
        .unwrap();
    // 09:00 every day in Paris; last due three days ago.
    let schedule: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO agent_schedules (organization_id, agent_id, cron_expression, time_zone, next_run_at)
         VALUES ($1, $2, '0 9 * * *', 'Europe/Paris', now() - interval '3 days') RETURNING id",
    )
    .bind(org)
    .bind(agent)
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let mut conn = app.pool.acquire().await.unwrap();
    let now = chrono::Utc::now();
    let n = zoark_scheduler::cron::run_agent_schedules(&mut conn, now)
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = zoark_scheduler::cron::run_agent_schedules(&mut conn, now)
        .await
        .unwrap();
    assert_eq!(n, 0, "nothing is due any more");
    let (job_org, kind, key): (uuid::Uuid, String, String) =
        sqlx::query_as("SELECT organization_id, kind, unique_key FROM jobs")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((job_org, kind.as_str()), (org, "agents.run_scheduled"));
    assert!(key.starts_with(&schedule.to_string()));
    let next: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT next_run_at FROM agent_schedules WHERE id = $1")
            .bind(schedule)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    let local = next.with_timezone(&chrono_tz::Europe::Paris);
    assert!(next > now && next - now <= chrono::Duration::days(1));
    assert_eq!(local.format("%H:%M:%S").to_string(), "09:00:00");
}
