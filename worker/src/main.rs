//! `zoark-worker`: the `worker` process of the Procfile; scale it horizontally.

use zoark_core::{Settings, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("zoark-worker: configuration error: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let _telemetry = telemetry::init("zoark-worker", &settings);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        zoark_core::shutdown::signal().await;
        signal.cancel();
    });
    match zoark_worker::run(settings, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "zoark-worker failed");
            eprintln!("zoark-worker: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
