//! Typed configuration read from the environment (12-factor).
//!
//! Every variable is documented in `deploy/.env.example`. Development gets working defaults;
//! with `ZOARK_ENV=production` the process refuses to start on any development default and names
//! the variable that is wrong.

use std::{collections::HashMap, fmt, net::IpAddr, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::outbound::OutboundPolicy;

/// The queues a worker claims from when `ZOARK_WORKER_QUEUES` is not set.
pub const DEFAULT_QUEUES: &str =
    "default=10,email=20,agents=5,indexing=2,maintenance=2,diagnostics=2,webhooks=10";

/// Development-only JWT signing secret; refused in production.
const DEV_JWT_SECRET: &str = "zoark-development-jwt-secret-do-not-use-in-production";
/// Development-only AES-256 key (base64 of 32 bytes); refused in production.
const DEV_ENCRYPTION_KEY: &str = "em9hcmstZGV2LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=";

/// Where the process runs; production turns on the strict checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "development" => Ok(Self::Development),
            "production" => Ok(Self::Production),
            other => Err(format!(
                "expected `development` or `production`, got `{other}`"
            )),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production default).
    Json,
    /// Human-readable, coloured (development default).
    Pretty,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!("expected `json` or `pretty`, got `{other}`")),
        }
    }
}

/// How outgoing system email leaves the process by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTransport {
    /// Written to the log instead of sent (development only).
    Console,
    /// Sent through the default SMTP server (`ZOARK_SMTP_*`).
    Smtp,
}

impl FromStr for EmailTransport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "console" => Ok(Self::Console),
            "smtp" => Ok(Self::Smtp),
            other => Err(format!("expected `console` or `smtp`, got `{other}`")),
        }
    }
}

/// Where document search's embeddings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingProvider {
    /// all-MiniLM-L6-v2 on this machine (`ZOARK_EMBED_MODEL_DIR`): no network, no key.
    Local,
    /// An OpenAI-compatible `/embeddings` API (`ZOARK_EMBEDDING_BASE_URL`, `_API_KEY`,
    /// `_MODEL`, `_DIMENSIONS`).
    OpenAi,
}

impl FromStr for EmbeddingProvider {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "local" => Ok(Self::Local),
            "openai" => Ok(Self::OpenAi),
            other => Err(format!("expected `local` or `openai`, got `{other}`")),
        }
    }
}

/// Transport security of an SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    None,
    StartTls,
    Tls,
}

impl FromStr for SmtpSecurity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            other => Err(format!(
                "expected `none`, `starttls` or `tls`, got `{other}`"
            )),
        }
    }
}

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{var} is not set{hint}")]
    Missing { var: &'static str, hint: String },
    #[error("{var} is invalid: {reason}")]
    Invalid { var: &'static str, reason: String },
    #[error("{var} must not use the development default when ZOARK_ENV=production: {reason}")]
    DevelopmentDefault { var: &'static str, reason: String },
}

/// Every setting of every Zoark process.
#[derive(Debug, Clone)]
pub struct Settings {
    pub environment: Environment,
    pub log_format: LogFormat,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub encryption_key: EncryptionKey,
    pub sentry_dsn: Option<sentry::types::Dsn>,
    pub email: EmailSettings,
    pub llm: ProviderSettings,
    pub embeddings: EmbeddingSettings,
    pub oauth: OAuthSettings,
    pub storage: StorageSettings,
    pub backup: BackupSettings,
    pub worker: WorkerSettings,
    pub job_retention: JobRetention,
    pub webhooks: WebhookSettings,
    pub agents: AgentSettings,
    pub dashboard: DashboardSettings,
    /// Which hosts tenants' SMTP servers, LLM providers and webhooks may reach.
    pub outbound: OutboundPolicy,
}

/// The job status dashboard (`/dashboard`).
#[derive(Debug, Clone)]
pub struct DashboardSettings {
    /// How long a dashboard sign-in lasts (`ZOARK_DASHBOARD_SESSION_TTL_SECS`, 12 hours).
    pub session_ttl: Duration,
    /// The platform operators: the emails of `ZOARK_OPERATORS` (comma-separated, compared
    /// case-insensitively). They also see platform jobs, workers and every organization's queues.
    pub operators: Vec<String>,
    /// Whether the session cookie is `Secure` (when `ZOARK_PUBLIC_URL` is https).
    pub secure_cookie: bool,
}

impl DashboardSettings {
    /// Whether `email` belongs to a platform operator.
    pub fn is_operator(&self, email: &str) -> bool {
        self.operators.iter().any(|o| o.eq_ignore_ascii_case(email))
    }
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub url: SecretString,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub host: IpAddr,
    pub port: u16,
    pub public_url: Url,
    /// TLS is terminated by a proxy (Heroku router, load balancer) that sets `X-Forwarded-*`.
    pub behind_proxy: bool,
    pub shutdown_timeout: Duration,
    pub rate_limits: RateLimitSettings,
    /// The bearer token `/metrics` requires (`ZOARK_METRICS_TOKEN`). Without one, development
    /// serves the metrics to anyone and production does not serve them (404).
    pub metrics_token: Option<SecretString>,
    /// Whether Swagger UI (`/docs`) and the spec (`/openapi.json`) are served (`ZOARK_API_DOCS`,
    /// true).
    pub api_docs: bool,
    /// The browser origins (`https://app.example.com`) whose pages may call the API
    /// (`ZOARK_CORS_ORIGINS`, comma-separated; none by default). Credentials (cookies) are never
    /// shared across origins: such pages send `Authorization: Bearer`.
    pub cors_origins: Vec<String>,
}

/// Requests per minute (each with an equal burst), per API replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Per signed-in user and per API key.
    pub per_caller: u32,
    /// Per client address, for requests without valid credentials.
    pub per_address: u32,
    /// Per client address on the sign-in, registration, refresh and reset routes.
    pub auth_per_address: u32,
}

#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub jwt_secret: SecretString,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// How long a session lives at most from its sign-in, however often it is refreshed
    /// (`ZOARK_SESSION_MAX_AGE_SECS`, 30 days).
    pub session_max_age: Duration,
    /// How often an open event stream re-checks its caller's session or key
    /// (`ZOARK_STREAM_RECHECK_SECS`, 30 s).
    pub stream_recheck: Duration,
}

/// The AES-256-GCM key for secrets at rest.
#[derive(Clone)]
pub struct EncryptionKey {
    /// Which key this is: recorded with every value it seals.
    id: u8,
    key: [u8; 32],
    /// Keys that sealed earlier values: they still open them, never seal.
    older: Vec<(u8, [u8; 32])>,
}

