//! The connection to an OpenAI-compatible API, and what its failures mean to the caller.
//!
//! Nothing is retried inside the client: a 429 is [`ProviderError::RateLimited`] with the
//! server's `Retry-After` (the caller snoozes, spending no attempt), a 5xx, a timeout or a
//! connection error is [`ProviderError::Unavailable`] (the caller retries with backoff), any other
//! refusal is [`ProviderError::Rejected`] with the provider's message (a wrong key, an unknown
//! model: retrying will not help), and an answer that does not parse is
//! [`ProviderError::Invalid`].

use std::{future::Future, time::Duration};

use async_openai::{
    Client,
    config::OpenAIConfig,
    error::OpenAIError,
    middleware::{HttpRequestFactory, ReqwestService},
};

/// Where the API is: its base URL (ending in `/v1` for most providers), its key, and how long
/// one request may take.
#[derive(Clone)]
pub struct Endpoint {
    pub base_url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<sealed>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("rate limited (429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("refused the request: {0}")]
    Rejected(String),
    #[error("answered something unusable: {0}")]
    Invalid(String),
}

/// An async-openai client for `endpoint` over `http` (the caller's reqwest client: rustls, its
/// resolver and user agent), with 429 and 5xx answers turned into errors the caller acts on.
pub fn client(endpoint: &Endpoint, http: reqwest::Client) -> Client<OpenAIConfig> {
    let mut config = OpenAIConfig::new().with_api_base(endpoint.base_url.trim_end_matches('/'));
    if let Some(key) = &endpoint.api_key {
        config = config.with_api_key(key.clone());
    }
    let service = StatusAware {
        inner: ReqwestService::new(http.clone()),
    };
    Client::build(http, config).with_http_service(service)
}

/// Runs one request with the endpoint's timeout, its failure classified.
///
/// # Errors
/// [`ProviderError`]: what went wrong, and so whether to wait, retry or give up.
pub async fn call<T>(
    timeout: Duration,
    request: impl Future<Output = Result<T, OpenAIError>>,
) -> Result<T, ProviderError> {
    tokio::time::timeout(timeout, request)
        .await
        .map_err(|_| {
            ProviderError::Unavailable(format!("no answer within {} s", timeout.as_secs()))
        })?
        .map_err(classify)
}

/// A 429 or 5xx answer, with what the caller needs of it.
#[derive(Debug, thiserror::Error)]
#[error("{status}: {body}")]
struct HttpStatus {
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
    body: String,
}

/// The most of an error body kept in a message.
const BODY_CHARS: usize = 500;

fn classify(error: OpenAIError) -> ProviderError {
    match error {
        OpenAIError::Boxed(boxed) => match boxed.downcast::<HttpStatus>() {
            Ok(status) if status.status == reqwest::StatusCode::TOO_MANY_REQUESTS => {
                ProviderError::RateLimited {
                    retry_after: status.retry_after,
                    message: status.body,
                }
            }
            Ok(status) => ProviderError::Unavailable(status.to_string()),
            Err(other) => ProviderError::Unavailable(other.to_string()),
        },
        OpenAIError::Reqwest(e) => ProviderError::Unavailable(e.to_string()),
        OpenAIError::ApiError(e) if e.status_code.is_server_error() => {
            ProviderError::Unavailable(e.to_string())
        }
        OpenAIError::ApiError(e) => ProviderError::Rejected(e.to_string()),
        OpenAIError::JSONDeserialize(e, _) => ProviderError::Invalid(e.to_string()),
        other => ProviderError::Rejected(other.to_string()),
    }
}

/// The HTTP service under async-openai: answers 429 and 5xx as [`HttpStatus`] errors (with
/// `Retry-After`), so that nothing is retried inside the client.
#[derive(Clone)]
struct StatusAware {
    inner: ReqwestService,
}

impl tower::Service<HttpRequestFactory> for StatusAware {
    type Response = reqwest::Response;
    type Error = OpenAIError;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<reqwest::Response, OpenAIError>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequestFactory) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await?;
            let status = response.status();
            if status != reqwest::StatusCode::TOO_MANY_REQUESTS && !status.is_server_error() {
                return Ok(response);
            }
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(BODY_CHARS)
                .collect();
            Err(OpenAIError::Boxed(Box::new(HttpStatus {
                status,
                retry_after,
                body,
            })))
        })
    }
}
