//! The one error type of the API and its RFC 9457 `application/problem+json` rendering.
//!
//! Handlers return `Result<_, ApiError>`; everything else that can fail on the way (routing,
//! parameter parsing, content types, payload parsing) arrives as a `poem::Error` and is rendered
//! by [`problem_response`], so every error body has the same shape and carries the request id.

use poem::{
    Response,
    error::{MethodNotAllowedError, NotFoundError, ResponseError},
    http::{StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object,
    error::{
        AuthorizationError, ContentTypeError, ParseParamError, ParsePathError,
        ParseRequestPayloadError,
    },
    registry::{MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};
use serde::Serialize;

/// Content type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Object, Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Path of the field in the request, e.g. `recipients[2]` or `settings.time_zone`;
    /// for parameters, the parameter name.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Object, Serialize, serde::Deserialize)]
#[oai(rename = "Problem")]
pub struct Problem {
    /// A URI naming the problem type.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub type_: String,
    /// Short, human-readable summary of the problem type.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Explanation specific to this occurrence.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable machine-readable code, e.g. `validation_failed` or `task_not_found`.
    pub code: String,
    /// The `x-request-id` of the request, to quote when reporting a problem.
    #[oai(skip_serializing_if_is_none)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Invalid fields, for validation problems; absent otherwise.
    #[oai(default, skip_serializing_if_is_empty)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// Every expected failure of an endpoint; unexpected ones are `Internal`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all (syntax error, wrong content).
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// Well-formed input that does not satisfy the contract (types, enums, required fields, domain rules).
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// A query, path or header parameter that does not parse.
    #[error("invalid parameter `{}`", .0.field)]
    InvalidParameter(FieldError),
    #[error("authentication is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// A 403 with its own stable code: the role allows the operation, this resource does not.
    #[error("{detail}")]
    Refused { code: &'static str, detail: String },
    #[error("{detail}")]
    NotFound { code: &'static str, detail: String },
    #[error("{detail}")]
    Conflict { code: &'static str, detail: String },
    #[error("this endpoint does not accept that method")]
    MethodNotAllowed,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("too many requests; retry after {retry_after} s")]
    RateLimited { retry_after: u64 },
    #[error("{detail}")]
    Unavailable { code: &'static str, detail: String },
    /// A provider we depend on refused or failed (e.g. an OAuth token exchange).
    #[error("{detail}")]
    Upstream { code: &'static str, detail: String },
    /// A bug or an outage: logged once with its cause, answered with an opaque 500.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A database error nobody expected is a 500; expected ones (constraint violations a handler
/// knows about) are mapped by the handler before `?`.
impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut => Self::busy(),
            other => Self::Internal(other.into()),
        }
    }
}

impl ApiError {
    /// Every pooled database connection stayed busy for `ZOARK_DATABASE_ACQUIRE_TIMEOUT_SECS`:
    /// a 503 with `Retry-After`, not a 500.
    pub fn busy() -> Self {
        Self::Unavailable {
            code: "database_busy",
            detail: "Every database connection is busy; retry in a moment.".into(),
        }
    }

    /// An internal error whose cause is an exhausted connection pool: [`ApiError::busy`] is what
    /// the client should see (a handler that wrapped the sqlx error in context still gets 503).
    pub fn is_pool_exhausted(&self) -> bool {
        matches!(self, Self::Internal(cause) if cause
            .chain()
            .any(|e| matches!(e.downcast_ref(), Some(sqlx::Error::PoolTimedOut))))
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedJson(_) | Self::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::Refused { .. } => StatusCode::FORBIDDEN,
            Self::NotFound { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedJson(_) => "malformed_json",
            Self::Validation(_) => "validation_failed",
            Self::InvalidParameter(_) => "invalid_parameter",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound { code, .. }
            | Self::Refused { code, .. }
            | Self::Conflict { code, .. }
            | Self::Unavailable { code, .. }
            | Self::Upstream { code, .. } => code,
            Self::MethodNotAllowed => "method_not_allowed",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::RateLimited { .. } => "rate_limited",
            Self::Internal(_) => "internal_error",
        }
    }

    /// The problem document, without the request id (added by the middleware).
    pub fn to_problem(&self) -> Problem {
        let status = self.status();
        let detail = match self {
            // Never reveal internals; the cause is logged where the error is rendered.
            Self::Internal(_) => Some("An unexpected error occurred. It has been logged; quote the request id if you report it.".into()),
            Self::Validation(errors) => Some(match errors.as_slice() {
                [one] => format!("`{}`: {}", one.field, one.message),
                _ => format!("{} fields are invalid", errors.len()),
            }),
            Self::InvalidParameter(e) => Some(format!("`{}`: {}", e.field, e.message)),
            other => Some(other.to_string()),
        };
        let errors = match self {
            Self::Validation(errors) => errors.clone(),
            Self::InvalidParameter(e) => vec![e.clone()],
            _ => Vec::new(),
        };
        let code = self.code();
        Problem {
            type_: format!("https://zoark.dev/problems/{}", code.replace('_', "-")),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            code: code.to_owned(),
            request_id: None,
            errors,
        }
    }

    /// Maps any error poem or poem-openapi produced before or around a handler.
    pub fn from_poem(err: poem::Error) -> Self {
        if err.is::<ApiError>() {
            return match err.downcast::<ApiError>() {
                Ok(api) => api,
                Err(other) => Self::Internal(anyhow::anyhow!(other.to_string())),
            };
        }
        if let Some(e) = err.downcast_ref::<ParseParamError>() {
            return Self::InvalidParameter(FieldError {
                field: e.name.to_owned(),
                message: e.reason.clone(),
            });
        }
        if let Some(e) = err.downcast_ref::<ParsePathError>() {
            return Self::InvalidParameter(FieldError {
                field: e.name.to_owned(),
                message: e.reason.clone(),
            });
        }
        if let Some(e) = err.downcast_ref::<ParseRequestPayloadError>() {
            return Self::Validation(vec![FieldError {
                field: "body".into(),
                message: e.reason.clone(),
            }]);
        }
        if let Some(e) = err.downcast_ref::<ContentTypeError>() {
            return Self::UnsupportedMediaType(e.to_string());
        }
        if err.is::<AuthorizationError>() {
            return Self::Unauthorized;
        }
        if err.is::<NotFoundError>() {
            return Self::NotFound {
                code: "route_not_found",
                detail: "No such endpoint.".into(),
            };
        }
        if err.is::<MethodNotAllowedError>() {
            return Self::MethodNotAllowed;
        }
        let status = err.status();
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge {
                limit: crate::json::MAX_JSON_BYTES as u64,
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType(err.to_string()),
            StatusCode::NOT_FOUND => Self::NotFound {
                code: "not_found",
                detail: err.to_string(),
            },
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            s if s.is_client_error() => Self::InvalidParameter(FieldError {
                field: "request".into(),
                message: err.to_string(),
            }),
            _ => Self::Internal(anyhow::anyhow!("{err}")),
        }
    }
}

impl ResponseError for ApiError {
    fn status(&self) -> StatusCode {
        ApiError::status(self)
    }

    fn as_response(&self) -> Response {
        problem_response(self, None)
    }
}

/// Renders an error as `application/problem+json`, logging internal errors once.
pub fn problem_response(err: &ApiError, request_id: Option<&str>) -> Response {
    if err.is_pool_exhausted() {
        return problem_response(&ApiError::busy(), request_id);
    }
    if let ApiError::Internal(cause) = err {
        tracing::error!(error = ?cause, "request failed");
    }
    let mut problem = err.to_problem();
    problem.request_id = request_id.map(str::to_owned);
    let body = serde_json::to_vec(&problem).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::builder()
        .status(err.status())
        .header(header::CONTENT_TYPE, PROBLEM_JSON)
        .body(body);
    if let ApiError::RateLimited { retry_after } = err
        && let Ok(value) = retry_after.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    if matches!(err, ApiError::Unavailable { .. }) {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            poem::http::HeaderValue::from_static("1"),
        );
    }
    if matches!(err, ApiError::Unauthorized) {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            poem::http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// Documents the problem responses every operation can return.
impl ApiResponse for ApiError {
    fn meta() -> MetaResponses {
        let problem = |status: u16, description: &'static str| MetaResponse {
            description,
            status: Some(status),
            status_range: None,
            content: vec![MetaMediaType {
                content_type: PROBLEM_JSON,
                schema: Problem::schema_ref(),
            }],
            headers: vec![],
        };
        MetaResponses {
            responses: vec![
                problem(400, "Malformed JSON or an invalid parameter."),
                problem(401, "Missing, unknown, revoked or expired credentials."),
                problem(403, "The caller's role does not allow this."),
                problem(404, "No such resource in the caller's organization."),
                problem(409, "The resource's state does not allow this."),
                problem(
                    422,
                    "The body does not satisfy the contract; `errors` names each field.",
                ),
                problem(413, "The request body is larger than the limit."),
                problem(
                    415,
                    "The request body is missing or not of the documented content type.",
                ),
                problem(429, "Rate limited; see `Retry-After`."),
                problem(
                    500,
                    "Unexpected error; the body reveals nothing, the cause is logged.",
                ),
                problem(502, "A provider Zoark depends on refused or failed."),
            ],
        }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

/// A problem document as an explicit response variant of an operation's `ApiResponse`, for
/// expected outcomes that are not errors of the handler (e.g. readiness answering 503).
#[derive(Debug)]
pub struct ProblemJson(pub Problem);

impl ProblemJson {
    /// The problem of `err`, quoting the request id.
    pub fn new(err: &ApiError, request_id: &str) -> Self {
        let mut problem = err.to_problem();
        problem.request_id = Some(request_id.to_owned());
        Self(problem)
    }
}

impl poem_openapi::payload::Payload for ProblemJson {
    const CONTENT_TYPE: &'static str = PROBLEM_JSON;

    fn schema_ref() -> poem_openapi::registry::MetaSchemaRef {
        Problem::schema_ref()
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

impl poem::IntoResponse for ProblemJson {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.0).unwrap_or_else(|_| b"{}".to_vec());
        Response::builder()
            .header(header::CONTENT_TYPE, PROBLEM_JSON)
            .body(body)
    }
}

/// Collects the parse errors of a request, field by field.
#[derive(Default)]
pub struct Fields(Vec<FieldError>);

impl Fields {
    pub fn take<T>(
        &mut self,
        field: &str,
        parsed: Result<T, zoark_core::identity::Invalid>,
    ) -> Option<T> {
        parsed
            .map_err(|e| {
                self.0.push(FieldError {
                    field: field.to_owned(),
                    message: e.0,
                })
            })
            .ok()
    }

    pub fn reject(&mut self, field: &str, message: &str) {
        self.0.push(FieldError {
            field: field.to_owned(),
            message: message.to_owned(),
        });
    }

    /// # Errors
    /// A 422 naming every field that did not parse.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::Validation(self.0))
        }
    }
}

/// [`ApiError`]'s documented answers plus the problem answers `extra` names (status and
/// description): for operations that add some, such as uploads (413, 415) or a dependency that
/// can be away (503).
pub fn meta_with(extra: &[(u16, &'static str)]) -> poem_openapi::registry::MetaResponses {
    use poem_openapi::{ApiResponse as _, registry::MetaMediaType};
    let mut meta = ApiError::meta();
    meta.responses
        .extend(extra.iter().map(
            |&(status, description)| poem_openapi::registry::MetaResponse {
                description,
                status: Some(status),
                status_range: None,
                content: vec![MetaMediaType {
                    content_type: PROBLEM_JSON,
                    schema: <Problem as poem_openapi::types::Type>::schema_ref(),
                }],
                headers: vec![],
            },
        ));
    meta.responses.sort_by_key(|r| r.status);
    meta
}
