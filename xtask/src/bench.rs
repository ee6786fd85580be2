//! `cargo xtask bench queue`: provisions the benchmark cluster (`.zoark/bench/pg`: stock
//! durability, `pg_stat_statements`), installs the peers into `.zoark/bench/peers` (Node.js 22
//! and graphile-worker 0.18 from npm; apalis-postgres 1.0 is a dependency of `zoark-bench`, run
//! as its `apalis-peer` binary; pgbench comes with Postgres), builds `zoark-worker` and
//! `zoark-bench` in release mode, and runs `zoark-bench queue`, which prints the tables and writes
//! `<target>/bench/queue.json`.
//!
//! `cargo xtask bench email`: the same cluster, `zoark-api`, `zoark-worker` and `zoark-bench`
//! in release mode, then `zoark-bench email`, which writes `<target>/bench/email.json`.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

use crate::cargo::target_dir;
use crate::postgres::{self, Profile};

const GRAPHILE_WORKER: &str = "graphile-worker@0.18.0";
const NODE: &str = "node@22.23.3";
/// The reference implementation the local model's indexing rate is compared with (`--peers`);
/// the same release computed the model's fixture (`embed/fixtures/reference.py`).
const SENTENCE_TRANSFORMERS: &str = "sentence-transformers==6.2.0";

pub fn queue(root: &Path, args: &[String]) -> Result<()> {
    let (which, args) = build_choice(args);
    let peers = install_peers(root)?;
    let bins = build(root, which)?;
    let pg = postgres::provision_profile(root, Profile::Bench)?;
    let result = run_queue(root, &bins, &pg, &peers, &args);
    pg.stop_if_started()?;
    result
}

struct Peers {
    node: PathBuf,
    graphile_script: PathBuf,
}

fn install_peers(root: &Path) -> Result<Peers> {
    let dir = root.join(".zoark/bench/peers");
    std::fs::create_dir_all(&dir).context("creating .zoark/bench/peers")?;
    let node = dir.join("node_modules/.bin/node");
    let installed = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
    let wanted = [GRAPHILE_WORKER, NODE].iter().all(|spec| {
        let (name, version) = spec.rsplit_once('@').unwrap_or((spec, ""));
        installed.contains(&format!("\"{name}\": \"{version}\""))
    });
    if !wanted || !node.exists() {
        crate::process::npm_install(&dir, &[NODE, GRAPHILE_WORKER])?;
    }
    let graphile_script = dir.join("worker.mjs");
    std::fs::copy(root.join("bench/graphile/worker.mjs"), &graphile_script)
        .context("copying bench/graphile/worker.mjs")?;
    Ok(Peers {
        node,
        graphile_script,
    })
}

pub fn email(root: &Path, args: &[String]) -> Result<()> {
    platform(root, "email", args, &[])
}

/// `cargo xtask bench agents`: the same cluster and binaries, then `zoark-bench agents`, which
/// writes `<target>/bench/agents.json`.
pub fn agents(root: &Path, args: &[String]) -> Result<()> {
    platform(root, "agents", args, &[])
}

/// `cargo xtask bench dashboard`: the same cluster and binaries, then `zoark-bench dashboard`
/// (with `--chromium`, Debian's Chromium and chromedriver, installed as the tests install them),
/// which writes `<target>/bench/dashboard.json`.
pub fn dashboard(root: &Path, args: &[String]) -> Result<()> {
    let mut env = Vec::new();
    if args.iter().any(|a| a == "--chromium") {
        let browser = crate::browser::ensure(root)?;
        env.push(("ZOARK_CHROMIUM", browser.chromium));
        env.push(("ZOARK_CHROMEDRIVER", browser.chromedriver));
    }
    platform(root, "dashboard", args, &env)
}

/// A benchmark of the whole platform (`zoark-api` and `zoark-worker` processes): `email`,
/// `agents` or `dashboard`, with `env` set for `zoark-bench`.
fn platform(
    root: &Path,
    which_bench: &str,
    args: &[String],
    env: &[(&str, PathBuf)],
) -> Result<()> {
    let (which, args) = build_choice(args);
    let bins = build(root, which)?;
    let pg = postgres::provision_profile(root, Profile::Bench)?;
    let target = target_dir(root);
    let status = std::process::Command::new(bins.join("zoark-bench"))
        .arg(which_bench)
        .arg("--server")
        .arg(pg.server())
        .arg("--api-bin")
        .arg(bins.join("zoark-api"))
        .arg("--worker-bin")
        .arg(bins.join("zoark-worker"))
        .arg("--out")
        .arg(target.join(format!("bench/{which_bench}.json")))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .current_dir(root)
        .status()
        .context("running zoark-bench");
    pg.stop_if_started()?;
    if !status?.success() {
        bail!("the {which_bench} benchmark failed");
    }
    Ok(())
}

