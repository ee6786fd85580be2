//! Python tools from PyPI, each pinned in a virtualenv of its own under `.zoark/tools` (ignored):
//! schemathesis for `cargo xtask schemathesis`, sentence-transformers for `cargo xtask bench
//! search --peers`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{postgres, process};

/// The virtualenv `.zoark/tools/<name>` with `requirement` (`package==version`) installed, made or
/// upgraded to the pin when needed.
pub fn tool(root: &Path, name: &str, requirement: &str) -> Result<PathBuf> {
    let venv = root.join(".zoark/tools").join(name);
    let marker = venv.join("installed");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(requirement)
        && venv.join("bin/python").exists()
    {
        return Ok(venv);
    }
    println!("xtask: installing {requirement} into {}", venv.display());
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| process::succeeds(p, &["-m", "venv", "--help"]))
        .with_context(|| {
            format!("Python 3 (3.10 or newer, with venv) is needed to install {requirement}")
        })?;
    let create = || {
        process::run(
            Command::new(python)
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        )
    };
    if create().is_err() {
        // Debian's python3 ships venv without ensurepip; python3-venv completes it.
        if !postgres::apt_available() {
            create().context("creating the virtualenv (is python3-venv installed?)")?;
        }
        postgres::apt_install(&["python3-venv"])?;
        create().context("creating the virtualenv")?;
    }
    let status = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            requirement,
        ])
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip install {requirement} failed");
    }
    std::fs::write(&marker, requirement)?;
    Ok(venv)
}