impl EncryptionKey {
    /// A key with id 1 and no older keys.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self::with_id(1, bytes)
    }

    /// A key with its id (`ZOARK_ENCRYPTION_KEY_ID`).
    pub fn with_id(id: u8, bytes: [u8; 32]) -> Self {
        Self {
            id,
            key: bytes,
            older: Vec::new(),
        }
    }

    /// This key, also opening what `older` (with its id) sealed.
    #[must_use]
    pub fn and_older(mut self, id: u8, bytes: [u8; 32]) -> Self {
        self.older.push((id, bytes));
        self
    }

    /// The key that seals.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }

    /// Its id.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The key with `id`: this one or an older one.
    pub fn by_id(&self, id: u8) -> Option<&[u8; 32]> {
        if id == self.id {
            return Some(&self.key);
        }
        self.older.iter().find(|(i, _)| *i == id).map(|(_, k)| k)
    }

    /// Every key, this one first.
    pub fn all(&self) -> impl Iterator<Item = &[u8; 32]> {
        std::iter::once(&self.key).chain(self.older.iter().map(|(_, k)| k))
    }
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey([REDACTED])")
    }
}

#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub transport: EmailTransport,
    pub from_address: String,
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_security: SmtpSecurity,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<SecretString>,
    /// The first retry delay of a failed delivery; each later one doubles it (with jitter),
    /// `ZOARK_EMAIL_RETRY_BASE_MS`, 30 s by default.
    pub retry_base: Duration,
}

/// An OpenAI-compatible HTTP provider.
#[derive(Debug, Clone)]
pub struct ProviderSettings {
    pub base_url: Url,
    pub api_key: Option<SecretString>,
    pub model: String,
}

#[derive(Debug, Clone)]
pub struct EmbeddingSettings {
    /// `ZOARK_EMBEDDING_PROVIDER`: `local` (default) or `openai`.
    pub kind: EmbeddingProvider,
    pub provider: ProviderSettings,
    pub dimensions: u32,
    /// One embeddings request may take this long (`ZOARK_EMBEDDING_TIMEOUT_SECS`, 60 s).
    pub timeout: Duration,
    /// The local model's directory (`ZOARK_EMBED_MODEL_DIR`, default
    /// `.zoark/models/all-MiniLM-L6-v2`, where `cargo xtask models` puts it). Its tokenizer cuts
    /// every document into chunks; its vectors are the default embeddings.
    pub model_dir: std::path::PathBuf,
}

#[derive(Debug, Clone)]
pub struct OAuthClient {
    pub client_id: Option<String>,
    pub client_secret: Option<SecretString>,
    pub authorize_url: Url,
    pub token_url: Url,
    /// Base URL of the send API (Gmail API or Microsoft Graph).
    pub api_base_url: Url,
}

#[derive(Debug, Clone)]
pub struct OAuthSettings {
    pub google: OAuthClient,
    pub microsoft: OAuthClient,
    /// The web app's page the provider's callback sends the browser on to, with `provider`,
    /// `code` and `state`: it completes the connection with the signed-in user's credentials
    /// (`ZOARK_OAUTH_RETURN_URL`, default `<ZOARK_PUBLIC_URL>/email-accounts/connect`).
    pub return_url: Url,
}

#[derive(Debug, Clone)]
pub struct S3Settings {
    pub endpoint: Url,
    pub region: String,
    pub bucket: String,
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
}

#[derive(Debug, Clone)]
pub struct StorageSettings {
    /// Local directory for uploaded documents when S3 is not configured.
    pub local_dir: String,
    pub s3: Option<S3Settings>,
    pub max_upload_bytes: u64,
    /// Uploads one API replica receives at once (`ZOARK_MAX_CONCURRENT_UPLOADS`, 8); each is
    /// spooled to a temporary file, so this bounds the disk and bandwidth they take. A request
    /// finding none free for 5 s gets 503 with `Retry-After`.
    pub max_concurrent_uploads: u32,
}

#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// `file:///path` or `s3://bucket/prefix`.
    pub destination: Url,
    pub encryption_key: Option<EncryptionKey>,
    /// Backups older than this are deleted after each successful backup.
    pub retention: Duration,
    /// When the scheduler enqueues the backup (cron, UTC); `None` when set to `off`.
    pub schedule: Option<String>,
    /// The `pg_dump` program (its major version must be at least the server's).
    pub pg_dump: String,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// The queues this worker claims from, each with its concurrency.
    pub queues: QueueConcurrency,
    /// How long in-flight jobs may finish after SIGTERM before they are handed back.
    pub shutdown_timeout: Duration,
    /// How often a worker proves it is alive (and rescues the jobs of dead ones).
    pub heartbeat_interval: Duration,
    /// A worker silent for this long is dead: its running jobs are rescued.
    pub rescue_after: Duration,
    /// The polling backstop behind LISTEN/NOTIFY wake-ups.
    pub poll_interval: Duration,
    /// The most jobs one claim takes from a queue.
    pub claim_batch: usize,
    /// Outcomes waiting to be written beyond which the worker stops claiming until they are
    /// (`ZOARK_WORKER_MAX_BACKLOG`, 10,000): memory stays bounded while Postgres is slow or away.
    pub max_backlog: usize,
    /// The longest timeout a job may ask for at enqueue (`ZOARK_JOBS_MAX_TIMEOUT_SECS`, 6 h).
    pub max_timeout: Duration,
    /// Where the worker serves `/metrics` for Prometheus; `None` serves nothing.
    pub metrics_port: Option<u16>,
}

/// Outgoing webhook deliveries.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// One delivery attempt may take this long (`ZOARK_WEBHOOKS_TIMEOUT_MS`, 10 s).
    pub timeout: Duration,
    /// The first retry delay; each later one doubles it, with jitter
    /// (`ZOARK_WEBHOOKS_RETRY_BASE_MS`, 60 s).
    pub retry_base: Duration,
    /// Deliver to loopback, private and link-local addresses (`ZOARK_WEBHOOKS_ALLOW_PRIVATE`,
    /// false; development and tests only).
    pub allow_private: bool,
    /// Accept plain `http://` endpoints (`ZOARK_WEBHOOKS_ALLOW_HTTP`, false).
    pub allow_http: bool,
}

