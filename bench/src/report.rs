//! The figures of one run: one row per system and scenario, printed as tables with the ratios
//! per row (Zoark over each peer), written as `bench/queue.json`.

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use crate::{
    db,
    scenario::{JobShape, Plan, SLEEP_MS, Scenario},
};

#[derive(Debug, Serialize)]
pub struct Figures {
    pub system: &'static str,
    pub settings: String,
    /// Slots per worker process.
    pub concurrency: usize,
    pub processes: usize,
    pub jobs: usize,
    pub tenant: bool,
    pub job: JobShape,
    pub bulk_enqueue_per_s: Option<f64>,
    pub drain_per_s: Option<f64>,
    /// The bare-loop bound of a `sleep_5ms` row (see `scenario::bare_loop_per_s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bound_per_s: Option<f64>,
    /// Idle load, RSS and pickup latency are measured once per system, on the headline row.
    pub pickup_p50_ms: Option<f64>,
    pub pickup_p99_ms: Option<f64>,
    pub idle_queries_per_s: Option<f64>,
    /// Execution time of the idle worker's statements per second (`pg_stat_statements`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_exec_ms_per_s: Option<f64>,
    /// Zoark only: the same idle figures once its table holds many finished jobs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_with_history: Option<IdleCost>,
    pub rss_mib: Option<f64>,
    /// CPU time of the worker processes during the drain, per job (not part of the shape).
    pub worker_cpu_us_per_job: Option<f64>,
    /// Every round's drain, in order (the median is `drain_per_s`).
    pub drain_rounds_per_s: Vec<f64>,
}

/// What an idle worker costs Postgres over a watched window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct IdleCost {
    /// Finished jobs in the table while watched.
    pub finished_rows: usize,
    pub queries_per_s: f64,
    pub exec_ms_per_s: f64,
}

impl Figures {
    pub fn scenario(&self) -> Scenario {
        Scenario {
            concurrency: self.concurrency,
            processes: self.processes,
            jobs: self.jobs,
            tenant: self.tenant,
            job: self.job,
        }
    }
}

/// Reads one figure of a system.
type Figure = fn(&Figures) -> Option<f64>;

const OURS: &str = "zoark";
const CEILING: &str = "raw-sql";

#[derive(Debug, Serialize)]
pub struct Report {
    machine: Value,
    postgres: Value,
    workload: Value,
    systems: Vec<Figures>,
}

impl Report {
    /// An empty report of this run; [`Report::add`] the systems' rows as they are measured.
    pub async fn new(admin: &PgPool, plan: &Plan) -> anyhow::Result<Self> {
        Ok(Self {
            machine: machine(),
            postgres: postgres(admin).await?,
            workload: json!({
                "rows": plan.rows.iter().map(Scenario::label).collect::<Vec<_>>(),
                "rounds": plan.rounds,
                "pickup_samples": plan.samples,
                "pickup_warm_up": 100,
                "idle_seconds": plan.idle_secs,
                "sleep_ms": SLEEP_MS,
                "job": "noop: Zoark diag.noop / graphile-worker task noop / apalis-postgres BenchJob::Noop; \
                        sleep_5ms: diag.sleep {ms: 5} / task sleep / BenchJob::Sleep",
                "tenant": "Zoark jobs with organization_id (the jobs_notify event trigger fires); \
                           the peers have no tenants and are compared on their platform row",
            }),
            systems: Vec::new(),
        })
    }

