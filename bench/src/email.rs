//! `zoark-bench email`: deliveries per second through the whole path. The API (`zoark-api
//! serve`) and a worker (`zoark-worker`) run as their own processes on a fresh database; an
//! SMTP server on loopback in this process receives. One broadcast to N addresses is created
//! and sent through the API (one request fans out N deliveries and N jobs); the clock runs from
//! that request until the SMTP server holds N messages.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::process::Command;
use zoark_tests::smtp::SmtpSink;

use crate::{
    child::Worker,
    db,
    platform::{self, call, free_port},
    report,
};

#[derive(clap::Args, Debug, Clone)]
pub struct EmailArgs {
    /// The server, without a database: `postgres://user@host:port`.
    #[arg(long)]
    pub server: String,
    /// The `zoark-api` binary (a release build).
    #[arg(long)]
    pub api_bin: PathBuf,
    /// The `zoark-worker` binary (a release build).
    #[arg(long)]
    pub worker_bin: PathBuf,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Recipients of the broadcast.
    #[arg(long, default_value_t = 5_000)]
    pub recipients: usize,
    /// Slots of the worker's `email` queue (the default configuration has 20).
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// The target the issue sets, for the printed verdict.
    #[arg(long, default_value_t = 500.0)]
    pub target_per_s: f64,
}

#[derive(Debug, Serialize)]
struct Figures {
    recipients: usize,
    email_queue_slots: usize,
    /// The `POST /broadcasts/{id}/send` request: N deliveries and N jobs in one transaction.
    fan_out_ms: f64,
    /// From the send request to the N-th message received by the SMTP server.
    delivery_seconds: f64,
    deliveries_per_s: f64,
    /// Until the broadcast's own status was final (`sent`).
    finished_seconds: f64,
    broadcast_status: String,
    messages_received: usize,
    worker_rss_mib: Option<f64>,
    worker_cpu_seconds: Option<f64>,
    api_cpu_seconds: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    machine: Value,
    postgres: Value,
    workload: Value,
    zoark: Figures,
}

fn process(bin: &std::path::Path, url: &str, port: u16, smtp: &SmtpSink, slots: usize) -> Command {
    let mut cmd = platform::command(bin, url, port, &format!("email={slots},maintenance=1"));
    for (key, value) in smtp.env() {
        cmd.env(key, value);
    }
    cmd
}

pub async fn run(args: EmailArgs) -> anyhow::Result<()> {
    zoark_core::telemetry::install_crypto_provider();
    let admin = db::admin_pool(&args.server).await?;
    let url = db::fresh(&admin, &args.server, "zoark_bench_email").await?;
    {
        let pool = db::pool(&url).await?;
        zoark_core::db::migrate_all(&pool)
            .await
            .context("migrating the benchmark database")?;
        pool.close().await;
    }
    let smtp = SmtpSink::start().await;
    let port = free_port()?;
    let mut api_cmd = process(&args.api_bin, &url, port, &smtp, args.concurrency);
    api_cmd.arg("serve");
    let mut api = Worker::spawn("zoark-api", api_cmd)?;
    api.wait_for("zoark-api listening", Duration::from_secs(60))
        .await?;
    let mut worker = Worker::spawn(
        "zoark-worker",
        process(&args.worker_bin, &url, port, &smtp, args.concurrency),
    )?;
    worker
        .wait_for("zoark-worker started", Duration::from_secs(60))
        .await?;
    let figures = measure(&args, port, &smtp, &worker, &api).await;
    let worker_rss = worker.rss_mib().ok();
    worker.stop().await?;
    api.stop().await?;
    let mut figures = figures?;
    figures.worker_rss_mib = worker_rss;
    let report = Report {
        machine: report::machine(),
        postgres: report::postgres(&admin).await?,
        workload: json!({
            "path": "POST /api/v1/broadcasts/{id}/send → email.send jobs → zoark-worker → SMTP on loopback",
            "message": "multipart text + HTML, List-Unsubscribe, one recipient per message",
            "smtp_server": "in the benchmark process (tokio), no TLS, no authentication",
        }),
        zoark: figures,
    };
    print(&report.zoark, args.target_per_s);
    report::write_json(&args.out, &report)?;
    println!("wrote {}", args.out.display());
    admin.close().await;
    Ok(())
}

