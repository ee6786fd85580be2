//! A worker process under measurement: its output lines, its RSS, and a graceful stop.

use std::{
    collections::VecDeque,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

pub struct Worker {
    name: &'static str,
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Worker {
    pub fn spawn(name: &'static str, mut command: Command) -> anyhow::Result<Self> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let (tx, lines) = mpsc::unbounded_channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(out) = child.stdout.take() {
            forward(out, tx.clone(), Arc::clone(&tail));
        }
        if let Some(err) = child.stderr.take() {
            forward(err, tx, Arc::clone(&tail));
        }
        Ok(Self {
            name,
            child,
            lines,
            tail,
        })
    }

    /// Waits for an output line containing `needle`.
    pub async fn wait_for(&mut self, needle: &str, limit: Duration) -> anyhow::Result<()> {
        let found = tokio::time::timeout(limit, async {
            while let Some(line) = self.lines.recv().await {
                if line.contains(needle) {
                    return true;
                }
            }
            false
        })
        .await;
        match found {
            Ok(true) => Ok(()),
            _ => anyhow::bail!(
                "{} did not print {needle:?} within {limit:?}; its last lines:\n{}",
                self.name,
                self.last_lines()
            ),
        }
    }

    pub fn last_lines(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    /// Resident set size from `/proc/<pid>/status`, in MiB.
    pub fn rss_mib(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("the worker has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")?;
        Ok(kib / 1024.0)
    }

    /// User plus system CPU time the process has used so far, in seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("the worker has exited")?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<f64>().ok()))
            .sum();
        let per_second =
            nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.map_or(100.0, |v| v as f64);
        Ok(ticks / per_second)
    }

    /// SIGTERM, then SIGKILL after 30 s.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let pid = i32::try_from(pid)?;
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(
                    status.success(),
                    "{} exited with {status}; its last lines:\n{}",
                    self.name,
                    self.last_lines()
                );
            }
            Err(_) => {
                self.child.kill().await?;
                anyhow::bail!("{} did not stop within 30 s of SIGTERM", self.name);
            }
        }
        Ok(())
    }
}

fn forward(
    stream: impl AsyncRead + Unpin + Send + 'static,
    tx: mpsc::UnboundedSender<String>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            // Warnings and errors of a worker explain a slow drain: shown as they come.
            if line.contains("WARN") || line.contains("ERROR") {
                eprintln!("  worker: {line}");
            }
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
            }
            let _ = tx.send(line);
        }
    });
}
