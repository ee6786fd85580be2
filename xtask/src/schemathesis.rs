//! `cargo xtask schemathesis`: the API against its own OpenAPI spec.
//!
//! Installs schemathesis (pinned) from PyPI into a virtualenv under `.zoark/tools`, builds the
//! binaries, recreates the `zoark_schemathesis` database on the local cluster and migrates it,
//! starts the API on a free loopback port, registers an organization through the API, then runs
//! `st run` over every operation (in the passes of [`PASSES`], each with a new admin API key)
//! with the checks and bounds of `xtask/schemathesis.toml` and the generators of
//! `xtask/schemathesis_hooks.py`. Any finding fails the command. The
//! API's log is kept in `<target>/schemathesis/api.log`, the reports in `<target>/schemathesis/`.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::{sys::signal::Signal, unistd::Pid};

use crate::{cargo, cargo::target_dir, dev::wait_ready, postgres, process, python};

/// The schemathesis release the configuration is written for.
const SCHEMATHESIS: &str = "schemathesis==4.32.5";
const DATABASE: &str = "zoark_schemathesis";
/// The passes, in order. Schemathesis feeds ids it saw in responses into later requests, so
/// `DELETE /api-keys/{id}` revokes the run's own key once `GET /api-keys` has listed it, and
/// `DELETE /organization` ends every credential: each runs after everything else, in its own pass
/// (the revocation with the listing that feeds it ids), with a fresh key.
const PASSES: [(&str, &[&str]); 3] = [
    (
        "main",
        &[
            "--exclude-operation-id",
            "api_keys_revoke",
            "--exclude-operation-id",
            "organization_delete",
        ],
    ),
    (
        "revoke-key",
        &[
            "--include-operation-id",
            "api_keys_revoke",
            "--include-operation-id",
            "api_keys_list",
        ],
    ),
    (
        "delete-organization",
        &["--include-operation-id", "organization_delete"],
    ),
];

pub fn run(root: &Path, args: &[String]) -> Result<()> {
    let st = install(root)?;
    // The same build as `cargo xtask test` (whole workspace, so the same feature set): after it,
    // as in CI, nothing is rebuilt.
    cargo::build_bins(root)?;
    let pg = postgres::provision(root)?;
    let result = against_fresh_api(root, &pg, &st, args);
    pg.stop_if_started()?;
    result
}

/// The `st` executable of `.zoark/tools/schemathesis`, installed or upgraded to the pin.
fn install(root: &Path) -> Result<PathBuf> {
    Ok(python::tool(root, "schemathesis", SCHEMATHESIS)?.join("bin/st"))
}

fn against_fresh_api(
    root: &Path,
    pg: &postgres::Provisioned,
    st: &Path,
    args: &[String],
) -> Result<()> {
    pg.recreate_database(DATABASE)?;
    let database_url = pg.url(DATABASE);
    let out = target_dir(root).join("schemathesis");
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let api_bin = cargo::debug_bin(root, "zoark-api");
    let port = free_port()?;
    let env = |cmd: &mut Command| {
        cmd.env("DATABASE_URL", &database_url)
            .env("PORT", port.to_string())
            .env("ZOARK_HOST", "127.0.0.1")
            .env("ZOARK_ENV", "development")
            .env("ZOARK_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
            // Schemathesis is one caller sending thousands of requests a minute.
            .env("ZOARK_RATE_LIMIT_PER_CALLER", "1000000")
            .env("ZOARK_RATE_LIMIT_PER_ADDRESS", "1000000")
            .env("ZOARK_RATE_LIMIT_AUTH_PER_ADDRESS", "1000000")
            // No worker runs here: a question would wait for an answer that never comes.
            .env("ZOARK_ASK_MAX_WAIT_SECS", "0")
            .env("RUST_LOG", "info,sqlx=warn")
            .current_dir(root);
    };
    let mut migrate = Command::new(&api_bin);
    migrate.arg("migrate");
    env(&mut migrate);
    process::run(&mut migrate).context("applying migrations")?;

    let log_path = out.join("api.log");
    let log = std::fs::File::create(&log_path)?;
    let mut serve = Command::new(&api_bin);
    serve
        .arg("serve")
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0);
    env(&mut serve);
    let api = Api(serve.spawn().context("starting zoark-api")?);
    if !wait_ready(&port.to_string(), Duration::from_secs(60)) {
        bail!("zoark-api did not become ready; see {}", log_path.display());
    }
    let account = Account::register(port).context("registering the run's organization")?;
    println!(
        "xtask: zoark-api on 127.0.0.1:{port}, log in {}",
        log_path.display()
    );

    let st_run = |token: &str, selection: &[&str], report: &str| -> Result<bool> {
        println!("xtask: schemathesis pass `{report}`");
        let status = Command::new(st)
            .arg("--config-file")
            .arg(root.join("xtask/schemathesis.toml"))
            .arg("run")
            .arg(format!("http://127.0.0.1:{port}/openapi.json"))
            .args(selection)
            .args(["--report", "junit,ndjson", "--report-dir"])
            .arg(&out)
            .arg("--report-junit-path")
            .arg(out.join(format!("{report}.xml")))
            .arg("--report-ndjson-path")
            .arg(out.join(format!("{report}.ndjson")))
            .args(args)
            .env("ZOARK_SCHEMATHESIS_TOKEN", token)
            // Generators for media types schemathesis does not know (`message/rfc822`).
            .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
            .env("PYTHONPATH", root.join("xtask"))
            .current_dir(root)
            .status()
            .context("running schemathesis")?;
        Ok(status.success())
    };
    // Each pass gets a key made just before it: the previous pass may have revoked the last one.
    let mut passed = true;
    for (report, selection) in PASSES {
        let key = account
            .admin_key()
            .with_context(|| format!("a key for `{report}`"))?;
        passed &= st_run(&key, selection, report)?;
    }
    drop(api);
    if !passed {
        bail!(
            "schemathesis found problems (API log: {})",
            log_path.display()
        );
    }
    println!("xtask: schemathesis found nothing");
    Ok(())
}

