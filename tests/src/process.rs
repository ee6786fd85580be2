//! The Procfile's binaries as child processes of a test: started with a clean environment,
//! their output collected line by line, stopped with SIGTERM or killed.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::binary;

/// A running binary; killed when dropped.
pub struct Running {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

/// Starts the workspace binary `name` with only `PATH`, JSON logs and `env`, collecting its
/// output lines.
pub fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
    let mut cmd = Command::new(binary(name));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info")
        .env("ZOARK_ENV", "development")
        .env("ZOARK_LOG_FORMAT", "json")
        // The local embedding model `cargo xtask test` provisions (a worker of the `indexing`
        // queue refuses to start without it).
        .env(
            "ZOARK_EMBED_MODEL_DIR",
            std::env::var("ZOARK_EMBED_MODEL_DIR").unwrap_or_default(),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let (tx, rx) = mpsc::channel();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    Running { child, lines: rx }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A failed assertion must not leave the process running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    /// Waits for a line containing `needle`; panics with the output seen otherwise.
    pub fn wait_for_line(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                if line.contains(needle) {
                    return line;
                }
                seen.push(line);
            }
        }
        panic!(
            "`{needle}` not logged within {timeout:?}; output:\n{}",
            seen.join("\n")
        );
    }

    /// Sends SIGTERM and waits for the exit; SIGKILL and a panic after `within`.
    pub fn terminate_and_wait(&mut self, within: Duration) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
