//! `zoark-scheduler`: the `scheduler` process; one is enough, extra replicas wait on the lock.

use zoark_core::{Settings, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zoark-scheduler: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init("zoark-scheduler", &settings);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        zoark_core::shutdown::signal().await;
        signal.cancel();
    });
    let (leader, _) = tokio::sync::watch::channel(false);
    match zoark_scheduler::run(
        settings,
        zoark_scheduler::Timing::default(),
        leader,
        shutdown,
    )
    .await
    {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "zoark-scheduler failed");
            eprintln!("zoark-scheduler: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