/// Agent runs: how long an LLM request may take, how long runs are kept, what tokens cost.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// `ZOARK_LLM_TIMEOUT_SECS`: one chat completion's limit (60 s).
    pub llm_timeout: Duration,
    /// `ZOARK_AGENT_RUNS_RETENTION_DAYS`: finished runs (with their steps) and activity older
    /// than this are pruned (90 days).
    pub retention: Duration,
    /// `ZOARK_LLM_PRICES`: USD per million tokens by model.
    pub prices: LlmPrices,
    /// Whether the platform's provider (`ZOARK_LLM_BASE_URL`, `ZOARK_LLM_API_KEY`,
    /// `ZOARK_LLM_MODEL`) serves organizations without a provider of their own: when either
    /// of the first two is set.
    pub platform_default: bool,
    /// `ZOARK_ASK_MAX_WAIT_SECS`: the longest a `POST /ask` request waits for its answer (60 s;
    /// 0 answers 202 at once). A request waits 30 s unless `Prefer: wait=N` says otherwise.
    pub ask_max_wait: Duration,
}

/// `model=input/output` pairs in USD per million tokens, e.g.
/// `gpt-4o-mini=0.15/0.60,gpt-4o=2.50/10`. A model not listed costs nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmPrices(pub Vec<(String, f64, f64)>);

impl LlmPrices {
    /// What `tokens_in` and `tokens_out` of `model` cost, in USD millionths.
    pub fn cost_micros(&self, model: &str, tokens_in: u32, tokens_out: u32) -> i64 {
        self.0
            .iter()
            .find(|(m, _, _)| m == model)
            .map_or(0, |(_, input, output)| {
                // USD per million tokens × tokens = USD millionths.
                let micros = f64::from(tokens_in) * input + f64::from(tokens_out) * output;
                // Rounded to the millionth, within i64 (at most ~4e9 tokens × a price).
                #[allow(clippy::cast_possible_truncation)]
                let micros = micros.round() as i64;
                micros.max(0)
            })
    }
}

impl FromStr for LlmPrices {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut prices = Vec::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (model, price) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not model=input/output"))?;
            let (input, output) = price
                .split_once('/')
                .ok_or_else(|| format!("the price of `{model}` is not input/output"))?;
            let parse = |p: &str| {
                p.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0 && *v <= 1_000_000.0)
                    .ok_or_else(|| {
                        format!("`{p}` is not a price in USD per million tokens (0 to 1000000)")
                    })
            };
            prices.push((model.trim().to_owned(), parse(input)?, parse(output)?));
        }
        Ok(Self(prices))
    }
}

#[derive(Debug, Clone)]
pub struct JobRetention {
    /// Completed and cancelled jobs are pruned after this.
    pub finished: Duration,
    /// Discarded jobs are kept longer, for inspection and manual retry.
    pub discarded: Duration,
}

/// `queue=concurrency` pairs, e.g. `default=10,email=20`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConcurrency(pub Vec<(String, usize)>);

impl FromStr for QueueConcurrency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut queues: Vec<(String, usize)> = Vec::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, n) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not queue=concurrency"))?;
            let name = name.trim();
            let valid = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
            if !valid {
                return Err(format!(
                    "`{name}` is not a queue name (lowercase, digits, _ and -)"
                ));
            }
            let n: usize = n
                .trim()
                .parse()
                .map_err(|_| format!("the concurrency of `{name}` must be a positive integer"))?;
            if n == 0 || n > 10_000 {
                return Err(format!(
                    "the concurrency of `{name}` must be between 1 and 10000"
                ));
            }
            if queues.iter().any(|(q, _)| q == name) {
                return Err(format!("queue `{name}` is listed twice"));
            }
            queues.push((name.to_owned(), n));
        }
        if queues.is_empty() {
            return Err("at least one queue is needed".into());
        }
        Ok(Self(queues))
    }
}

/// A source of variables: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).filter(|v| !v.is_empty()).cloned()
    }
}

