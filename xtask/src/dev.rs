//! `cargo xtask dev`: the whole platform on this machine, like foreman.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anstyle::{AnsiColor, Style};
use anyhow::{Context, Result};
use nix::{sys::signal::Signal, unistd::Pid};

use crate::{cargo, postgres, process};

const PROCESSES: [(&str, &[&str], AnsiColor); 3] = [
    ("api", &["serve"], AnsiColor::Cyan),
    ("worker", &[], AnsiColor::Magenta),
    ("scheduler", &[], AnsiColor::Yellow),
];

pub fn run(root: &Path) -> Result<()> {
    let (tx, rx) = mpsc::channel::<Event>();
    {
        let tx = tx.clone();
        ctrlc::set_handler(move || {
            let _ = tx.send(Event::Interrupt);
        })
        .context("installing the Ctrl-C handler")?;
    }

    crate::models::ensure(root)?;
    let pg = postgres::provision(root)?;
    let result = run_platform(root, &pg, &tx, &rx);
    pg.stop_if_started()?;
    result
}

enum Event {
    Interrupt,
    Exited(&'static str),
}

fn run_platform(
    root: &Path,
    pg: &postgres::Provisioned,
    tx: &mpsc::Sender<Event>,
    rx: &mpsc::Receiver<Event>,
) -> Result<()> {
    let database_url = std::env::var("DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| pg.url("zoark_dev"));
    let port = std::env::var("PORT")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "8080".into());

    println!("xtask: building the binaries");
    cargo::build_bins(root)?;
    let bin = |name: &str| cargo::debug_bin(root, name);
    // The nightly backup needs a pg_dump at least as new as the server: the cluster's own.
    let pg_dump = match std::env::var("ZOARK_PG_DUMP") {
        Ok(set) if !set.is_empty() => set,
        _ => pg
            .client_bin("pg_dump")
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "pg_dump".into()),
    };

    let env = |cmd: &mut Command| {
        cmd.env("DATABASE_URL", &database_url)
            .env("PORT", &port)
            .env(
                "ZOARK_HOST",
                std::env::var("ZOARK_HOST").unwrap_or_else(|_| "127.0.0.1".into()),
            )
            .env("ZOARK_ENV", "development")
            .env("ZOARK_PG_DUMP", &pg_dump)
            // The development admin (`zoark_core::db::dev_seed::DEV_ADMIN_EMAIL`) is a platform
            // operator: the dashboard's /dashboard/platform shows the whole installation.
            .env(
                "ZOARK_OPERATORS",
                std::env::var("ZOARK_OPERATORS").unwrap_or_else(|_| "admin@zoark.localhost".into()),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,sqlx=warn".into()),
            )
            .current_dir(root);
    };

    let mut migrate = Command::new(bin("zoark-api"));
    migrate.arg("migrate");
    env(&mut migrate);
    process::run(&mut migrate).context("applying migrations")?;
    println!("xtask: migrations applied");

    let mut seed = Command::new(bin("zoark-api"));
    seed.arg("dev-seed");
    env(&mut seed);
    print!(
        "{}",
        process::run(&mut seed).context("creating the development organization")?
    );

    let mut children: Vec<(&'static str, Child)> = Vec::new();
    for (name, args, color) in PROCESSES {
        let mut cmd = Command::new(bin(&format!("zoark-{name}")));
        cmd.args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        env(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting zoark-{name}"))?;
        let style = Style::new().fg_color(Some(color.into())).bold();
        if let Some(out) = child.stdout.take() {
            prefix(name, style, out);
        }
        if let Some(err) = child.stderr.take() {
            prefix(name, style, err);
        }
        children.push((name, child));
    }
    for (name, child) in &mut children {
        let tx = tx.clone();
        let name: &'static str = name;
        let pid = child.id();
        std::thread::spawn(move || {
            // Polls the pid: std's Child cannot be waited on from two threads.
            while nix::sys::signal::kill(Pid::from_raw(pid as i32), None).is_ok() && !is_zombie(pid)
            {
                std::thread::sleep(Duration::from_millis(300));
            }
            let _ = tx.send(Event::Exited(name));
        });
    }

    if wait_ready(&port, Duration::from_secs(60)) {
        let bold = Style::new().bold();
        println!();
        println!("{bold}Zoark is running{bold:#}");
        println!("  Swagger UI  http://localhost:{port}/docs");
        println!("  OpenAPI     http://localhost:{port}/openapi.json");
        println!("  Health      http://localhost:{port}/health/ready");
        println!("  Metrics     http://localhost:{port}/metrics");
        println!("  Database    {}", redact(&database_url));
        println!("Press Ctrl-C to stop.");
        println!();
    }

    let reason = rx.recv().unwrap_or(Event::Interrupt);
    match reason {
        Event::Interrupt => println!("\nxtask: stopping"),
        Event::Exited(name) => println!("xtask: zoark-{name} exited; stopping the others"),
    }
    stop_all(&mut children);
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"))
}

/// SIGTERM to each process, then SIGKILL after 35 s (their own drain deadline is 30 s).
fn stop_all(children: &mut [(&'static str, Child)]) {
    for (_, child) in children.iter() {
        let _ = nix::sys::signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(35);
    for (name, child) in children.iter_mut() {
        loop {
            match child.try_wait() {
                Ok(Some(status)) => {
                    println!("xtask: zoark-{name} stopped ({status})");
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => {
                    println!("xtask: zoark-{name} did not stop in time; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
    }
}

fn prefix(name: &'static str, style: Style, stream: impl Read + Send + 'static) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{style}{name:>9} |{style:#} {line}");
        }
    });
}

/// Polls `/health/ready` with a plain HTTP/1.1 request.
pub fn wait_ready(port: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(mut stream) = TcpStream::connect(format!("127.0.0.1:{port}")) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let request = format!(
                "GET /health/ready HTTP/1.1\r\nHost: localhost:{port}\r\nConnection: close\r\n\r\n"
            );
            let mut response = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut response).is_ok()
                && response.starts_with("HTTP/1.1 200")
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let user_end = s + 3 + url[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}
