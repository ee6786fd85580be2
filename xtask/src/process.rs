//! Small helpers around child processes.

use std::process::{Command, Stdio};

/// `true` when the command runs and exits 0.
pub fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `true` when this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a command, failing with its output when it exits non-zero.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let output = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("could not run {cmd:?}: {e}"))?;
    if !output.status.success() {
        anyhow::bail!(
            "{cmd:?} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `npm install --save-exact` of `packages` (`name@version`) into `dir`'s `node_modules`.
///
/// # Errors
/// When npm is missing or the install fails.
pub fn npm_install(dir: &std::path::Path, packages: &[&str]) -> anyhow::Result<()> {
    println!(
        "xtask: installing {} into {}",
        packages.join(" "),
        dir.display()
    );
    let status = Command::new("npm")
        .args([
            "install",
            "--save-exact",
            "--no-audit",
            "--no-fund",
            "--prefix",
        ])
        .arg(dir)
        .args(packages)
        .status()
        .map_err(|e| anyhow::anyhow!("running npm (Node.js and npm are needed): {e}"))?;
    if !status.success() {
        anyhow::bail!("npm install {} failed", packages.join(" "));
    }
    Ok(())
}
