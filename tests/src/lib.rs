//! zoark-tests: the integration test harness.
//!
//! [`TestApp::spawn`] gives each test its own Postgres database, cloned from a template that is
//! migrated once per migration set (so tests run in parallel and stay cheap), and the API serving
//! on port 0. Logs are printed only when `TEST_LOG` is set. HTTP peers that cannot be reached from
//! here (LLM, embeddings, Google, Microsoft, S3) are wiremock servers whose URLs go into the
//! settings through [`TestAppBuilder::env`].
// Test support: failing loudly is the point here.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod agents;
pub mod browser;
pub mod cookies;
pub mod db;
pub mod fixtures;
pub mod multipart;
pub mod peers;
pub mod process;
pub mod proxy;
pub mod smtp;

use std::{collections::HashMap, sync::Arc, time::Duration};

use anyhow::Context;
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use zoark_core::Settings;
use zoark_worker::engine::{Engine, EngineConfig, EngineHooks, Registry};

pub use wiremock;

/// A running API on its own database.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub pool: PgPool,
    pub database: db::TestDatabase,
    pub settings: Arc<Settings>,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Builds a [`TestApp`] with extra environment variables (e.g. a wiremock peer's URL).
#[derive(Default)]
pub struct TestAppBuilder {
    env: HashMap<String, String>,
}

impl TestAppBuilder {
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.insert(key.to_owned(), value.into());
        self
    }

    /// Points every external HTTP client at the given wiremock peers.
    pub fn peers(mut self, peers: &peers::Peers) -> Self {
        for (key, value) in peers.env() {
            self.env.insert(key.to_owned(), value);
        }
        self
    }

    pub async fn spawn(self) -> TestApp {
        init_test_logging();
        let database = db::TestDatabase::create()
            .await
            .unwrap_or_else(|e| panic!("creating the test database: {e:#}"));
        let mut env = HashMap::from([
            ("DATABASE_URL".to_owned(), database.url.clone()),
            ("ZOARK_ENV".to_owned(), "development".to_owned()),
            ("ZOARK_DATABASE_MAX_CONNECTIONS".to_owned(), "5".to_owned()),
            (
                "ZOARK_DATABASE_ACQUIRE_TIMEOUT_SECS".to_owned(),
                "2".to_owned(),
            ),
            (
                "ZOARK_HTTP_SHUTDOWN_TIMEOUT_SECS".to_owned(),
                "5".to_owned(),
            ),
            // Tests sign in often from one address; the rate-limit test sets its own limits.
            (
                "ZOARK_RATE_LIMIT_AUTH_PER_ADDRESS".to_owned(),
                "100000".to_owned(),
            ),
            (
                "ZOARK_RATE_LIMIT_PER_ADDRESS".to_owned(),
                "100000".to_owned(),
            ),
            (
                "ZOARK_RATE_LIMIT_PER_CALLER".to_owned(),
                "100000".to_owned(),
            ),
        ]);
        // Uploaded files go to a directory of this test's own.
        env.insert(
            "ZOARK_STORAGE_DIR".to_owned(),
            std::env::temp_dir()
                .join(format!("zoark-test-storage-{}", database.name))
                .display()
                .to_string(),
        );
        // The local embedding model `cargo xtask test` provisions.
        if let Ok(dir) = std::env::var("ZOARK_EMBED_MODEL_DIR") {
            env.insert("ZOARK_EMBED_MODEL_DIR".to_owned(), dir);
        }
        env.extend(self.env);
        let settings = Settings::from_source(&env).unwrap_or_else(|e| panic!("test settings: {e}"));
        zoark_core::telemetry::install_crypto_provider();
        let _ = zoark_core::telemetry::prometheus();
        // The test's own pool sees every organization (like a worker); the API gets its own,
        // under row-level security, as in production.
        let pool = zoark_core::db::pool(&settings).unwrap_or_else(|e| panic!("test pool: {e}"));
        let api_pool =
            zoark_core::db::api_pool(&settings).unwrap_or_else(|e| panic!("API pool: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("binding: {e}"));
        let address = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let settings = Arc::new(settings);
        let state = zoark_api::AppState::new(api_pool, settings.clone())
            .unwrap_or_else(|e| panic!("API state: {e}"));
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        let server = tokio::spawn(zoark_api::serve_on(listener, state, async move {
            signal.cancelled().await
        }));
        TestApp {
            address,
            pool,
            database,
            settings,
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
            shutdown,
            server: Some(server),
        }
    }
}

impl TestApp {
    /// The API on a fresh, migrated database.
    pub async fn spawn() -> Self {
        Self::builder().spawn().await
    }

    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub async fn post_json(&self, path: &str, body: &impl Serialize) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Any request, with a bearer token and a JSON body when given.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> reqwest::Response {
        let mut request = self.client.request(method.clone(), self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// [`Self::call`], answering the status and the body as JSON (`Null` when empty, a string
    /// when not JSON).
    pub async fn call_json(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let response = self.call(method, path, token, body).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let value = if text.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
        };
        (status, value)
    }

    /// A POST with an arbitrary body and content type (for malformed input).
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Runs the worker in-process until no job is available or running, then stops it.
    ///
    /// # Errors
    /// When jobs are still available after `timeout`, or the worker fails.
    pub async fn drain_jobs(&self, timeout: Duration) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        let since: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&self.pool)
            .await
            .context("reading the clock")?;
        let worker = tokio::spawn(zoark_worker::run((*self.settings).clone(), token.clone()));
        let deadline = tokio::time::Instant::now() + timeout;
        // Until the worker has registered, it may still be enqueueing its start-up jobs.
        loop {
            let started: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM job_workers WHERE started_at >= $1)",
            )
            .bind(since)
            .fetch_one(&self.pool)
            .await
            .context("waiting for the worker to register")?;
            if started || worker.is_finished() || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let result = loop {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs
                 WHERE state = 'running'
                    OR (state IN ('available', 'scheduled', 'retryable') AND run_at <= now())",
            )
            .fetch_one(&self.pool)
            .await
            .context("counting pending jobs")?;
            if pending == 0 {
                break Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                break Err(anyhow::anyhow!(
                    "{pending} job(s) still pending after {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        token.cancel();
        worker.await.context("joining the worker")??;
        result
    }

    /// Starts a job engine in-process with `registry` on this app's database.
    pub fn start_engine(&self, config: EngineConfig, registry: Registry) -> RunningEngine {
        RunningEngine::start(self.pool.clone(), config, registry)
    }

    /// A pool on this test's database through `proxy`, for an engine the test cuts off.
    pub fn pool_through(&self, proxy: &proxy::TcpProxy) -> PgPool {
        let options = (*self.pool.connect_options())
            .clone()
            .host("127.0.0.1")
            .port(proxy.port);
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(5)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy_with(options)
    }

    /// The address (`host:port`) of this test's Postgres server, for a [`proxy::TcpProxy`].
    pub fn database_address(&self) -> String {
        let options = self.pool.connect_options();
        format!("{}:{}", options.get_host(), options.get_port())
    }

    /// Stops the API gracefully and waits for it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// [`TestApp::call_json`] as a signed-in caller: the status and the JSON body.
pub async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    app.call_json(method, path, Some(token), body.as_ref())
        .await
}

/// A WebSocket on `/api/v1/events` signed in with `token` (a key or an access token).
///
/// # Panics
/// When the upgrade is refused.
pub async fn event_socket(
    app: &TestApp,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let url = app.url("/api/v1/events").replace("http://", "ws://");
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The `field` of each entry of a problem's `errors`, in order.
pub fn field_names(problem: &serde_json::Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A binary of this workspace, built by `cargo xtask test` before the tests run.
///
/// # Panics
/// When it was not built.
pub fn binary(name: &str) -> std::path::PathBuf {
    // Integration tests run from target/<profile>/deps; the workspace's binaries sit one level up.
    let dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent().map(std::path::Path::to_path_buf))
        .unwrap_or_else(|| panic!("no directory for the test executable"));
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Engine settings for tests: fast heartbeats and rescue, a slow poll (so wake-ups must come
/// from NOTIFY and timers), short shutdown.
pub fn engine_config(queues: &[(&str, usize)]) -> EngineConfig {
    EngineConfig {
        queues: queues.iter().map(|(q, n)| ((*q).to_owned(), *n)).collect(),
        claim_batch: 100,
        poll_interval: Duration::from_secs(60),
        heartbeat_interval: Duration::from_millis(500),
        rescue_after: Duration::from_secs(3),
        shutdown_timeout: Duration::from_secs(2),
        max_backlog: 10_000,
        max_timeout: Duration::from_secs(3600),
    }
}

/// An engine running in this test process.
pub struct RunningEngine {
    token: CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    hooks: EngineHooks,
}

impl RunningEngine {
    /// Starts an engine on `pool` (the test's own, or one through a proxy).
    pub fn start(pool: PgPool, config: EngineConfig, registry: Registry) -> Self {
        let token = CancellationToken::new();
        let engine = Engine::new(pool, config, registry);
        let hooks = engine.hooks();
        Self {
            handle: tokio::spawn(engine.run(token.clone())),
            token,
            hooks,
        }
    }

    pub fn hooks(&self) -> &EngineHooks {
        &self.hooks
    }

    /// SIGTERM's equivalent: stop claiming, let in-flight jobs finish, hand the rest back.
    pub async fn stop(self) {
        self.token.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn init_test_logging() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
    }
}

/// Opens a secret stored in `column` of the row `id` of `organization_id`, as the platform does
/// (the value is bound to that place).
///
/// # Panics
/// When it does not open there.
pub fn open_stored(
    app: &TestApp,
    column: (&'static str, &'static str),
    organization_id: uuid::Uuid,
    id: uuid::Uuid,
    sealed: &[u8],
) -> Vec<u8> {
    let binding = zoark_core::crypto::Binding::new(column, organization_id, id);
    zoark_core::crypto::open_bound(&app.settings.encryption_key, sealed, &binding)
        .unwrap_or_else(|e| panic!("{}.{} of {id}: {e}", column.0, column.1))
}