impl Settings {
    /// Reads settings from the process environment.
    ///
    /// # Errors
    /// Returns the first variable that is missing, malformed, or a development default in production.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_source(&ProcessEnv)
    }

    /// Reads settings from any [`Source`].
    ///
    /// # Errors
    /// As [`Settings::from_env`].
    pub fn from_source(src: &dyn Source) -> Result<Self, SettingsError> {
        let r = Reader { src };
        // No default: a process started without saying where it runs must not fall back to
        // development's public secrets (`cargo xtask dev` and the tests say `development`).
        let environment: Environment = r
            .required(
                "ZOARK_ENV",
                " (`production`, or `development` on a workstation; `cargo xtask dev` sets it)",
            )?
            .trim()
            .parse()
            .map_err(|reason| SettingsError::Invalid {
                var: "ZOARK_ENV",
                reason,
            })?;
        let prod = environment == Environment::Production;
        let default_log = if prod {
            LogFormat::Json
        } else {
            LogFormat::Pretty
        };

        let database_url = r.required(
            "DATABASE_URL",
            " (e.g. postgres://user:pass@localhost:5432/zoark; `cargo xtask dev` sets it for you)",
        )?;
        let db_url: Url = database_url.parse().map_err(|e| SettingsError::Invalid {
            var: "DATABASE_URL",
            reason: format!("not a URL: {e}"),
        })?;
        if !matches!(db_url.scheme(), "postgres" | "postgresql") {
            return Err(SettingsError::Invalid {
                var: "DATABASE_URL",
                reason: "the scheme must be postgres:// or postgresql://".into(),
            });
        }
        if prod
            && !database_tls_verified(&db_url)
            && !r.parse_bool_or("ZOARK_DATABASE_ALLOW_UNVERIFIED_TLS", false)?
        {
            return Err(SettingsError::Invalid {
                var: "DATABASE_URL",
                reason: "a database on another host must be reached with sslmode=verify-full \
                         (set ZOARK_DATABASE_ALLOW_UNVERIFIED_TLS=true to accept an unverified \
                         or unencrypted connection, e.g. a provider with self-signed certificates)"
                    .into(),
            });
        }

        let port: u16 = r.parse_or("PORT", 8080)?;
        let public_url: Url = r.parse_or_else("ZOARK_PUBLIC_URL", || {
            Url::parse(&format!("http://localhost:{port}/"))
        })?;
        let behind_proxy: bool = r.parse_bool_or("ZOARK_BEHIND_PROXY", false)?;
        let secure_cookie = public_url.scheme() == "https";

        let jwt_secret = r.get("ZOARK_JWT_SECRET");
        let encryption_key = r.get("ZOARK_ENCRYPTION_KEY");
        let email_transport: EmailTransport =
            r.parse_or("ZOARK_EMAIL_TRANSPORT", EmailTransport::Console)?;

        if prod {
            let jwt = production_secret(
                "ZOARK_JWT_SECRET",
                jwt_secret.as_deref(),
                DEV_JWT_SECRET,
                "use 64 random bytes, e.g. `openssl rand -base64 64`",
            )?;
            if jwt.len() < 32 {
                return Err(SettingsError::Invalid {
                    var: "ZOARK_JWT_SECRET",
                    reason: "must be at least 32 characters".into(),
                });
            }
            production_secret(
                "ZOARK_ENCRYPTION_KEY",
                encryption_key.as_deref(),
                DEV_ENCRYPTION_KEY,
                "32 random bytes, base64: `openssl rand -base64 32`",
            )?;
            if public_url.scheme() != "https" {
                return Err(dev_default(
                    "ZOARK_PUBLIC_URL",
                    "it must be an https:// URL",
                ));
            }
            if matches!(
                public_url.host_str(),
                Some("localhost" | "127.0.0.1" | "[::1]")
            ) {
                return Err(dev_default("ZOARK_PUBLIC_URL", "it points at localhost"));
            }
            if !behind_proxy {
                return Err(dev_default(
                    "ZOARK_BEHIND_PROXY",
                    "the API serves plain HTTP, so TLS must be terminated by a proxy; set it to true once one is in front",
                ));
            }
            if email_transport == EmailTransport::Console {
                return Err(dev_default(
                    "ZOARK_EMAIL_TRANSPORT",
                    "`console` only logs email; use `smtp`",
                ));
            }
        }

        let encryption_key =
            EncryptionKey::ring(&r, encryption_key.as_deref().unwrap_or(DEV_ENCRYPTION_KEY))?;

        let sentry_dsn = match r.get("SENTRY_DSN") {
            None => None,
            Some(dsn) => {
                Some(
                    dsn.parse::<sentry::types::Dsn>()
                        .map_err(|e| SettingsError::Invalid {
                            var: "SENTRY_DSN",
                            reason: e.to_string(),
                        })?,
                )
            }
        };

        let smtp_host = r.get("ZOARK_SMTP_HOST");
        if email_transport == EmailTransport::Smtp && smtp_host.is_none() {
            return Err(SettingsError::Missing {
                var: "ZOARK_SMTP_HOST",
                hint: " (required when ZOARK_EMAIL_TRANSPORT=smtp)".into(),
            });
        }
        let email = EmailSettings {
            transport: email_transport,
            from_address: r
                .get("ZOARK_EMAIL_FROM")
                .unwrap_or_else(|| "Zoark <no-reply@localhost>".into()),
            smtp_host,
            smtp_port: r.parse_or("ZOARK_SMTP_PORT", 587)?,
            smtp_security: r.parse_or("ZOARK_SMTP_SECURITY", SmtpSecurity::StartTls)?,
            smtp_username: r.get("ZOARK_SMTP_USERNAME"),
            smtp_password: r.get("ZOARK_SMTP_PASSWORD").map(SecretString::from),
            retry_base: match r.parse_or("ZOARK_EMAIL_RETRY_BASE_MS", 30_000u64)? {
                0 => {
                    return Err(SettingsError::Invalid {
                        var: "ZOARK_EMAIL_RETRY_BASE_MS",
                        reason: "must be at least 1 millisecond".into(),
                    });
                }
                ms => Duration::from_millis(ms),
            },
        };
        if prod && email.from_address.contains("@localhost") {
            return Err(dev_default("ZOARK_EMAIL_FROM", "it is a localhost address"));
        }

        let s3 = match r.get("ZOARK_S3_BUCKET") {
            None => None,
            Some(bucket) => Some(S3Settings {
                endpoint: r.parse_or_else("ZOARK_S3_ENDPOINT", || {
                    Url::parse("https://s3.amazonaws.com")
                })?,
                region: r
                    .get("ZOARK_S3_REGION")
                    .unwrap_or_else(|| "us-east-1".into()),
                bucket,
                access_key_id: SecretString::from(
                    r.required("ZOARK_S3_ACCESS_KEY_ID", " (required with ZOARK_S3_BUCKET)")?,
                ),
                secret_access_key: SecretString::from(r.required(
                    "ZOARK_S3_SECRET_ACCESS_KEY",
                    " (required with ZOARK_S3_BUCKET)",
                )?),
            }),
        };

        let backup_key = r
            .get("ZOARK_BACKUP_ENCRYPTION_KEY")
            .map(|k| EncryptionKey::parse("ZOARK_BACKUP_ENCRYPTION_KEY", &k))
            .transpose()?;
        let backup_destination: Url = r.parse_or_else("ZOARK_BACKUP_DESTINATION", || {
            Url::parse("file:///tmp/zoark-backups/")
        })?;
        if !matches!(backup_destination.scheme(), "file" | "s3") {
            return Err(SettingsError::Invalid {
                var: "ZOARK_BACKUP_DESTINATION",
                reason: "must be a file:// or s3:// URL".into(),
            });
        }
        let backup_retention = match r.parse_or("ZOARK_BACKUP_RETENTION_DAYS", 30u64)? {
            0 => {
                return Err(SettingsError::Invalid {
                    var: "ZOARK_BACKUP_RETENTION_DAYS",
                    reason: "must be at least 1 day".into(),
                });
            }
            days => Duration::from_secs(days * 86_400),
        };
        if backup_destination.scheme() == "s3" && s3.is_none() {
            return Err(SettingsError::Missing {
                var: "ZOARK_S3_BUCKET",
                hint: " (an s3:// ZOARK_BACKUP_DESTINATION uses the ZOARK_S3_* endpoint, region \
                       and keys)"
                    .into(),
            });
        }
        if prod && backup_key.is_none() {
            return Err(dev_default(
                "ZOARK_BACKUP_ENCRYPTION_KEY",
                "backups would be stored unencrypted",
            ));
        }

        let webhooks = WebhookSettings {
            timeout: match r.parse_or("ZOARK_WEBHOOKS_TIMEOUT_MS", 10_000u64)? {
                ms @ 1..=50_000 => Duration::from_millis(ms),
                _ => {
                    return Err(SettingsError::Invalid {
                        var: "ZOARK_WEBHOOKS_TIMEOUT_MS",
                        reason: "must be 1 to 50000 milliseconds".into(),
                    });
                }
            },
            retry_base: match r.parse_or("ZOARK_WEBHOOKS_RETRY_BASE_MS", 60_000u64)? {
                0 => {
                    return Err(SettingsError::Invalid {
                        var: "ZOARK_WEBHOOKS_RETRY_BASE_MS",
                        reason: "must be at least 1 millisecond".into(),
                    });
                }
                ms => Duration::from_millis(ms),
            },
            allow_private: r.parse_bool_or("ZOARK_WEBHOOKS_ALLOW_PRIVATE", false)?,
            allow_http: r.parse_bool_or("ZOARK_WEBHOOKS_ALLOW_HTTP", false)?,
        };
        if prod && webhooks.allow_private {
            return Err(dev_default(
                "ZOARK_WEBHOOKS_ALLOW_PRIVATE",
                "webhooks to internal addresses are for development only",
            ));
        }
        if prod && webhooks.allow_http {
            return Err(dev_default(
                "ZOARK_WEBHOOKS_ALLOW_HTTP",
                "webhooks over plain http are for development only",
            ));
        }
        let outbound = OutboundPolicy {
            allow_loopback: r.parse_bool_or("ZOARK_OUTBOUND_ALLOW_LOOPBACK", !prod)?,
            allow_private: false,
            require_tls: prod,
            allowed_hosts: r
                .get("ZOARK_OUTBOUND_ALLOW_HOSTS")
                .unwrap_or_default()
                .split(',')
                .map(crate::outbound::normalise)
                .filter(|h| !h.is_empty())
                .collect(),
        };
        if prod && outbound.allow_loopback {
            return Err(dev_default(
                "ZOARK_OUTBOUND_ALLOW_LOOPBACK",
                "tenants' connections to this machine are for development only; name a local \
                 relay in ZOARK_OUTBOUND_ALLOW_HOSTS instead",
            ));
        }

        Ok(Self {
            environment,
            outbound,
            log_format: r.parse_or("ZOARK_LOG_FORMAT", default_log)?,
            database: DatabaseSettings {
                url: SecretString::from(database_url),
                max_connections: r.parse_or("ZOARK_DATABASE_MAX_CONNECTIONS", 10)?,
                acquire_timeout: Duration::from_secs(
                    r.parse_or("ZOARK_DATABASE_ACQUIRE_TIMEOUT_SECS", 5)?,
                ),
            },
            http: HttpSettings {
                host: r.parse_or("ZOARK_HOST", IpAddr::from([0, 0, 0, 0]))?,
                port,
                public_url: public_url.clone(),
                behind_proxy,
                shutdown_timeout: Duration::from_secs(
                    r.parse_or("ZOARK_HTTP_SHUTDOWN_TIMEOUT_SECS", 30)?,
                ),
                rate_limits: RateLimitSettings {
                    per_caller: r.per_minute("ZOARK_RATE_LIMIT_PER_CALLER", 600)?,
                    per_address: r.per_minute("ZOARK_RATE_LIMIT_PER_ADDRESS", 300)?,
                    auth_per_address: r.per_minute("ZOARK_RATE_LIMIT_AUTH_PER_ADDRESS", 30)?,
                },
                metrics_token: r
                    .get("ZOARK_METRICS_TOKEN")
                    .filter(|t| !t.is_empty())
                    .map(SecretString::from),
                api_docs: r.parse_bool_or("ZOARK_API_DOCS", true)?,
                cors_origins: cors_origins(r.get("ZOARK_CORS_ORIGINS").as_deref())?,
            },
            auth: AuthSettings {
                jwt_secret: SecretString::from(jwt_secret.unwrap_or_else(|| DEV_JWT_SECRET.into())),
                access_token_ttl: Duration::from_secs(
                    r.parse_or("ZOARK_ACCESS_TOKEN_TTL_SECS", 15 * 60)?,
                ),
                refresh_token_ttl: Duration::from_secs(
                    r.parse_or("ZOARK_REFRESH_TOKEN_TTL_SECS", 30 * 24 * 3600)?,
                ),
                session_max_age: Duration::from_secs(
                    r.parse_or("ZOARK_SESSION_MAX_AGE_SECS", 30 * 24 * 3600)?,
                ),
                stream_recheck: Duration::from_secs(r.parse_or("ZOARK_STREAM_RECHECK_SECS", 30)?),
            },
            encryption_key,
            sentry_dsn,
            email,
            llm: ProviderSettings {
                base_url: r.parse_or_else("ZOARK_LLM_BASE_URL", || {
                    Url::parse("https://api.openai.com/v1/")
                })?,
                api_key: r.get("ZOARK_LLM_API_KEY").map(SecretString::from),
                model: r
                    .get("ZOARK_LLM_MODEL")
                    .unwrap_or_else(|| "gpt-4o-mini".into()),
            },
            embeddings: EmbeddingSettings {
                kind: r.parse_or("ZOARK_EMBEDDING_PROVIDER", EmbeddingProvider::Local)?,
                timeout: r.secs_or("ZOARK_EMBEDDING_TIMEOUT_SECS", 60)?,
                provider: ProviderSettings {
                    base_url: r.parse_or_else("ZOARK_EMBEDDING_BASE_URL", || {
                        Url::parse("https://api.openai.com/v1/")
                    })?,
                    api_key: r.get("ZOARK_EMBEDDING_API_KEY").map(SecretString::from),
                    model: r
                        .get("ZOARK_EMBEDDING_MODEL")
                        .unwrap_or_else(|| "text-embedding-3-small".into()),
                },
                dimensions: r.parse_or("ZOARK_EMBEDDING_DIMENSIONS", 1536)?,
                model_dir: r
                    .get("ZOARK_EMBED_MODEL_DIR")
                    .unwrap_or_else(|| ".zoark/models/all-MiniLM-L6-v2".into())
                    .into(),
            },
            oauth: OAuthSettings {
                google: r.oauth_client(
                    ["ZOARK_GOOGLE_CLIENT_ID", "ZOARK_GOOGLE_CLIENT_SECRET"],
                    (
                        "ZOARK_GOOGLE_AUTHORIZE_URL",
                        "https://accounts.google.com/o/oauth2/v2/auth",
                    ),
                    (
                        "ZOARK_GOOGLE_TOKEN_URL",
                        "https://oauth2.googleapis.com/token",
                    ),
                    ("ZOARK_GMAIL_API_BASE_URL", "https://gmail.googleapis.com/"),
                )?,
                microsoft: r.oauth_client(
                    ["ZOARK_MICROSOFT_CLIENT_ID", "ZOARK_MICROSOFT_CLIENT_SECRET"],
                    (
                        "ZOARK_MICROSOFT_AUTHORIZE_URL",
                        "https://login.microsoftonline.com/common/oauth2/v2.0/authorize",
                    ),
                    (
                        "ZOARK_MICROSOFT_TOKEN_URL",
                        "https://login.microsoftonline.com/common/oauth2/v2.0/token",
                    ),
                    (
                        "ZOARK_GRAPH_API_BASE_URL",
                        "https://graph.microsoft.com/v1.0/",
                    ),
                )?,
                return_url: r.parse_or_else("ZOARK_OAUTH_RETURN_URL", || {
                    public_url.join("/email-accounts/connect")
                })?,
            },
            storage: StorageSettings {
                local_dir: r
                    .get("ZOARK_STORAGE_DIR")
                    .unwrap_or_else(|| ".zoark/storage".into()),
                s3,
                max_upload_bytes: r.parse_or("ZOARK_MAX_UPLOAD_BYTES", 50 * 1024 * 1024)?,
                max_concurrent_uploads: match r.parse_or("ZOARK_MAX_CONCURRENT_UPLOADS", 8u32)? {
                    0 => {
                        return Err(SettingsError::Invalid {
                            var: "ZOARK_MAX_CONCURRENT_UPLOADS",
                            reason: "must be at least 1".into(),
                        });
                    }
                    n => n,
                },
            },
            backup: BackupSettings {
                destination: backup_destination,
                encryption_key: backup_key,
                retention: backup_retention,
                schedule: match r.get("ZOARK_BACKUP_SCHEDULE") {
                    Some(off) if off == "off" => None,
                    Some(schedule) => Some(schedule),
                    None => Some("0 2 * * *".into()),
                },
                pg_dump: r.get("ZOARK_PG_DUMP").unwrap_or_else(|| "pg_dump".into()),
            },
            worker: WorkerSettings {
                queues: r.parse_or_else("ZOARK_WORKER_QUEUES", || {
                    QueueConcurrency::from_str(DEFAULT_QUEUES)
                })?,
                shutdown_timeout: r.secs_or("ZOARK_WORKER_SHUTDOWN_TIMEOUT_SECS", 25)?,
                heartbeat_interval: r.secs_or("ZOARK_WORKER_HEARTBEAT_SECS", 5)?,
                rescue_after: r.secs_or("ZOARK_WORKER_RESCUE_AFTER_SECS", 20)?,
                poll_interval: r.secs_or("ZOARK_WORKER_POLL_SECS", 5)?,
                claim_batch: r.parse_or("ZOARK_WORKER_CLAIM_BATCH", 500)?,
                max_backlog: r.parse_or("ZOARK_WORKER_MAX_BACKLOG", 10_000)?,
                max_timeout: r.secs_or("ZOARK_JOBS_MAX_TIMEOUT_SECS", 6 * 3600)?,
                metrics_port: match r
                    .get("ZOARK_WORKER_METRICS_PORT")
                    .filter(|v| !v.trim().is_empty())
                {
                    None => None,
                    Some(_) => Some(r.parse_or("ZOARK_WORKER_METRICS_PORT", 0u16)?),
                },
            },
            job_retention: JobRetention {
                finished: Duration::from_secs(
                    3600 * r.parse_or::<u64>("ZOARK_JOBS_RETENTION_HOURS", 24)?,
                ),
                discarded: Duration::from_secs(
                    86_400 * r.parse_or::<u64>("ZOARK_JOBS_DISCARDED_RETENTION_DAYS", 7)?,
                ),
            },
            webhooks,
            agents: AgentSettings {
                llm_timeout: r.secs_or("ZOARK_LLM_TIMEOUT_SECS", 60)?,
                retention: Duration::from_secs(
                    86_400 * r.parse_or::<u64>("ZOARK_AGENT_RUNS_RETENTION_DAYS", 90)?,
                ),
                prices: r.parse_or("ZOARK_LLM_PRICES", LlmPrices::default())?,
                platform_default: r.get("ZOARK_LLM_API_KEY").is_some()
                    || r.get("ZOARK_LLM_BASE_URL").is_some(),
                ask_max_wait: Duration::from_secs(r.parse_or("ZOARK_ASK_MAX_WAIT_SECS", 60)?),
            },
            dashboard: DashboardSettings {
                session_ttl: r.secs_or("ZOARK_DASHBOARD_SESSION_TTL_SECS", 12 * 3600)?,
                operators: r
                    .get("ZOARK_OPERATORS")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_lowercase)
                    .collect(),
                secure_cookie,
            },
        })
    }

    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }

    /// The database URL, for the pool only; never log it.
    pub fn database_url(&self) -> &str {
        self.database.url.expose_secret()
    }
}

