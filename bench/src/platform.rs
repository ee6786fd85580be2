//! The platform as the end-to-end benchmarks run it: `zoark-api` and `zoark-worker` as their
//! own processes on one database, called over HTTP.

use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;
use tokio::process::Command;

pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A `zoark-api` or `zoark-worker` command on `url`, serving on `port`, running `queues`
/// (`queue=slots,…`), with JSON logs and the API's rate limits out of the way.
pub fn command(bin: &Path, url: &str, port: u16, queues: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ZOARK_ENV", "development")
        .env("DATABASE_URL", url)
        .env("PORT", port.to_string())
        .env("ZOARK_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env("ZOARK_WORKER_QUEUES", queues)
        .env("ZOARK_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,zoark_api=info,zoark_worker=info")
        .env("ZOARK_RATE_LIMIT_AUTH_PER_ADDRESS", "1000")
        .env("ZOARK_RATE_LIMIT_PER_CALLER", "1000000")
        .env("ZOARK_RATE_LIMIT_PER_ADDRESS", "1000000");
    cmd
}

/// One API call: `POST` with a body (or to a `/send` path), else `GET`; the JSON answer, or an
/// error naming the path and status.
pub async fn call(
    http: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let mut request = match body {
        Some(body) => http.post(format!("{base}{path}")).json(&body),
        None if path.ends_with("/send") => http.post(format!("{base}{path}")),
        None => http.get(format!("{base}{path}")),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("calling {path}"))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{path} answered {status}: {body}");
    Ok(body)
}

/// Registers a user with an organization; its access token.
pub async fn register(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let registered = call(
        http,
        base,
        None,
        "/api/v1/auth/register",
        Some(serde_json::json!({"email": "bench@example.com", "password": "quietly orbiting walrus 42",
                    "name": "Bench", "organization_name": "Bench"})),
    )
    .await?;
    Ok(registered["access_token"]
        .as_str()
        .context("no access token")?
        .to_owned())
}
