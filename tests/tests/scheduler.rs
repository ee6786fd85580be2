//! Scheduler leadership: one leader among replicas, and a follower takes over when it goes.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zoark_scheduler::Timing;
use zoark_tests::TestApp;

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