impl EncryptionKey {
    pub fn parse(var: &'static str, b64: &str) -> Result<Self, SettingsError> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| SettingsError::Invalid {
                var,
                reason: format!("not base64: {e}"),
            })?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| SettingsError::Invalid {
                var,
                reason: format!("must decode to 32 bytes, got {}", b.len()),
            })?;
        Ok(Self::from_bytes(key))
    }

    /// The keyring of `ZOARK_ENCRYPTION_KEY` (id `ZOARK_ENCRYPTION_KEY_ID`, default 1) and
    /// `ZOARK_ENCRYPTION_OLD_KEYS` (`id:base64,…`: keys that sealed earlier values and still
    /// open them until `zoark-api rotate-keys` has re-sealed everything).
    fn ring(r: &Reader<'_>, key: &str) -> Result<Self, SettingsError> {
        let id: u8 = r.parse_or("ZOARK_ENCRYPTION_KEY_ID", 1u8)?;
        let mut ring = Self::with_id(id, *Self::parse("ZOARK_ENCRYPTION_KEY", key)?.bytes());
        for item in r
            .get("ZOARK_ENCRYPTION_OLD_KEYS")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let invalid = |reason: String| SettingsError::Invalid {
                var: "ZOARK_ENCRYPTION_OLD_KEYS",
                reason,
            };
            let (old_id, b64) = item
                .split_once(':')
                .ok_or_else(|| invalid(format!("`{item}` is not id:base64")))?;
            let old_id: u8 = old_id
                .trim()
                .parse()
                .map_err(|e| invalid(format!("`{old_id}` is not a key id (0-255): {e}")))?;
            if ring.by_id(old_id).is_some() {
                return Err(invalid(format!("key id {old_id} is given twice")));
            }
            let old = Self::parse("ZOARK_ENCRYPTION_OLD_KEYS", b64)?;
            ring = ring.and_older(old_id, *old.bytes());
        }
        Ok(ring)
    }
}

