//! `cargo xtask sqlx [--check]`: the committed `.sqlx/` query data, refreshed or checked.
//!
//! What `cargo sqlx prepare` does, without installing sqlx-cli (a release build of a few hundred
//! crates, minutes of every CI run): migrate a scratch database, make cargo recompile the
//! workspace crates that use sqlx, run `cargo check` with the query macros online and writing
//! their data to a scratch directory, then compare that directory with `.sqlx/` or replace it.
//! The check build shares the dependencies `cargo clippy` compiled before it.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{Context, Result, bail};

use crate::{cargo, postgres, process};

/// zoark-bench has no query macros of its own, and its apalis-postgres peer's macros would be
/// checked against this database, which has no `apalis` schema: it stays out of the check.
const EXCLUDED: &str = "zoark-bench";

pub fn run(root: &Path, check: bool) -> Result<()> {
    let pg = postgres::provision(root)?;
    pg.recreate_database("zoark_sqlx")?;
    let result = prepare(root, &pg, &pg.url("zoark_sqlx"), check);
    pg.stop_if_started()?;
    result
}

fn prepare(root: &Path, pg: &postgres::Provisioned, url: &str, check: bool) -> Result<()> {
    migrate(root, pg, url)?;
    let target = cargo::target_dir(root);
    let generated = target.join("sqlx-prepare");
    std::fs::create_dir_all(&generated)?;
    for stale in query_files(&generated)?.into_values() {
        std::fs::remove_file(stale)?;
    }
    let tmp = target.join("sqlx-tmp");
    std::fs::create_dir_all(&tmp)?;
    touch_query_crates(root)?;
    let status = Command::new("cargo")
        .args(["check", "--workspace", "--all-targets", "--locked"])
        .args(["--exclude", EXCLUDED])
        .current_dir(root)
        .env("DATABASE_URL", url)
        .env("SQLX_OFFLINE", "false")
        .env("SQLX_OFFLINE_DIR", &generated)
        .env("SQLX_TMP", &tmp)
        .status()
        .context("running cargo check")?;
    if !status.success() {
        bail!("cargo check with the query macros online failed");
    }
    let committed_dir = root.join(".sqlx");
    let fresh = query_files(&generated)?;
    if fresh.is_empty() {
        bail!("cargo check wrote no query data: the workspace crates were not recompiled");
    }
    let committed = query_files(&committed_dir)?;
    if check {
        let mut problems = Vec::new();
        for (name, path) in &fresh {
            match committed.get(name) {
                None => problems.push(format!("missing {name}")),
                Some(old) if read_json(old)? != read_json(path)? => {
                    problems.push(format!("differs {name}"));
                }
                Some(_) => {}
            }
        }
        problems.extend(
            committed
                .keys()
                .filter(|name| !fresh.contains_key(*name))
                .map(|name| format!("unused {name}")),
        );
        if !problems.is_empty() {
            bail!(
                ".sqlx/ is out of date ({}): run `cargo xtask sqlx` and commit the result",
                problems.join(", ")
            );
        }
        println!(".sqlx/ is current ({} queries)", fresh.len());
    } else {
        std::fs::create_dir_all(&committed_dir)?;
        for old in committed.values() {
            std::fs::remove_file(old)?;
        }
        for (name, path) in &fresh {
            std::fs::copy(path, committed_dir.join(name))
                .with_context(|| format!("copying {name} into .sqlx/"))?;
        }
        println!("wrote {} queries into .sqlx/", fresh.len());
    }
    Ok(())
}

/// Brings the database to the current schema. `zoark-api migrate` is the normal route, but it
/// cannot compile while a new `query!` lacks offline data; then Zoark's migrations are applied
/// in order with psql, each in its own transaction, as the migrator would.
fn migrate(root: &Path, pg: &postgres::Provisioned, url: &str) -> Result<()> {
    if cargo::build_bins(root).is_ok() {
        let status = Command::new(cargo::debug_bin(root, "zoark-api"))
            .arg("migrate")
            .current_dir(root)
            .env("ZOARK_ENV", "development")
            .env("DATABASE_URL", url)
            .env("RUST_LOG", "warn")
            .status()
            .context("running zoark-api migrate")?;
        if !status.success() {
            bail!("zoark-api migrate failed");
        }
        return Ok(());
    }
    println!("xtask: zoark-api does not build offline yet; applying migrations/ with psql");
    let psql = pg.client_bin("psql")?;
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("migrations"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| p.extension().is_some_and(|e| e == "sql"));
    files.sort();
    for file in files {
        process::run(
            Command::new(&psql)
                .args([
                    "-X",
                    "-q",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "--single-transaction",
                    "-f",
                ])
                .arg(&file)
                .arg(url),
        )
        .with_context(|| format!("applying {}", file.display()))?;
    }
    Ok(())
}

/// Updates the modification time of every target root of the workspace packages that depend on
/// sqlx, so that `cargo check` recompiles them and their query macros run.
fn touch_query_crates(root: &Path) -> Result<()> {
    let metadata = process::run(
        Command::new("cargo")
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .current_dir(root),
    )?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).context("parsing cargo metadata")?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let now = SystemTime::now();
    let mut touched = 0;
    for package in packages {
        let uses_sqlx = package["dependencies"]
            .as_array()
            .is_some_and(|deps| deps.iter().any(|d| d["name"] == "sqlx"));
        if !uses_sqlx || package["name"] == EXCLUDED {
            continue;
        }
        for target in package["targets"].as_array().into_iter().flatten() {
            if let Some(src) = target["src_path"].as_str() {
                File::options()
                    .write(true)
                    .open(src)
                    .and_then(|f| f.set_modified(now))
                    .with_context(|| format!("touching {src}"))?;
                touched += 1;
            }
        }
    }
    if touched == 0 {
        bail!("no workspace package depends on sqlx");
    }
    Ok(())
}

/// The `query-*.json` files of a directory, by file name.
fn query_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut files = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(files);
    };
    for entry in entries {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            continue;
        };
        if name.starts_with("query-") && name.ends_with(".json") {
            files.insert(name, path);
        }
    }
    Ok(files)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
