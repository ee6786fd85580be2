//! The workspace's debug binaries, built one way for every command that runs them.
//!
//! `cargo run -p zoark-api` and `cargo build --workspace` resolve features over different sets of
//! packages, so mixing them compiles the dependency graph twice. Every xtask command that runs a
//! debug binary (tests, schemathesis, the generated documents, migrations, `dev`) builds the whole
//! workspace's binaries as `cargo xtask test` does and runs them from the target directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The target directory: `CARGO_TARGET_DIR` when set, else the workspace's `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from)
}

/// `cargo build --workspace --bins`: every debug binary, with the tests' feature set.
pub fn build_bins(root: &Path) -> Result<()> {
    let status = Command::new("cargo")
        .args(["build", "--workspace", "--bins"])
        .current_dir(root)
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the binaries failed");
    }
    Ok(())
}

/// Where [`build_bins`] puts the binaries.
pub fn debug_dir(root: &Path) -> PathBuf {
    target_dir(root).join("debug")
}

/// A debug binary [`build_bins`] made.
pub fn debug_bin(root: &Path, name: &str) -> PathBuf {
    debug_dir(root).join(name)
}