/// A secret production must set, and not to the development value.
/// `https://app.example.com, http://localhost:3000`: each an origin (scheme, host, optional
/// port; no path), as browsers send it in `Origin`.
fn cors_origins(raw: Option<&str>) -> Result<Vec<String>, SettingsError> {
    let invalid = |reason: String| SettingsError::Invalid {
        var: "ZOARK_CORS_ORIGINS",
        reason,
    };
    let mut out = Vec::new();
    for item in raw.unwrap_or_default().split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        let url =
            Url::parse(item).map_err(|e| invalid(format!("`{item}` is not an origin: {e}")))?;
        let origin = url.origin().ascii_serialization();
        if !matches!(url.scheme(), "http" | "https") || origin != item.trim_end_matches('/') {
            return Err(invalid(format!(
                "`{item}` is not an origin like https://app.example.com (no path, no wildcard)"
            )));
        }
        out.push(origin);
    }
    Ok(out)
}

/// Whether the database is this machine (loopback or a Unix socket) or reached with
/// `sslmode=verify-full` (the certificate checked against the host name).
fn database_tls_verified(url: &Url) -> bool {
    let query = |key: &str| {
        url.query_pairs()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    };
    let host = query("host").unwrap_or_else(|| url.host_str().unwrap_or_default().to_owned());
    let local = host.is_empty()
        || host.starts_with('/')
        || host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    local || query("sslmode").as_deref() == Some("verify-full")
}

