//! The outermost middleware: request id, tracing span, HTTP metrics, and the conversion of every
//! error (and every handler panic) into problem+json. Every response, success or failure, carries `x-request-id`.

use std::time::Instant;

use futures_util::FutureExt;
use poem::{Endpoint, IntoResponse, Middleware, Request, Response, http::HeaderValue};
use poem_openapi::OperationId;
use tracing::Instrument;

use crate::error::{ApiError, FieldError, problem_response};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The request id of the current request, available to handlers as request data.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// See the module documentation. `hsts`: the public URL is `https` in production, so every
/// response tells browsers to keep to HTTPS.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestContext {
    pub hsts: bool,
}

impl<E: Endpoint> Middleware<E> for RequestContext {
    type Output = RequestContextEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        RequestContextEndpoint {
            inner: ep,
            hsts: self.hsts,
        }
    }
}

pub struct RequestContextEndpoint<E> {
    inner: E,
    hsts: bool,
}

/// Headers every response carries unless an inner layer chose its own (the dashboard sends a
/// full Content-Security-Policy): no MIME sniffing, no framing, no referrer, and HSTS when
/// served over HTTPS in production. CORS headers only for `ZOARK_CORS_ORIGINS` ([`cors`]).
fn security_headers(response: &mut Response, hsts: bool) {
    let headers = response.headers_mut();
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("content-security-policy", "frame-ancestors 'none'"),
    ] {
        if !headers.contains_key(name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if hsts {
        headers.insert(
            "strict-transport-security",
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
}

/// Swagger UI's page (`/docs`): poem-openapi inlines its script and styles, so they are allowed
/// inline; nothing is loaded from elsewhere and requests go to this origin only.
pub const SWAGGER_UI_CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; img-src 'self' data:; font-src data:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Cross-origin requests from the configured origins only (`ZOARK_CORS_ORIGINS`): the API's
/// methods and request headers, its response headers exposed, no credentials (cookies) ever.
pub fn cors(origins: Vec<String>) -> poem::middleware::Cors {
    use poem::http::Method;
    poem::middleware::Cors::new()
        .allow_origins(origins)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            "authorization",
            "content-type",
            "idempotency-key",
            "if-match",
            "if-none-match",
            "x-request-id",
        ])
        .expose_headers([
            "x-request-id",
            "etag",
            "location",
            "retry-after",
            "idempotent-replayed",
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
        ])
        .allow_credentials(false)
        .max_age(600)
}

/// Accepts a caller's id when it is short and harmless, so ids can be followed across services.
fn incoming_id(req: &Request) -> Option<String> {
    let id = req.header(REQUEST_ID_HEADER)?;
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| id.to_owned())
}

/// A query parameter (or the path) holding a NUL character, which no Postgres text can store:
/// refused for every operation here, so no filter reaches the database with one.
fn nul_parameter(req: &Request) -> Option<ApiError> {
    let invalid = |field: String| {
        Some(ApiError::InvalidParameter(FieldError {
            field,
            message: "must not contain the NUL character".into(),
        }))
    };
    // `%00` is the only way to spell NUL in a URI.
    if req.uri().path().contains("%00") {
        return invalid("path".into());
    }
    let query = req.uri().query().filter(|q| q.contains("%00"))?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(name, value)| name.contains('\0') || value.contains('\0'))
        .and_then(|(name, _)| invalid(name.replace('\0', "")))
}

impl<E: Endpoint> Endpoint for RequestContextEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let request_id = incoming_id(&req).unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        req.set_data(RequestId(request_id.clone()));
        let method = req.method().to_string();
        let span = tracing::info_span!(
            "http.request",
            http.method = %method,
            http.path = %req.uri().path(),
            http.status = tracing::field::Empty,
            request_id = %request_id,
        );
        let started = Instant::now();
        let refused = nul_parameter(&req);
        // A panicking handler is a bug: answer 500 problem+json like any other, keep serving.
        let result = match refused {
            Some(error) => Err(error.into()),
            None => std::panic::AssertUnwindSafe(self.inner.call(req).instrument(span.clone()))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".into());
                    Err(ApiError::Internal(anyhow::anyhow!("handler panicked: {message}")).into())
                }),
        };
        let (mut response, operation) = match result {
            Ok(output) => {
                let response = output.into_response();
                let operation = response.data::<OperationId>().map(|o| o.0);
                (response, operation)
            }
            Err(err) => {
                let operation = err.data::<OperationId>().map(|o| o.0);
                let api = ApiError::from_poem(err);
                let _guard = span.enter();
                (problem_response(&api, Some(&request_id)), operation)
            }
        };
        let status = response.status();
        span.record("http.status", status.as_u16());
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        security_headers(&mut response, self.hsts);
        let labels = [
            ("method", method),
            ("operation", operation.unwrap_or("unmatched").to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        metrics::counter!("zoark_http_requests_total", &labels).increment(1);
        metrics::histogram!("zoark_http_request_duration_seconds", &labels)
            .record(started.elapsed().as_secs_f64());
        if status.is_server_error() {
            let _guard = span.enter();
            tracing::warn!(
                http.status = status.as_u16(),
                "request answered with a server error"
            );
        }
        Ok(response)
    }
}
