//! Shutdown signals shared by the three processes.

use std::future::Future;

/// Resolves on the first SIGTERM (what Heroku, systemd and Kubernetes send) or SIGINT (Ctrl-C).
///
/// The handlers are installed when this is called, not when the future is first polled: a
/// signal that arrives between start-up and the first poll (a server polls its shutdown future
/// only once it runs) is caught, where the default disposition would kill the process at once.
/// Call it inside the Tokio runtime.
pub fn signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            match handlers {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutting down"),
                        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutting down"),
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
