//! Rate limits (governor, GCRA): per signed-in user and per API key, per client address for
//! requests without valid credentials, and a stricter per-address limit on the authentication
//! routes. Every `/api/v1` response carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset`; a refused request is 429 problem+json with `Retry-After`.
//!
//! Limits live in each API replica's memory: with N replicas behind a load balancer, a caller
//! gets up to N times the configured rate. Sign-in throttling per account is in the database
//! and holds across replicas.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use governor::{
    Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
    middleware::StateInformationMiddleware,
    state::keyed::DefaultKeyedStateStore,
};
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, http::HeaderValue};
use poem_openapi::OperationId;
use sha2::{Digest as _, Sha256};
use zoark_core::settings::RateLimitSettings;

use crate::{
    auth,
    error::{ApiError, problem_response},
    middleware::RequestId,
    state::AppState,
    tokens,
};

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The routes that take credentials rather than present them: limited per address, strictly.
const AUTH_ROUTES: [&str; 6] = [
    "/api/v1/auth/login",
    "/api/v1/auth/register",
    "/api/v1/auth/refresh",
    "/api/v1/auth/password-reset",
    "/api/v1/auth/password-reset/confirm",
    "/api/v1/auth/accept-invitation",
];

struct Limiter {
    limiter: Keyed,
    per_minute: u32,
}

impl Limiter {
    fn new(per_minute: u32) -> Self {
        let rate = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(rate))
                .with_middleware::<StateInformationMiddleware>(),
            per_minute,
        }
    }

    /// `Ok(remaining)` or `Err(seconds to wait)`.
    fn check(&self, key: &str) -> Result<u32, u64> {
        let key = key.to_owned();
        match self.limiter.check_key(&key) {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                Err(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
            }
        }
    }

    /// Seconds until the whole burst is available again, at most.
    fn reset_secs(&self, remaining: u32) -> u64 {
        let per_request = 60.0 / f64::from(self.per_minute.max(1));
        (f64::from(self.per_minute.saturating_sub(remaining)) * per_request).ceil() as u64
    }
}

/// The limiters of one API replica.
pub struct RateLimits {
    caller: Limiter,
    address: Limiter,
    auth: Limiter,
    /// Digests of API keys that authenticated lately (a key's own budget is only for a key
    /// that exists: a made-up `zk_…` string counts against its address), and when.
    known_keys: Mutex<HashMap<String, Instant>>,
}

/// How long an API key that authenticated keeps its own budget without authenticating again.
const KNOWN_KEY_TTL: Duration = Duration::from_secs(60);
/// At most this many keys are remembered; past it, new keys count against their address
/// until the next prune.
const KNOWN_KEYS_MAX: usize = 100_000;

impl RateLimits {
    pub fn new(settings: RateLimitSettings) -> Arc<Self> {
        Arc::new(Self {
            caller: Limiter::new(settings.per_caller),
            address: Limiter::new(settings.per_address),
            auth: Limiter::new(settings.auth_per_address),
            known_keys: Mutex::new(HashMap::new()),
        })
    }

    fn key_is_known(&self, key: &str) -> bool {
        self.known_keys
            .lock()
            .map(|known| {
                known
                    .get(key)
                    .is_some_and(|at| at.elapsed() < KNOWN_KEY_TTL)
            })
            .unwrap_or(false)
    }

    fn remember_key(&self, key: String) {
        if let Ok(mut known) = self.known_keys.lock()
            && (known.len() < KNOWN_KEYS_MAX || known.contains_key(&key))
        {
            known.insert(key, Instant::now());
        }
    }

    /// Counts a sign-in attempt made outside `/api/v1` (the dashboard's form) against the
    /// address's budget of the authentication routes: `Err(seconds to wait)` when spent.
    pub fn check_sign_in(&self, client: &zoark_core::db::audit::Client) -> Result<(), u64> {
        self.auth
            .check(&address_key(client))
            .map(|_| ())
            .map_err(|wait| wait.max(1))
    }

    /// Forgets keys whose state is back to fresh, so memory follows the active callers.
    pub fn prune(&self) {
        for l in [&self.caller, &self.address, &self.auth] {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
        if let Ok(mut known) = self.known_keys.lock() {
            known.retain(|_, at| at.elapsed() < KNOWN_KEY_TTL);
        }
    }
}

/// Prunes `limits` every minute until the process ends.
pub fn spawn_pruning(limits: &Arc<RateLimits>) {
    let weak = Arc::downgrade(limits);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(limits) => limits.prune(),
                None => return,
            }
        }
    });
}

