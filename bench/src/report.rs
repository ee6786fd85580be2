//! The figures of one run: printed as a table with ratios, written as `bench/queue.json`.

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{QueueArgs, db};

#[derive(Debug, Serialize)]
pub struct Figures {
    pub system: &'static str,
    pub settings: String,
    pub bulk_enqueue_per_s: Option<f64>,
    pub drain_per_s: Option<f64>,
    pub pickup_p50_ms: Option<f64>,
    pub pickup_p99_ms: Option<f64>,
    pub idle_queries_per_s: Option<f64>,
    pub rss_mib: Option<f64>,
    /// CPU time of the worker process during the drain, per job (not part of the shape).
    pub worker_cpu_us_per_job: Option<f64>,
}

/// Reads one figure of a system.
type Figure = fn(&Figures) -> Option<f64>;

#[derive(Debug, Serialize)]
pub struct Report {
    machine: Value,
    postgres: Value,
    workload: Value,
    systems: Vec<Figures>,
}

impl Report {
    pub async fn new(
        admin: &PgPool,
        args: &QueueArgs,
        systems: Vec<Figures>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            machine: machine(),
            postgres: postgres(admin).await?,
            workload: json!({
                "bulk_and_drain_jobs": args.jobs,
                "pickup_samples": args.samples,
                "pickup_warm_up": 100,
                "idle_seconds": args.idle_secs,
                "job": "no-op (Zoark diag.noop / graphile-worker task noop)",
            }),
            systems,
        })
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)? + "\n")?;
        Ok(())
    }

    pub fn print(&self) {
        let find = |name: &str| self.systems.iter().find(|s| s.system == name);
        let ours = find("zoark");
        let peers: Vec<&Figures> = self
            .systems
            .iter()
            .filter(|s| s.system != "zoark")
            .collect();
        let rows: [(&str, Figure); 7] = [
            ("bulk enqueue (jobs/s)", |f| f.bulk_enqueue_per_s),
            ("drain (jobs/s)", |f| f.drain_per_s),
            ("pickup p50 (ms)", |f| f.pickup_p50_ms),
            ("pickup p99 (ms)", |f| f.pickup_p99_ms),
            ("idle queries/s", |f| f.idle_queries_per_s),
            ("idle RSS (MiB)", |f| f.rss_mib),
            ("worker CPU/job (µs)", |f| f.worker_cpu_us_per_job),
        ];
        let mut header = format!("{:<24}", "");
        for s in &self.systems {
            header += &format!("{:>17}", s.system);
        }
        for p in &peers {
            header += &format!("{:>22}", format!("zoark/{}", p.system));
        }
        println!("\n{header}");
        for (label, get) in rows {
            let mut line = format!("{label:<24}");
            for s in &self.systems {
                line += &format!("{:>17}", cell(get(s)));
            }
            for p in &peers {
                let ratio = match (ours.and_then(get), get(p)) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
                    _ => "—".to_owned(),
                };
                line += &format!("{ratio:>22}");
            }
            println!("{line}");
        }
        for s in &self.systems {
            println!("  {}: {}", s.system, s.settings);
        }
    }
}

/// The server's version and the settings that matter for throughput.
pub async fn postgres(admin: &PgPool) -> anyhow::Result<Value> {
    let version: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(admin)
        .await?;
    let settings: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY($1) ORDER BY name",
    )
    .bind(
        [
            "shared_buffers",
            "max_connections",
            "fsync",
            "synchronous_commit",
            "full_page_writes",
            "wal_level",
            "work_mem",
            "shared_preload_libraries",
        ]
        .as_slice(),
    )
    .fetch_all(admin)
    .await?;
    let settings: serde_json::Map<String, Value> = settings
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    Ok(json!({
        "version": version,
        "settings": settings,
        "idle_queries_counted_by": db::query_source(admin).await,
        "same_host": true,
    }))
}

fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "—".to_owned(),
    }
}

pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kib| (kib / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .ok();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).ok(),
        "cpu_model": cpu,
        "memory_gib": mem_gib,
        "kernel": kernel,
        "arch": std::env::consts::ARCH,
    })
}
