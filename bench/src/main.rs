//! `zoark-bench queue`: Zoark's job engine, graphile-worker, apalis-postgres and the raw-SQL
//! ceiling measured one after the other on the same Postgres, each in a fresh database, at the
//! same slots per process (`scenario`). `zoark-bench email`: email
//! deliveries per second through the API, the jobs, the worker and SMTP. `zoark-bench agents`:
//! agent runs against a mock LLM, beside the LLM's own time. `cargo xtask bench
//! queue|email|search|agents` provisions Postgres (and the peers) and runs these; see
//! `docs/benchmarks.md`.

mod agents;
mod child;
mod dashboard;
mod db;
mod email;
mod peers;
mod platform;
mod raw;
mod report;
mod scenario;
mod search;

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
    /// Document search: query latency, recall against exact search, indexing rate.
    Search(search::SearchArgs),
    /// The dashboard's pages with a million jobs: latency of each page's HTML, first
    /// contentful paint in Chromium.
    Dashboard(dashboard::DashboardArgs),
    /// Agent runs of three LLM steps against a mock LLM: wall time beside the ideal, step
    /// overhead, event latency.
    Agents(agents::AgentsArgs),
}

#[derive(clap::Args, Debug, Clone)]
pub struct QueueArgs {
    /// The server, without a database: `postgres://user@host:port` (a superuser: the
    /// apalis-postgres database gets the `hstore` extension).
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
    /// The `apalis-peer` binary (a release build of this crate).
    #[arg(long)]
    pub apalis_bin: Option<PathBuf>,
    /// pgbench, for the raw-SQL ceiling.
    #[arg(long)]
    pub pgbench: Option<PathBuf>,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
    /// The short run for CI: every kind of row once, a few thousand jobs, one round.
    #[arg(long)]
    pub quick: bool,
    /// Every row with this many jobs instead (development runs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Bulk-enqueue-and-drain rounds per row; the median is reported [default: 3, quick 1].
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Sequential insert→start samples after 100 warm-up jobs [default: 1000, quick 50].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Seconds an idle worker is watched for its query rate [default: 30, quick 2].
    #[arg(long)]
    pub idle_secs: Option<u64>,
    /// Finished jobs added to Zoark's table for its idle cost with a long history [default:
    /// 1,000,000, quick 100,000].
    #[arg(long)]
    pub finished_rows: Option<usize>,
    /// Only the rows whose label contains one of these (development runs), e.g.
    /// `--rows 'noop, 24 slots × 4'`; the first row kept measures idle load and pickup.
    #[arg(long, value_delimiter = ';')]
    pub rows: Vec<String>,
    /// Jobs a worker takes per fetch: Zoark's claim batch, graphile-worker's `localQueue.size`,
    /// apalis-postgres's `batch_size`.
    #[arg(long, default_value_t = 500)]
    pub claim_batch: usize,
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
        default_value = "zoark,graphile-worker,apalis-postgres,raw-sql"
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
            Command::Search(args) => search::run(args).await,
            Command::Agents(args) => agents::run(args).await,
            Command::Dashboard(args) => dashboard::run(args).await,
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
    let plan = scenario::Plan::new(&args);
    let started = std::time::Instant::now();
    // The bounds first, while nothing else runs.
    let mut bounds = Vec::new();
    for row in plan
        .rows
        .iter()
        .filter(|r| r.job == scenario::JobShape::Sleep5ms)
    {
        let bound = scenario::bare_loop_per_s(row).await?;
        println!("bound for {}: {bound:.0} jobs/s", row.label());
        bounds.push((*row, bound));
    }
    let admin = db::admin_pool(&args.server).await?;
    let mut report = report::Report::new(&admin, &plan).await?;
    for name in &args.systems {
        println!("== {name}");
        let peer = match name.as_str() {
            "zoark" => peers::Peer::Zoark,
            "graphile-worker" => peers::Peer::Graphile,
            "apalis-postgres" => peers::Peer::Apalis,
            "raw-sql" => {
                report.add([raw::run(&args, &plan, &admin).await?]);
                report.write(&args.out)?;
                continue;
            }
            other => anyhow::bail!(
                "unknown system `{other}` (zoark, graphile-worker, apalis-postgres, raw-sql)"
            ),
        };
        report.add(peers::run(&args, &plan, &admin, peer, &bounds).await?);
        // After every system, so that a later failure keeps what was measured.
        report.write(&args.out)?;
    }
    report.print(&plan);
    report.write(&args.out)?;
    println!(
        "wrote {} ({:.0} s)",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
