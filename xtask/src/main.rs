//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! - `dev`: local Postgres, migrations, a development organization, then `zoark-api`,
//!   `zoark-worker` and `zoark-scheduler` as three processes with prefixed output;
//! - `test`: local Postgres, then the whole suite with nextest;
//! - `openapi`: write or check the committed spec; `sqlx`: prepare or check `.sqlx/`;
//! - `pg`: start, stop or show the local cluster;
//! - `models`: fetch and check the local embedding model into `.zoark/models/` (`test` and `dev`
//!   do it when it is missing);
//! - `bench queue`: Zoark's job engine beside graphile-worker, apalis-postgres and the raw-SQL ceiling.
//! - `bench email`: email deliveries per second through API, jobs, worker and SMTP.
//! - `bench agents`: agent runs against a mock LLM: wall time beside the ideal, step overhead.
//! - `bench dashboard`: the dashboard's pages with a million jobs (HTML latency, first paint).
//! - `schemathesis`: the running API fuzzed against its own OpenAPI spec.

mod bench;
mod browser;
mod cargo;
mod deny;
mod dev;
mod models;
mod postgres;
mod process;
mod python;
mod schemathesis;
mod sqlx;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Zoark project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform locally: Postgres, migrations, API, worker and scheduler.
    Dev,
    /// Fetch the local embedding model (all-MiniLM-L6-v2) into .zoark/models/ again, checked.
    Models,
    /// Run the whole test suite (unit and integration) against a local Postgres.
    Test {
        /// Extra arguments for cargo nextest (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write docs/openapi.json from the code, or check it is current.
    Openapi {
        #[arg(long)]
        check: bool,
    },
    /// Refresh the committed `.sqlx/` query data, or check it is current.
    Sqlx {
        #[arg(long)]
        check: bool,
    },
    /// Benchmarks, run against their own local cluster (`.zoark/bench/pg`).
    Bench {
        #[command(subcommand)]
        what: BenchKind,
    },
    /// Fuzz a fresh API against its own OpenAPI spec with schemathesis (installed from PyPI).
    Schemathesis {
        /// Extra arguments for `st run` (e.g. `--max-examples 5`, `--include-tag Auth`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Supply-chain checks of deny.toml (cargo-deny): bans, licenses, sources, and advisories
    /// against a local copy of the RustSec database when one is given.
    Deny {
        /// A clone of github.com/rustsec/advisory-db (default: `ZOARK_ADVISORY_DB`).
        #[arg(long)]
        advisory_db: Option<std::path::PathBuf>,
    },
    /// Manage the project-local Postgres cluster under .zoark/.
    Pg {
        #[command(subcommand)]
        action: PgAction,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// Bulk enqueue, drain, pickup latency, idle load and RSS at equal slots per process: Zoark,
    /// graphile-worker, apalis-postgres, raw SQL.
    Queue {
        /// Extra arguments for `zoark-bench queue` (e.g. `--quick`, `--jobs 20000`; see `--help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Email deliveries per second through API → jobs → worker → SMTP on loopback.
    Email {
        /// Extra arguments for `zoark-bench email` (e.g. `--recipients 1000`; see `--help`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Document search: query latency (vector and hybrid, concurrency 1 and 8), recall@10
    /// against exact search, the local model's indexing rate, the HNSW build time.
    Search {
        /// Extra arguments for `zoark-bench search` (e.g. `--quick`, `--chunks 1000000`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Agent runs (three LLM steps each against a mock LLM answering in 200 ms): wall time
    /// beside the ideal, step overhead, event stream latency.
    Agents {
        /// Extra arguments for `zoark-bench agents` (e.g. `--quick`, `--runs 500`, `--slots 20`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The dashboard's pages with 1,000,000 jobs in the table: p50/p95 of each page's HTML on
    /// loopback, and with `--chromium` the first contentful paint in headless Chromium.
    Dashboard {
        /// Extra arguments for `zoark-bench dashboard` (e.g. `--quick`, `--chromium`,
        /// `--jobs 200000`, `--requests 100`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PgAction {
    /// Provision and start the cluster and print its DATABASE_URL.
    Start,
    /// Stop the cluster.
    Stop,
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("xtask: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root()?;
    match cli.command {
        Command::Dev => dev::run(&root),
        Command::Models => models::provision(&root).map(|_| ()),
        Command::Test { args } => test(&root, &args),
        Command::Openapi { check } => openapi(&root, check),
        Command::Sqlx { check } => sqlx::run(&root, check),
        Command::Bench {
            what: BenchKind::Queue { args },
        } => bench::queue(&root, &args),
        Command::Bench {
            what: BenchKind::Email { args },
        } => bench::email(&root, &args),
        Command::Bench {
            what: BenchKind::Search { args },
        } => bench::search(&root, &args),
        Command::Bench {
            what: BenchKind::Agents { args },
        } => bench::agents(&root, &args),
        Command::Bench {
            what: BenchKind::Dashboard { args },
        } => bench::dashboard(&root, &args),
        Command::Schemathesis { args } => schemathesis::run(&root, &args),
        Command::Deny { advisory_db } => deny::run(&root, advisory_db),
        Command::Pg {
            action: PgAction::Start,
        } => {
            let pg = postgres::provision(&root)?;
            println!("{}", pg.url("zoark_dev"));
            Ok(())
        }
        Command::Pg {
            action: PgAction::Stop,
        } => postgres::stop_local(&root),
    }
}

fn workspace_root() -> Result<PathBuf> {
    // `cargo run` sets the variable at run time too: prefer it, because worktrees sharing one
    // target directory may run an xtask binary compiled in another worktree.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest
        .parent()
        .map(PathBuf::from)
        .context("xtask has no parent directory")
}

fn test(root: &std::path::Path, args: &[String]) -> Result<()> {
    // Process tests run the real binaries: build them first so they are never stale.
    cargo::build_bins(root)?;
    let model = models::ensure(root)?;
    let browser = browser::ensure(root)?;
    let pg = postgres::provision(root)?;
    pg.drop_test_databases()?;
    let url = pg.url("postgres");
    let nextest = process::succeeds("cargo", &["nextest", "--version"]);
    let mut cmd = std::process::Command::new("cargo");
    if nextest {
        cmd.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        println!("xtask: cargo-nextest not found, using cargo test");
        cmd.args(["test", "--workspace", "--no-fail-fast"]);
    }
    cmd.args(args)
        .current_dir(root)
        .env("DATABASE_URL", &url)
        .env("ZOARK_TEST_DATABASE_URL", &url)
        .env("ZOARK_PG_DUMP", pg.client_bin("pg_dump")?)
        .env("ZOARK_EMBED_MODEL_DIR", &model)
        .env("ZOARK_CHROMIUM", &browser.chromium)
        .env("ZOARK_CHROMEDRIVER", &browser.chromedriver)
        .env("ZOARK_AXE_JS", &browser.axe);
    let status = cmd.status().context("running the test suite")?;
    pg.stop_if_started()?;
    if !status.success() {
        bail!("the test suite failed");
    }
    Ok(())
}

fn openapi(root: &std::path::Path, check: bool) -> Result<()> {
    cargo::build_bins(root)?;
    generated_doc(root, "openapi", "docs/openapi.json", check)?;
    generated_doc(root, "permissions", "docs/permissions.md", check)
}

/// Writes (or, with `check`, compares) a document `zoark-api <command>` prints.
fn generated_doc(root: &std::path::Path, command: &str, file: &str, check: bool) -> Result<()> {
    let output = std::process::Command::new(cargo::debug_bin(root, "zoark-api"))
        .arg(command)
        .current_dir(root)
        .output()
        .with_context(|| format!("running zoark-api {command}"))?;
    if !output.status.success() {
        bail!(
            "zoark-api {command} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let path = root.join(file);
    let generated = String::from_utf8(output.stdout).context("the output is not UTF-8")?;
    if check {
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != generated {
            bail!("{file} is out of date: run `cargo xtask openapi` and commit the result");
        }
        println!("{file} is current");
    } else {
        std::fs::write(&path, generated).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
