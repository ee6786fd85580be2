//! `JsonBody<T>`: the request-body extractor of every endpoint.
//!
//! poem-openapi's own `Json<T>` reports parse failures by type name only. This one documents the
//! same schema (from `T`'s poem-openapi `Type`) but parses with serde through
//! `serde_path_to_error`, so a wrong type, an unknown enum value or a missing field is answered with
//! a 422 naming the field (`items[2].status`), and broken JSON with a 400 giving line and column.

use poem::{Request, RequestBody};
use poem_openapi::{
    impl_apirequest_for_payload,
    payload::{ParsePayload, Payload},
    registry::{MetaSchemaRef, Registry},
    types::Type,
};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// Largest JSON body accepted (uploads have their own limit).
pub const MAX_JSON_BYTES: usize = 1024 * 1024;

/// A JSON request body parsed into `T`.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = "application/json";

    fn check_content_type(content_type: &str) -> bool {
        content_type.parse::<mime::Mime>().is_ok_and(|m| {
            m.type_() == "application"
                && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
        })
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Type + DeserializeOwned + Send> ParsePayload for JsonBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(_request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        use tokio::io::AsyncReadExt as _;
        // Read at most one byte past the limit, so an oversized body is never held in memory.
        let mut bytes = Vec::new();
        body.take()?
            .into_async_read()
            .take(MAX_JSON_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| ApiError::MalformedJson(format!("the body could not be read: {e}")))?;
        if bytes.len() > MAX_JSON_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_JSON_BYTES as u64,
            }
            .into());
        }
        parse(&bytes).map(Self).map_err(Into::into)
    }
}

impl_apirequest_for_payload!(JsonBody<T>, T: Type + DeserializeOwned + Send);

/// Parses a JSON document into `T`, naming the failing field.
///
/// # Errors
/// [`ApiError::MalformedJson`] for syntax errors, [`ApiError::Validation`] for contract errors.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::MalformedJson(
            "the body is empty; a JSON object is required".into(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof
            | serde_json::error::Category::Io => ApiError::MalformedJson(inner.to_string()),
            serde_json::error::Category::Data => {
                let message = strip_position(&inner.to_string());
                let (field, message) = match (path.as_str(), missing_field(&message)) {
                    // serde reports a missing field at its parent's path.
                    (".", Some(name)) => (name.to_owned(), "is required".to_owned()),
                    (parent, Some(name)) => (format!("{parent}.{name}"), "is required".to_owned()),
                    (".", None) => ("body".to_owned(), message),
                    (p, None) => (p.to_owned(), message),
                };
                ApiError::Validation(vec![FieldError { field, message }])
            }
        }
    })?;
    // Trailing characters after the document.
    de.end()
        .map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    // Postgres stores no NUL character in text or jsonb: refuse it here, naming the field, rather
    // than fail the insert. JSON can only spell it `\u0000`, so most bodies skip the walk.
    if bytes.windows(6).any(|w| w == b"\\u0000")
        && let Ok(document) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(field) = nul_field(&document, String::new())
    {
        return Err(ApiError::Validation(vec![FieldError {
            field,
            message: "must not contain the NUL character".into(),
        }]));
    }
    Ok(value)
}

/// The path (`items[2].name`, `body` for the document itself) of the first string or key holding
/// a NUL character.
fn nul_field(value: &serde_json::Value, path: String) -> Option<String> {
    let here = || {
        if path.is_empty() {
            "body".to_owned()
        } else {
            path.clone()
        }
    };
    match value {
        serde_json::Value::String(s) if s.contains('\0') => Some(here()),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_field(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            let child = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                Some(child)
            } else {
                nul_field(item, child)
            }
        }),
        _ => None,
    }
}

fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// serde_json appends " at line 1 column 17" to data errors; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Item {
        #[allow(dead_code)]
        status: Status,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Status {
        Active,
        Done,
    }

    #[derive(Debug, Deserialize)]
    struct Body {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        count: u32,
        #[allow(dead_code)]
        #[serde(default)]
        items: Vec<Item>,
    }

    fn field_error(json: &str) -> (String, String) {
        match parse::<Body>(json.as_bytes()).unwrap_err() {
            ApiError::Validation(errors) => (errors[0].field.clone(), errors[0].message.clone()),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_wrong_type_names_the_field() {
        let (field, message) = field_error(r#"{"name": "x", "count": "three"}"#);
        assert_eq!(field, "count");
        assert!(message.contains("expected u32"), "{message}");
    }

    #[test]
    fn an_unknown_enum_value_names_the_nested_field_and_the_allowed_values() {
        let (field, message) = field_error(
            r#"{"name": "x", "count": 1, "items": [{"status": "active"}, {"status": "COMPLETED"}]}"#,
        );
        assert_eq!(field, "items[1].status");
        assert!(message.contains("unknown variant `COMPLETED`"), "{message}");
        assert!(
            message.contains("`active`") && message.contains("`done`"),
            "{message}"
        );
    }

    #[test]
    fn a_nul_character_anywhere_is_a_422_naming_its_field() {
        assert_eq!(
            field_error(r#"{"name": "a\u0000b", "count": 1}"#),
            ("name".into(), "must not contain the NUL character".into())
        );
        let tagged = r#"{"name": "x", "count": 1, "tags": {"k": ["ok", "\u0000"]}}"#;
        match parse::<serde_json::Value>(tagged.as_bytes()) {
            Err(ApiError::Validation(errors)) => assert_eq!(errors[0].field, "tags.k[1]"),
            other => panic!("expected a validation error, got {other:?}"),
        }
        // An escaped backslash followed by `u0000` is six ordinary characters.
        assert!(parse::<Body>(br#"{"name": "\\u0000", "count": 1}"#).is_ok());
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(
            field_error(r#"{"count": 1}"#),
            ("name".into(), "is required".into())
        );
        assert_eq!(
            field_error(r#"{"name": "x", "count": 1, "items": [{}]}"#),
            ("items[0].status".into(), "is required".into())
        );
    }

    #[test]
    fn broken_json_is_a_400_with_its_position() {
        for body in [
            r#"{"name": "x", "count": "#,
            "{name: 1}",
            "",
            "   ",
            r#"{"name":"x","count":1} trailing"#,
        ] {
            match parse::<Body>(body.as_bytes()) {
                Err(e @ ApiError::MalformedJson(_)) => assert_eq!(e.status(), 400, "{body}"),
                other => panic!("{body}: expected malformed json, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_named_as_the_body() {
        let (field, message) = field_error(r#""a string""#);
        assert_eq!(field, "body");
        assert!(message.contains("expected struct Body"), "{message}");
    }
}

/// The whole stack (middleware, extractor, error mapping) with a throwaway operation, since the
/// foundation has no JSON-body endpoint of its own yet.
#[cfg(test)]
mod stack_tests {
    use poem::{EndpointExt, Route, http::StatusCode, test::TestClient};
    use poem_openapi::{Enum, Object, OpenApi, OpenApiService, payload::Json};
    use serde::Deserialize;

    use super::JsonBody;
    use crate::{error::ApiError, middleware::RequestContext};

    #[derive(Debug, Clone, Copy, Enum, Deserialize)]
    #[oai(rename_all = "snake_case")]
    #[serde(rename_all = "snake_case")]
    enum Column {
        Backlog,
        Active,
    }

    #[derive(Debug, Object, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct NewCard {
        title: String,
        column: Column,
        people: u32,
    }

    struct CardsApi;

    #[OpenApi]
    impl CardsApi {
        #[oai(path = "/cards", method = "post", operation_id = "create_card")]
        async fn create(
            &self,
            body: JsonBody<NewCard>,
            limit: poem_openapi::param::Query<Option<u32>>,
        ) -> Result<Json<String>, ApiError> {
            let _ = limit;
            Ok(Json(format!(
                "{}:{:?}:{}",
                body.0.title, body.0.column, body.0.people
            )))
        }
    }

    struct BrokenApi;

    #[OpenApi]
    impl BrokenApi {
        #[oai(path = "/broken", method = "get")]
        #[allow(clippy::panic)]
        async fn broken(&self) -> Json<String> {
            panic!("a bug with a secret=hunter2 in its message")
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_is_an_opaque_500_problem_and_the_server_keeps_serving() {
        let service = OpenApiService::new(BrokenApi, "t", "1");
        let client = TestClient::new(
            Route::new()
                .nest("/", service)
                .with(RequestContext::default()),
        );
        for _ in 0..2 {
            let resp = client.get("/broken").send().await;
            assert_eq!(resp.0.status(), StatusCode::INTERNAL_SERVER_ERROR);
            assert!(resp.0.headers().contains_key("x-request-id"));
            let body = resp.0.into_body().into_string().await.unwrap();
            let value: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(value["code"], "internal_error");
            assert!(value["request_id"].is_string());
            assert!(
                !body.contains("hunter2"),
                "the body reveals nothing: {body}"
            );
        }
    }

    fn client() -> TestClient<impl poem::Endpoint> {
        let service = OpenApiService::new(CardsApi, "t", "1");
        TestClient::new(
            Route::new()
                .nest("/", service)
                .with(RequestContext::default()),
        )
    }

    async fn send(body: &str, content_type: &str) -> (StatusCode, serde_json::Value) {
        let resp = client()
            .post("/cards")
            .content_type(content_type)
            .body(body.to_owned())
            .send()
            .await;
        let status = resp.0.status();
        let ct = resp
            .0
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(resp.0.headers().contains_key("x-request-id"));
        let value = resp
            .0
            .into_body()
            .into_json::<serde_json::Value>()
            .await
            .unwrap_or_default();
        if !status.is_success() {
            assert_eq!(ct, "application/problem+json", "{value}");
            assert!(value["request_id"].is_string(), "{value}");
        }
        (status, value)
    }

    #[tokio::test]
    async fn a_valid_body_reaches_the_handler() {
        let (status, value) = send(
            r#"{"title":"t","column":"active","people":3}"#,
            "application/json",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(value, "t:Active:3");
    }

    #[tokio::test]
    async fn malformed_json_is_400_problem() {
        let (status, value) = send(r#"{"title": "#, "application/json").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(value["code"], "malformed_json");
    }

    #[tokio::test]
    async fn wrong_types_unknown_enums_missing_and_unknown_fields_are_422_naming_the_field() {
        for (body, field) in [
            (
                r#"{"title":"t","column":"active","people":"three"}"#,
                "people",
            ),
            (r#"{"title":"t","column":"COMPLETED","people":1}"#, "column"),
            (r#"{"column":"active","people":1}"#, "title"),
            (r#"{"title":"t","column":"active","people":-1}"#, "people"),
        ] {
            let (status, value) = send(body, "application/json").await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
            assert_eq!(value["code"], "validation_failed");
            assert_eq!(value["errors"][0]["field"], field, "{body} -> {value}");
        }
        let (status, value) = send(
            r#"{"title":"t","column":"active","people":1,"extra":true}"#,
            "application/json",
        )
        .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            value["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field `extra`"),
            "{value}"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_problem() {
        let huge = format!(
            r#"{{"title":"{}","column":"active","people":1}}"#,
            "x".repeat(super::MAX_JSON_BYTES)
        );
        let (status, value) = send(&huge, "application/json").await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(value["code"], "payload_too_large");
    }

    #[tokio::test]
    async fn a_wrong_content_type_is_415_problem() {
        let (status, value) = send("title=t", "application/x-www-form-urlencoded").await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(value["code"], "unsupported_media_type");
    }

    #[tokio::test]
    async fn a_query_parameter_of_the_wrong_type_is_400_naming_it() {
        let resp = client()
            .post("/cards")
            .query("limit", &"many")
            .content_type("application/json")
            .body(r#"{"title":"t","column":"active","people":1}"#)
            .send()
            .await;
        assert_eq!(resp.0.status(), StatusCode::BAD_REQUEST);
        let value = resp
            .0
            .into_body()
            .into_json::<serde_json::Value>()
            .await
            .unwrap();
        assert_eq!(value["code"], "invalid_parameter");
        assert_eq!(value["errors"][0]["field"], "limit");
    }
}
