//! Start-up shared by the three binaries: settings (exit code 2 with the variable named when they
//! are wrong), telemetry, and a cancellation token tripped by SIGTERM/SIGINT.

use tokio_util::sync::CancellationToken;

use crate::{Settings, telemetry};

/// Settings and telemetry of a process that is starting.
pub struct Started {
    pub settings: Settings,
    pub telemetry: telemetry::TelemetryGuard,
}

/// Loads settings and starts telemetry; on a configuration error prints it and returns the exit
/// code to use (2).
///
/// # Errors
/// The exit code when the configuration is invalid.
pub fn start(service: &'static str) -> Result<Started, std::process::ExitCode> {
    match Settings::from_env() {
        Ok(settings) => {
            let telemetry = telemetry::init(service, &settings);
            Ok(Started {
                settings,
                telemetry,
            })
        }
        Err(e) => {
            eprintln!("{service}: configuration error: {e}");
            Err(std::process::ExitCode::from(2))
        }
    }
}

/// A token cancelled on the first SIGTERM or SIGINT.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let signal = crate::shutdown::signal();
    tokio::spawn(async move {
        signal.await;
        cancel.cancel();
    });
    token
}

/// Maps a process's result to its exit code, logging a failure once.
pub fn exit(service: &'static str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "{service} failed");
            eprintln!("{service}: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