/// `cargo xtask bench search`: the bench cluster, the local model, and `zoark-bench search`,
/// which writes `<target>/bench/search.json` and caches the corpus's vectors under
/// `.zoark/bench/search/`.
pub fn search(root: &Path, args: &[String]) -> Result<()> {
    // `--peers`: sentence-transformers (pinned, from PyPI with torch: a large download) measured
    // on the same texts.
    let (which, args) = build_choice(args);
    let (peers, args) = take_flag(args, "--peers");
    let sentence_transformers = peers
        .then(|| crate::python::tool(root, "sentence-transformers", SENTENCE_TRANSFORMERS))
        .transpose()?;
    let bins = build(root, which)?;
    let model = crate::models::ensure(root)?;
    let pg = postgres::provision_profile(root, Profile::Search)?;
    let target = target_dir(root);
    let status = std::process::Command::new(bins.join("zoark-bench"))
        .arg("search")
        .arg("--server")
        .arg(pg.server())
        .arg("--model-dir")
        .arg(&model)
        .arg("--cache-dir")
        .arg(root.join(".zoark/bench/search"))
        .arg("--out")
        .arg(target.join("bench/search.json"))
        .args(sentence_transformers.iter().flat_map(|venv| {
            [
                OsString::from("--sentence-transformers"),
                venv.join("bin/python").into(),
            ]
        }))
        .args(args)
        .current_dir(root)
        .status()
        .context("running zoark-bench");
    pg.stop_if_started()?;
    if !status?.success() {
        bail!("the search benchmark failed");
    }
    Ok(())
}

/// Which binaries a benchmark runs.
#[derive(Clone, Copy)]
enum Build {
    /// Release builds of zoark-api, zoark-worker and zoark-bench: the figures of record.
    Release,
    /// The debug binaries `cargo xtask test` built (`--dev-build`): a smoke run that proves the
    /// benchmark still works (CI) without a second build of the workspace; its figures mean
    /// nothing.
    Debug,
}

/// Splits xtask's own `--dev-build` from the arguments for zoark-bench.
fn build_choice(args: &[String]) -> (Build, Vec<&String>) {
    let (debug, rest) = take_flag(args.iter().collect(), "--dev-build");
    (if debug { Build::Debug } else { Build::Release }, rest)
}

/// Whether `flag` is among `args`, and the other arguments.
fn take_flag<'a>(args: Vec<&'a String>, flag: &str) -> (bool, Vec<&'a String>) {
    let found = args.iter().any(|a| *a == flag);
    (found, args.into_iter().filter(|a| *a != flag).collect())
}

/// Builds the binaries and returns the directory they are in.
fn build(root: &Path, which: Build) -> Result<PathBuf> {
    if let Build::Debug = which {
        crate::cargo::build_bins(root)?;
        return Ok(crate::cargo::debug_dir(root));
    }
    let status = std::process::Command::new("cargo")
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "zoark-api",
            "-p",
            "zoark-worker",
            "-p",
            "zoark-bench",
        ])
        .env("SQLX_OFFLINE", "true")
        .current_dir(root)
        .status()
        .context("building zoark-api, zoark-worker and zoark-bench")?;
    if !status.success() {
        bail!("building zoark-api, zoark-worker and zoark-bench failed");
    }
    Ok(target_dir(root).join("release"))
}

fn run_queue(
    root: &Path,
    bins: &Path,
    pg: &postgres::Provisioned,
    peers: &Peers,
    args: &[&String],
) -> Result<()> {
    let target = target_dir(root);
    let status = std::process::Command::new(bins.join("zoark-bench"))
        .arg("queue")
        .arg("--server")
        .arg(pg.server())
        .arg("--worker-bin")
        .arg(bins.join("zoark-worker"))
        .arg("--node")
        .arg(&peers.node)
        .arg("--graphile-script")
        .arg(&peers.graphile_script)
        .arg("--apalis-bin")
        .arg(bins.join("apalis-peer"))
        .arg("--pgbench")
        .arg(pg.client_bin("pgbench")?)
        .arg("--out")
        .arg(target.join("bench/queue.json"))
        .args(args)
        .current_dir(root)
        .status()
        .context("running zoark-bench")?;
    if !status.success() {
        bail!("the queue benchmark failed");
    }
    Ok(())
}