fn production_secret<'a>(
    var: &'static str,
    value: Option<&'a str>,
    development_value: &str,
    how: &str,
) -> Result<&'a str, SettingsError> {
    match value {
        None => Err(dev_default(var, &format!("it is not set ({how})"))),
        Some(v) if v == development_value => Err(dev_default(var, "it is the development value")),
        Some(v) => Ok(v),
    }
}

fn dev_default(var: &'static str, reason: &str) -> SettingsError {
    SettingsError::DevelopmentDefault {
        var,
        reason: reason.into(),
    }
}

struct Reader<'a> {
    src: &'a dyn Source,
}

type UrlVar = (&'static str, &'static str);

impl Reader<'_> {
    /// One OAuth provider: client credentials and its three URLs (each overridable for tests).
    fn oauth_client(
        &self,
        [id, secret]: [&'static str; 2],
        authorize: UrlVar,
        token: UrlVar,
        api: UrlVar,
    ) -> Result<OAuthClient, SettingsError> {
        let url = |(var, default): UrlVar| self.parse_or_else(var, || Url::parse(default));
        Ok(OAuthClient {
            client_id: self.get(id),
            client_secret: self.get(secret).map(SecretString::from),
            authorize_url: url(authorize)?,
            token_url: url(token)?,
            api_base_url: url(api)?,
        })
    }

    /// A positive number of requests per minute.
    fn per_minute(&self, var: &'static str, default: u32) -> Result<u32, SettingsError> {
        match self.parse_or(var, default)? {
            0 => Err(SettingsError::Invalid {
                var,
                reason: "must be at least 1 request per minute".into(),
            }),
            n => Ok(n),
        }
    }

    /// A positive number of seconds.
    fn secs_or(&self, var: &'static str, default: u64) -> Result<Duration, SettingsError> {
        match self.parse_or(var, default)? {
            0 => Err(SettingsError::Invalid {
                var,
                reason: "must be at least 1 second".into(),
            }),
            secs => Ok(Duration::from_secs(secs)),
        }
    }

    fn get(&self, var: &str) -> Option<String> {
        self.src.get(var)
    }

    fn required(&self, var: &'static str, hint: &str) -> Result<String, SettingsError> {
        self.get(var).ok_or_else(|| SettingsError::Missing {
            var,
            hint: hint.into(),
        })
    }

    fn parse_or<T>(&self, var: &'static str, default: T) -> Result<T, SettingsError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| SettingsError::Invalid {
                    var,
                    reason: e.to_string(),
                }),
        }
    }

    fn parse_or_else<T, E>(
        &self,
        var: &'static str,
        default: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, SettingsError>
    where
        T: FromStr,
        T::Err: fmt::Display,
        E: fmt::Display,
    {
        match self.get(var) {
            None => default().map_err(|e| SettingsError::Invalid {
                var,
                reason: e.to_string(),
            }),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|e: T::Err| SettingsError::Invalid {
                    var,
                    reason: e.to_string(),
                }),
        }
    }

    fn parse_bool_or(&self, var: &'static str, default: bool) -> Result<bool, SettingsError> {
        match self.get(var).as_deref().map(str::trim) {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(SettingsError::Invalid {
                var,
                reason: format!("expected true or false, got `{other}`"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pairs`, in development unless they say otherwise.
    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        let mut env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.entry("ZOARK_ENV".into())
            .or_insert_with(|| "development".into());
        env
    }

    fn production() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ZOARK_ENV", "production"),
            (
                "DATABASE_URL",
                "postgres://u:p@db.internal/zoark?sslmode=verify-full",
            ),
            ("ZOARK_PUBLIC_URL", "https://zoark.example.com"),
            ("ZOARK_BEHIND_PROXY", "true"),
            (
                "ZOARK_JWT_SECRET",
                "a-very-long-production-secret-of-at-least-32-chars",
            ),
            (
                "ZOARK_ENCRYPTION_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            (
                "ZOARK_BACKUP_ENCRYPTION_KEY",
                "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
            ),
            ("ZOARK_EMAIL_TRANSPORT", "smtp"),
            ("ZOARK_SMTP_HOST", "smtp.example.com"),
            ("ZOARK_EMAIL_FROM", "Zoark <no-reply@example.com>"),
        ]
    }

    fn without(mut pairs: Vec<(&'static str, &'static str)>, var: &str) -> HashMap<String, String> {
        pairs.retain(|(k, _)| *k != var);
        env(&pairs)
    }

    #[test]
    fn development_defaults_are_enough_with_a_database_url() {
        let s =
            Settings::from_source(&env(&[("DATABASE_URL", "postgres://localhost/zoark")])).unwrap();
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.http.port, 8080);
        assert_eq!(s.log_format, LogFormat::Pretty);
        assert_eq!(s.http.public_url.as_str(), "http://localhost:8080/");
    }

    #[test]
    fn backup_settings_default_to_a_nightly_dump_and_reject_what_cannot_work() {
        let db = ("DATABASE_URL", "postgres://localhost/zoark");
        let s = Settings::from_source(&env(&[db])).unwrap();
        assert_eq!(s.backup.schedule.as_deref(), Some("0 2 * * *"));
        assert_eq!(s.backup.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(s.backup.pg_dump, "pg_dump");
        let off = Settings::from_source(&env(&[db, ("ZOARK_BACKUP_SCHEDULE", "off")])).unwrap();
        assert_eq!(off.backup.schedule, None);
        let s3 = Settings::from_source(&env(&[db, ("ZOARK_BACKUP_DESTINATION", "s3://b/p")]));
        assert!(matches!(
            s3,
            Err(SettingsError::Missing {
                var: "ZOARK_S3_BUCKET",
                ..
            })
        ));
        let zero = Settings::from_source(&env(&[db, ("ZOARK_BACKUP_RETENTION_DAYS", "0")]));
        assert!(matches!(
            zero,
            Err(SettingsError::Invalid {
                var: "ZOARK_BACKUP_RETENTION_DAYS",
                ..
            })
        ));
    }

    #[test]
    fn a_process_must_say_where_it_runs() {
        let unset: HashMap<String, String> =
            HashMap::from([("DATABASE_URL".into(), "postgres://localhost/zoark".into())]);
        let err = Settings::from_source(&unset).unwrap_err().to_string();
        assert!(err.contains("ZOARK_ENV"), "{err}");
        let err = Settings::from_source(&env(&[
            ("ZOARK_ENV", "staging"),
            ("DATABASE_URL", "postgres://localhost/zoark"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("ZOARK_ENV"), "{err}");
    }

    #[test]
    fn production_verifies_a_remote_database_unless_told_not_to() {
        let with_url = |url: &'static str| {
            let mut pairs = production();
            pairs.retain(|(k, _)| *k != "DATABASE_URL");
            pairs.push(("DATABASE_URL", url));
            pairs
        };
        for refused in [
            "postgres://u:p@db.example.com/zoark",
            "postgres://u:p@db.example.com/zoark?sslmode=require",
            "postgres://u:p@db.example.com/zoark?sslmode=verify-ca",
        ] {
            let err = Settings::from_source(&env(&with_url(refused)))
                .unwrap_err()
                .to_string();
            assert!(err.contains("verify-full"), "{refused}: {err}");
        }
        for accepted in [
            "postgres://u:p@localhost/zoark",
            "postgres://u:p@127.0.0.1:5432/zoark",
            "postgres://u:p@[::1]/zoark",
            "postgres:///zoark?host=/var/run/postgresql",
            "postgres://u:p@db.example.com/zoark?sslmode=verify-full",
        ] {
            assert!(
                Settings::from_source(&env(&with_url(accepted))).is_ok(),
                "{accepted}"
            );
        }
        let mut overridden = with_url("postgres://u:p@db.example.com/zoark?sslmode=require");
        overridden.push(("ZOARK_DATABASE_ALLOW_UNVERIFIED_TLS", "true"));
        assert!(Settings::from_source(&env(&overridden)).is_ok());
    }

    #[test]
    fn outbound_connections_reach_loopback_in_development_only() {
        let dev =
            Settings::from_source(&env(&[("DATABASE_URL", "postgres://localhost/zoark")])).unwrap();
        assert!(dev.outbound.allow_loopback && !dev.outbound.require_tls);
        let prod = Settings::from_source(&env(&production())).unwrap();
        assert!(!prod.outbound.allow_loopback && prod.outbound.require_tls);
        let mut loopback = production();
        loopback.push(("ZOARK_OUTBOUND_ALLOW_LOOPBACK", "true"));
        let err = Settings::from_source(&env(&loopback))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ZOARK_OUTBOUND_ALLOW_LOOPBACK"), "{err}");
        let mut named = production();
        named.push(("ZOARK_OUTBOUND_ALLOW_HOSTS", " Relay.Corp , 10.0.0.9,"));
        let s = Settings::from_source(&env(&named)).unwrap();
        assert_eq!(&*s.outbound.allowed_hosts, ["relay.corp", "10.0.0.9"]);
    }

    #[test]
    fn a_missing_database_url_is_named() {
        let err = Settings::from_source(&env(&[])).unwrap_err();
        assert!(
            matches!(
                err,
                SettingsError::Missing {
                    var: "DATABASE_URL",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_complete_production_configuration_starts() {
        let s = Settings::from_source(&env(&production())).unwrap();
        assert!(s.is_production());
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn production_refuses_each_development_default_and_names_it() {
        for var in [
            "ZOARK_JWT_SECRET",
            "ZOARK_ENCRYPTION_KEY",
            "ZOARK_BEHIND_PROXY",
            "ZOARK_BACKUP_ENCRYPTION_KEY",
            "ZOARK_EMAIL_TRANSPORT",
        ] {
            let err = Settings::from_source(&without(production(), var)).unwrap_err();
            assert!(
                err.to_string().starts_with(var),
                "removing {var} gave: {err}"
            );
        }
        let mut http = production();
        http.retain(|(k, _)| *k != "ZOARK_PUBLIC_URL");
        http.push(("ZOARK_PUBLIC_URL", "http://zoark.example.com"));
        let err = Settings::from_source(&env(&http)).unwrap_err();
        assert!(matches!(
            err,
            SettingsError::DevelopmentDefault {
                var: "ZOARK_PUBLIC_URL",
                ..
            }
        ));

        let mut dev_secret = production();
        dev_secret.retain(|(k, _)| *k != "ZOARK_JWT_SECRET");
        dev_secret.push(("ZOARK_JWT_SECRET", DEV_JWT_SECRET));
        let err = Settings::from_source(&env(&dev_secret)).unwrap_err();
        assert!(matches!(
            err,
            SettingsError::DevelopmentDefault {
                var: "ZOARK_JWT_SECRET",
                ..
            }
        ));
    }

    #[test]
    fn malformed_values_name_the_variable_and_the_reason() {
        let err = Settings::from_source(&env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("PORT", "eighty"),
        ]))
        .unwrap_err();
        assert!(
            matches!(err, SettingsError::Invalid { var: "PORT", .. }),
            "{err}"
        );
        let err = Settings::from_source(&env(&[("DATABASE_URL", "mysql://x/y")])).unwrap_err();
        assert!(
            matches!(
                err,
                SettingsError::Invalid {
                    var: "DATABASE_URL",
                    ..
                }
            ),
            "{err}"
        );
        let err = Settings::from_source(&env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("ZOARK_ENCRYPTION_KEY", "c2hvcnQ="),
        ]))
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "ZOARK_ENCRYPTION_KEY is invalid: must decode to 32 bytes, got 5"
        );
    }

    #[test]
    fn every_variable_read_here_is_documented_in_env_example() {
        let source = include_str!("settings.rs");
        let example = include_str!("../../deploy/.env.example");
        let mut missing = Vec::new();
        for chunk in source.split('"').skip(1).step_by(2) {
            let is_var = chunk == "DATABASE_URL"
                || chunk == "PORT"
                || chunk == "SENTRY_DSN"
                || (chunk.starts_with("ZOARK_")
                    && chunk
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b == b'_' || b.is_ascii_digit()));
            if is_var && !example.lines().any(|l| l.starts_with(&format!("{chunk}="))) {
                missing.push(chunk);
            }
        }
        assert!(
            missing.is_empty(),
            "document in deploy/.env.example: {missing:?}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let s = Settings::from_source(&env(&[(
            "DATABASE_URL",
            "postgres://user:hunter2@localhost/zoark",
        )]))
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("hunter2"));
        assert!(!debug.contains(DEV_JWT_SECRET));
    }
}
