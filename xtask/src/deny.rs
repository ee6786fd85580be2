//! `cargo xtask deny`: the supply-chain checks of `deny.toml` with cargo-deny (pinned, installed
//! from crates.io into `.zoark/tools/cargo-deny`): bans (no OpenSSL or native-tls), licenses and
//! sources always; advisories when a copy of the RustSec advisory database is given
//! (`--advisory-db` or `ZOARK_ADVISORY_DB`: a clone of github.com/rustsec/advisory-db), since
//! these machines cannot fetch it. Without one it says plainly that advisories were not checked.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::process;

/// The cargo-deny release the checks are written for.
const VERSION: &str = "0.20.2";
/// Where this cargo-deny release looks for the default database under its `db-path` (a name
/// derived from the database's URL, https://github.com/rustsec/advisory-db).
const DB_DIR_NAME: &str = "advisory-db-3157b0e258782691";

/// Runs the checks; fails on any finding `deny.toml` does not explain.
///
/// # Errors
/// A failed install or a failed check.
pub fn run(root: &Path, advisory_db: Option<PathBuf>) -> Result<()> {
    let deny = install(root)?;
    let status = Command::new(&deny)
        .args(["--locked", "check", "bans", "licenses", "sources"])
        .current_dir(root)
        .status()
        .context("running cargo-deny")?;
    if !status.success() {
        bail!("cargo deny check bans licenses sources failed");
    }
    let advisory_db =
        advisory_db.or_else(|| std::env::var_os("ZOARK_ADVISORY_DB").map(PathBuf::from));
    let Some(db) = advisory_db else {
        println!(
            "xtask: advisories NOT checked: no copy of the RustSec advisory database \
             (pass --advisory-db <clone of github.com/rustsec/advisory-db> or set \
             ZOARK_ADVISORY_DB); the last check's findings are in deny.toml"
        );
        return Ok(());
    };
    if !db.join("crates").is_dir() {
        bail!(
            "{} is not a copy of the advisory database (no crates/ directory)",
            db.display()
        );
    }
    // cargo-deny reads `<db-path>/<name of the URL>`; lay the copy out that way, with a config
    // that adds the db-path to deny.toml, and never fetch.
    let work = root.join(".zoark/tools/advisories");
    std::fs::create_dir_all(&work)?;
    let link = work.join(DB_DIR_NAME);
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(std::fs::canonicalize(&db)?, &link)
        .context("linking the advisory database")?;
    let config = std::fs::read_to_string(root.join("deny.toml")).context("reading deny.toml")?;
    let config = config.replacen(
        "\n[advisories]\n",
        &format!("\n[advisories]\ndb-path = \"{}\"\n", work.display()),
        1,
    );
    let config_path = work.join("deny.toml");
    std::fs::write(&config_path, config)?;
    let status = Command::new(&deny)
        .args(["--locked", "--offline", "--config"])
        .arg(&config_path)
        .args(["check", "advisories"])
        .current_dir(root)
        .status()
        .context("running cargo-deny")?;
    if !status.success() {
        bail!("cargo deny check advisories failed");
    }
    Ok(())
}

/// `.zoark/tools/cargo-deny/bin/cargo-deny` at [`VERSION`], installed when missing.
fn install(root: &Path) -> Result<PathBuf> {
    let prefix = root.join(".zoark/tools/cargo-deny");
    let bin = prefix.join("bin/cargo-deny");
    let installed = process::run(Command::new(&bin).arg("--version")).unwrap_or_default();
    if installed.trim() == format!("cargo-deny {VERSION}") {
        return Ok(bin);
    }
    println!("xtask: installing cargo-deny {VERSION} from crates.io (a few minutes, once)");
    let status = Command::new("cargo")
        .args([
            "install",
            "cargo-deny",
            "--locked",
            "--version",
            VERSION,
            "--root",
        ])
        .arg(&prefix)
        // Its own target directory, removed afterwards: the workspace's stays untouched.
        .env("CARGO_TARGET_DIR", prefix.join("build"))
        .status()
        .context("running cargo install cargo-deny")?;
    let _ = std::fs::remove_dir_all(prefix.join("build"));
    if !status.success() {
        bail!("cargo install cargo-deny failed");
    }
    Ok(bin)
}