/// The middleware; see the module documentation.
pub struct RateLimit;

impl<E: Endpoint> Middleware<E> for RateLimit {
    type Output = RateLimitEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RateLimitEndpoint { inner: ep }
    }
}

pub struct RateLimitEndpoint<E> {
    inner: E,
}

/// The key of a client's address.
fn address_key(client: &zoark_core::db::audit::Client) -> String {
    client
        .ip
        .map_or_else(|| "ip:unknown".into(), |ip| format!("ip:{ip}"))
}

/// A caller's bucket key.
enum Caller {
    /// A user whose access token's signature holds.
    User(String),
    /// An API key, not checked yet (only the database knows it).
    Key(String),
}

/// Who the request says it is: a user with a validly signed token, or an API key.
fn caller_key(req: &Request, state: &AppState) -> Option<Caller> {
    let token = auth::bearer(req)?;
    if token.starts_with("zk_") {
        // The key itself is never kept in memory: a digest stands for it.
        let digest = Sha256::digest(token.as_bytes());
        return Some(Caller::Key(format!("key:{}", hex::encode(&digest[..16]))));
    }
    tokens::verify(&state.settings, token)
        .map(|claims| Caller::User(format!("user:{}", claims.sub)))
}

fn headers(response: &mut Response, limit: u32, remaining: u32, reset: u64) {
    for (name, value) in [
        ("ratelimit-limit", u64::from(limit)),
        ("ratelimit-remaining", u64::from(remaining)),
        ("ratelimit-reset", reset),
    ] {
        response
            .headers_mut()
            .insert(name, HeaderValue::from(value));
    }
}

impl<E: Endpoint> Endpoint for RateLimitEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path();
        let (Some(state), true) = (req.data::<AppState>(), path.starts_with("/api/v1/")) else {
            return self.inner.call(req).await.map(IntoResponse::into_response);
        };
        let limits = state.rate_limits.clone();
        let address = address_key(&auth::client(&req, &state.settings));
        // Credentials are taken (not presented) on the authentication routes: they count per
        // address, strictly. Elsewhere the verified caller counts (a signed token, or an API key
        // that authenticated lately), else the address: an unknown API key counts against its
        // address until it authenticates, so made-up keys get no budgets of their own.
        let mut api_key = None;
        let (limiter, key, by_address) = if AUTH_ROUTES.contains(&path) {
            (&limits.auth, address.clone(), true)
        } else {
            match caller_key(&req, state) {
                Some(Caller::Key(key)) => {
                    api_key = Some(key.clone());
                    if limits.key_is_known(&key) {
                        (&limits.caller, key, false)
                    } else {
                        (&limits.address, address.clone(), true)
                    }
                }
                Some(Caller::User(key)) => (&limits.caller, key, false),
                None => (&limits.address, address.clone(), true),
            }
        };
        let remaining = match limiter.check(&key) {
            Ok(remaining) => remaining,
            Err(retry_after) => {
                let request_id = req.data::<RequestId>().map(|r| r.0.clone());
                let retry_after = retry_after.max(1);
                let mut response = problem_response(
                    &ApiError::RateLimited { retry_after },
                    request_id.as_deref(),
                );
                headers(&mut response, limiter.per_minute, 0, retry_after);
                return Ok(response);
            }
        };
        let request_id = req.data::<RequestId>().map(|r| r.0.clone());
        let mut response = match self.inner.call(req).await {
            Ok(response) => response.into_response(),
            // Rendered here so that refusals (401, 422, …) carry the headers too.
            Err(err) => {
                let operation = err.data::<OperationId>().map(|o| OperationId(o.0));
                let mut response =
                    problem_response(&ApiError::from_poem(err), request_id.as_deref());
                if let Some(operation) = operation {
                    response.set_data(operation);
                }
                response
            }
        };
        if response.status() == poem::http::StatusCode::UNAUTHORIZED {
            // A failed authentication also counts against the address.
            if !by_address {
                let _ = limits.address.check(&address);
            }
        } else if let Some(key) = api_key {
            // Every accepted request keeps the key known, so a busy key never returns to its
            // address's budget.
            limits.remember_key(key);
        }
        headers(
            &mut response,
            limiter.per_minute,
            remaining,
            limiter.reset_secs(remaining),
        );
        Ok(response)
    }
}