async fn measure(
    args: &EmailArgs,
    port: u16,
    smtp: &SmtpSink,
    worker: &Worker,
    api: &Worker,
) -> anyhow::Result<Figures> {
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let token = platform::register(&http, &base).await?;
    let token = Some(token.as_str());
    let account = call(
        &http,
        &base,
        token,
        "/api/v1/email-accounts",
        Some(
            json!({"provider": "smtp", "display_name": "Bench", "from_address": "bench@example.com",
                    "host": "127.0.0.1", "port": smtp.port, "security": "none"}),
        ),
    )
    .await?;
    let recipients: Vec<String> = (0..args.recipients)
        .map(|i| format!("r{i}@example.com"))
        .collect();
    let broadcast = call(
        &http,
        &base,
        token,
        "/api/v1/broadcasts",
        Some(json!({"email_account_id": account["id"], "subject": "Benchmark",
                    "body_text": "Hello,\n\nthis is the email benchmark.", "recipients": recipients})),
    )
    .await?;
    let id = broadcast["id"]
        .as_str()
        .context("no broadcast id")?
        .to_owned();
    let (worker_cpu, api_cpu) = (worker.cpu_seconds().ok(), api.cpu_seconds().ok());
    let started = Instant::now();
    call(
        &http,
        &base,
        token,
        &format!("/api/v1/broadcasts/{id}/send"),
        None,
    )
    .await?;
    let fan_out = started.elapsed();
    let limit = Duration::from_secs(600);
    let delivered = loop {
        let received = smtp.received();
        if received >= args.recipients {
            break started.elapsed();
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "{received} of {} messages after {limit:?}",
            args.recipients
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let (status, finished) = loop {
        let b = call(
            &http,
            &base,
            token,
            &format!("/api/v1/broadcasts/{id}"),
            None,
        )
        .await?;
        let status = b["status"].as_str().unwrap_or_default().to_owned();
        if status != "sending" {
            break (status, started.elapsed());
        }
        anyhow::ensure!(started.elapsed() < limit, "the broadcast is still sending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let delivery_seconds = delivered.as_secs_f64();
    Ok(Figures {
        recipients: args.recipients,
        email_queue_slots: args.concurrency,
        fan_out_ms: fan_out.as_secs_f64() * 1000.0,
        delivery_seconds,
        deliveries_per_s: args.recipients as f64 / delivery_seconds,
        finished_seconds: finished.as_secs_f64(),
        broadcast_status: status,
        messages_received: smtp.received(),
        worker_rss_mib: None,
        worker_cpu_seconds: worker
            .cpu_seconds()
            .ok()
            .zip(worker_cpu)
            .map(|(after, before)| after - before),
        api_cpu_seconds: api
            .cpu_seconds()
            .ok()
            .zip(api_cpu)
            .map(|(after, before)| after - before),
    })
}

fn print(f: &Figures, target: f64) {
    println!();
    println!(
        "email delivery, {} recipients, {} email slots",
        f.recipients, f.email_queue_slots
    );
    println!("  fan-out (one send request)   {:>10.0} ms", f.fan_out_ms);
    println!(
        "  all messages received after {:>10.2} s",
        f.delivery_seconds
    );
    println!(
        "  deliveries/s                 {:>10.0}   (target {target:.0}: {:.2}×)",
        f.deliveries_per_s,
        f.deliveries_per_s / target
    );
    println!(
        "  broadcast {} after          {:>10.2} s",
        f.broadcast_status, f.finished_seconds
    );
    if let (Some(w), Some(a)) = (f.worker_cpu_seconds, f.api_cpu_seconds) {
        println!("  CPU: worker {w:.1} s, API {a:.1} s");
    }
    if let Some(rss) = f.worker_rss_mib {
        println!("  worker RSS {rss:.0} MiB");
    }
}
