//! Process-wide observability: the rustls crypto provider, tracing subscriber, Sentry and the
//! Prometheus recorder. Each binary calls [`init`] first thing in `main` and keeps the guard.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::{LogFormat, Settings};

/// Keeps Sentry flushing on drop; hold it until `main` returns.
#[must_use]
pub struct TelemetryGuard {
    _sentry: Option<sentry::ClientInitGuard>,
}

/// Installs the ring crypto provider (reqwest, sqlx and lettre would otherwise disagree or panic),
/// the tracing subscriber (JSON in production, readable in development, `RUST_LOG` filter),
/// Sentry when `SENTRY_DSN` is set, and the Prometheus recorder.
pub fn init(service: &'static str, settings: &Settings) -> TelemetryGuard {
    install_crypto_provider();
    let sentry = settings.sentry_dsn.as_ref().map(|dsn| {
        let mut options = sentry::ClientOptions::new()
            .maybe_release(sentry::release_name!())
            .environment(if settings.is_production() {
                "production"
            } else {
                "development"
            })
            .server_name(service);
        options.dsn = Some(dsn.clone());
        sentry::init(options)
    });
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = match settings.log_format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_target(true)
            .compact()
            .boxed(),
    };
    let sentry_layer = sentry.is_some().then(|| {
        sentry::integrations::tracing::ErrorLayer::default()
            .with_filter(tracing_subscriber::filter::LevelFilter::ERROR)
    });
    // A second init (tests spawning several apps in one process) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(sentry_layer)
        .try_init();
    let _ = prometheus();
    if let Some(guard) = &sentry {
        tracing::info!(
            service,
            sentry.enabled = guard.is_enabled(),
            "telemetry initialised"
        );
    }
    TelemetryGuard { _sentry: sentry }
}

/// Installs ring as the process-wide rustls provider; idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The process's Prometheus recorder, installed on first use.
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            match PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("zoark_job_duration_seconds".into()),
                    &[0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0],
                )
                .and_then(|b| b.install_recorder())
            {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "could not install the Prometheus recorder");
                    None
                }
            }
        })
        .as_ref()
}
