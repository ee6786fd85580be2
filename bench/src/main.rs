//! `zoark-bench queue`: Zoark's job engine, graphile-worker and the raw-SQL ceiling measured one
//! after the other on the same Postgres, each in a fresh database. `zoark-bench email`: email
//! deliveries per second through the API, the jobs, the worker and SMTP. `cargo xtask bench
//! queue|email` provisions Postgres (and the peers) and runs these; see `docs/benchmarks.md`.

mod child;
mod db;
mod email;
mod peers;
mod raw;
mod report;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Zoark benchmarks (run through `cargo xtask bench`)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Bulk enqueue, burn-down drain, pickup latency, idle load and RSS, per system.
    Queue(QueueArgs),
    /// Deliveries per second through API → jobs → worker → SMTP.
    Email(email::EmailArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct QueueArgs {
    /// The server, without a database: `postgres://user@host:port`.
    #[arg(long)]
    pub server: String,
    /// The `zoark-worker` binary to measure (a release build).
    #[arg(long)]
    pub worker_bin: PathBuf,
    /// Node.js ≥ 22.18 for graphile-worker.
    #[arg(long)]
    pub node: Option<PathBuf>,
    /// The graphile-worker runner script, next to its `node_modules`.
    #[arg(long)]
    pub graphile_script: Option<PathBuf>,
    /// pgbench, for the raw-SQL ceiling.
    #[arg(long)]
    pub pgbench: Option<PathBuf>,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Jobs for the bulk enqueue and the drain.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Bulk-enqueue-and-drain rounds per system; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Sequential insert→start samples (after 100 warm-up jobs).
    #[arg(long, default_value_t = 1_000)]
    pub samples: usize,
    /// Seconds an idle worker is watched for its query rate.
    #[arg(long, default_value_t = 30)]
    pub idle_secs: u64,
    /// Slots of Zoark's `diagnostics` queue. No-op jobs are tokio tasks; like River's bench
    /// (`MaxWorkers` 2000), the drain is measured with many slots so claims come in full batches.
    #[arg(long, default_value_t = 1000)]
    pub zoark_concurrency: usize,
    /// graphile-worker's `concurrentJobs`.
    #[arg(long, default_value_t = 24)]
    pub graphile_concurrency: usize,
    /// graphile-worker's `localQueue.size`.
    #[arg(long, default_value_t = 500)]
    pub graphile_local_queue: usize,
    /// pgbench clients for the raw-SQL drain.
    #[arg(long, default_value_t = 2)]
    pub raw_clients: usize,
    /// Jobs per claim for the raw-SQL drain (Zoark's default claim batch).
    #[arg(long, default_value_t = 500)]
    pub raw_batch: usize,
    /// Which systems to run.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "zoark,graphile-worker,raw-sql"
    )]
    pub systems: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("zoark-bench: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Queue(args) => queue(args).await,
            Command::Email(args) => email::run(args).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("zoark-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn queue(args: QueueArgs) -> anyhow::Result<()> {
    let admin = db::admin_pool(&args.server).await?;
    let mut systems = Vec::new();
    for name in &args.systems {
        println!("== {name}");
        let figures = match name.as_str() {
            "zoark" => peers::run(&args, &admin, peers::Peer::Zoark).await?,
            "graphile-worker" => peers::run(&args, &admin, peers::Peer::Graphile).await?,
            "raw-sql" => raw::run(&args, &admin).await?,
            other => anyhow::bail!("unknown system `{other}` (zoark, graphile-worker, raw-sql)"),
        };
        println!("{}", serde_json::to_string(&figures)?);
        systems.push(figures);
    }
    let report = report::Report::new(&admin, &args, systems).await?;
    report.print();
    report.write(&args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}