    pub fn add(&mut self, rows: impl IntoIterator<Item = Figures>) {
        self.systems.extend(rows);
    }

    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        write_json(path, self)
    }

    /// The systems in the order they ran.
    fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for s in &self.systems {
            if !names.contains(&s.system) {
                names.push(s.system);
            }
        }
        names
    }

    /// A system's row for `row`; a system without tenants answers a tenant row with its
    /// platform row (`true` when it did).
    fn find(&self, system: &str, row: Scenario) -> Option<(&Figures, bool)> {
        let exact = |r: Scenario| {
            self.systems
                .iter()
                .find(|f| f.system == system && f.scenario() == r)
        };
        exact(row)
            .map(|f| (f, false))
            .or_else(|| exact(row.platform()).map(|f| (f, true)))
    }

    pub fn print(&self, plan: &Plan) {
        let names = self.names();
        let queues: Vec<&str> = names.iter().copied().filter(|n| *n != CEILING).collect();
        let peers: Vec<&str> = queues.iter().copied().filter(|n| *n != OURS).collect();

        // Drains: one line per row, the ratios beside.
        let mut header = format!("\n{:<32}", "drain (jobs/s)");
        for name in &queues {
            header += &format!("{name:>17}");
        }
        header += &format!("{:>12}", "bound");
        for peer in &peers {
            header += &format!("{:>24}", format!("{OURS}/{peer}"));
        }
        println!("{header}");
        for row in &plan.rows {
            let mut line = format!("{:<32}", row.label());
            let mut ours = None;
            let mut bound = None;
            let mut drains = Vec::new();
            for name in &queues {
                let found = self.find(name, *row);
                let drain = found.and_then(|(f, _)| f.drain_per_s);
                let mark = if found.is_some_and(|(_, platform)| platform) {
                    "*"
                } else {
                    ""
                };
                line += &format!("{:>17}", format!("{}{mark}", cell(drain)));
                bound = bound.or(found.and_then(|(f, _)| f.bound_per_s));
                if *name == OURS {
                    ours = drain;
                } else {
                    drains.push(drain);
                }
            }
            line += &format!("{:>12}", cell(bound));
            for drain in drains {
                line += &format!("{:>24}", ratio(ours, drain));
            }
            println!("{line}");
        }
        println!("  * a system without tenants: its platform row");
        if let Some(raw) = self.systems.iter().find(|f| f.system == CEILING) {
            println!(
                "  raw-SQL ceiling ({}): {} jobs/s",
                raw.settings,
                cell(raw.drain_per_s)
            );
        }

        // The headline row's other figures.
        let Some(headline) = plan.headline() else {
            return;
        };
        let rows: [(&str, Figure); 9] = [
            ("bulk enqueue (jobs/s)", |f| f.bulk_enqueue_per_s),
            ("drain (jobs/s)", |f| f.drain_per_s),
            ("pickup p50 (ms)", |f| f.pickup_p50_ms),
            ("pickup p99 (ms)", |f| f.pickup_p99_ms),
            ("idle queries/s", |f| f.idle_queries_per_s),
            ("idle exec ms/s", |f| f.idle_exec_ms_per_s),
            ("idle exec ms/s, history", |f| {
                f.idle_with_history.as_ref().map(|h| h.exec_ms_per_s)
            }),
            ("idle RSS (MiB)", |f| f.rss_mib),
            ("worker CPU/job (µs)", |f| f.worker_cpu_us_per_job),
        ];
        let columns: Vec<&Figures> = names
            .iter()
            .filter_map(|name| match self.find(name, headline) {
                Some((f, _)) => Some(f),
                None if *name == CEILING => self.systems.iter().find(|f| f.system == CEILING),
                None => None,
            })
            .collect();
        let ours = columns.iter().find(|f| f.system == OURS);
        let mut header = format!("\n{:<32}", headline.label());
        for f in &columns {
            header += &format!("{:>17}", f.system);
        }
        for f in columns.iter().filter(|f| f.system != OURS) {
            header += &format!("{:>24}", format!("{OURS}/{}", f.system));
        }
        println!("{header}");
        for (label, get) in rows {
            let mut line = format!("{label:<32}");
            for f in &columns {
                line += &format!("{:>17}", cell(get(f)));
            }
            for f in columns.iter().filter(|f| f.system != OURS) {
                line += &format!("{:>24}", ratio(ours.and_then(|o| get(o)), get(f)));
            }
            println!("{line}");
        }
        for f in &columns {
            println!("  {}: {}", f.system, f.settings);
        }
    }
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".to_owned(),
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

/// Writes `report` as pretty JSON to `path`, creating its directory.
///
/// # Errors
/// The directory or the file cannot be written.
pub fn write_json(path: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)? + "\n")?;
    Ok(())
}