/// The API process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        for _ in 0..100 {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// The run's organization admin, registered through the API.
struct Account {
    port: u16,
    email: &'static str,
    password: String,
}

impl Account {
    fn register(port: u16) -> Result<Self> {
        let account = Self {
            port,
            email: "schemathesis@zoark.localhost",
            password: format!("Schemathesis-{}-Run", std::process::id()),
        };
        post(
            port,
            "/api/v1/auth/register",
            None,
            &serde_json::json!({
                "email": account.email,
                "password": account.password,
                "name": "Schemathesis",
                "organization_name": "Schemathesis",
            }),
        )?;
        Ok(account)
    }

    /// Signs in and creates a new admin API key (`zk_…`).
    fn admin_key(&self) -> Result<String> {
        let login = serde_json::json!({ "email": self.email, "password": self.password });
        // The previous pass may have tried wrong passwords on this account: sign-in is then
        // throttled for a few seconds (429).
        let mut attempts = 0;
        let session = loop {
            match post(self.port, "/api/v1/auth/login", None, &login) {
                Err(e)
                    if attempts < 30
                        && e.downcast_ref::<Refused>().is_some_and(|r| r.status == 429) =>
                {
                    attempts += 1;
                    std::thread::sleep(Duration::from_secs(2));
                }
                other => break other?,
            }
        };
        let access = session["access_token"]
            .as_str()
            .context("login returned no access_token")?;
        // The fuzzing may have made the organization require keys to expire: lift that first.
        send(
            self.port,
            "PATCH",
            "/api/v1/organization",
            Some(access),
            &serde_json::json!({ "settings": { "api_key_max_lifetime_days": null } }),
        )?;
        let key = post(
            self.port,
            "/api/v1/api-keys",
            Some(access),
            &serde_json::json!({ "name": "schemathesis", "role": "admin" }),
        )?;
        key["key"]
            .as_str()
            .map(str::to_owned)
            .context("api-keys returned no key")
    }
}

/// A JSON POST over HTTP/1.0 (so the body is never chunked), expecting a 2xx.
fn post(
    port: u16,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> Result<serde_json::Value> {
    send(port, "POST", path, bearer, body)
}

/// `method` `path` with a JSON `body`; the JSON answer of a 2xx, else [`Refused`].
fn send(
    port: u16,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &serde_json::Value,
) -> Result<serde_json::Value> {
    let body = body.to_string();
    let auth = bearer.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, payload) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP response")?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    if !(200..300).contains(&status) {
        return Err(Refused {
            path: path.to_owned(),
            status,
            body: payload.to_owned(),
        }
        .into());
    }
    serde_json::from_str(payload).with_context(|| format!("POST {path} returned {payload}"))
}

/// A non-2xx answer to [`post`].
#[derive(Debug)]
struct Refused {
    path: String,
    status: u16,
    body: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "POST {} answered {}: {}",
            self.path, self.status, self.body
        )
    }
}

impl std::error::Error for Refused {}
