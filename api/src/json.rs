//! `JsonBody<T>`: the request-body extractor of every endpoint.
//!
//! poem-openapi's own `Json<T>` reports parse failures by type name only. This one documents the
//! same schema (from `T`'s poem-openapi `Type`) but parses with serde through
//! `serde_path_to_error`, so a wrong type, an unknown enum value or a missing field is answered with
//! a 422 naming the field (`items[2].status`), and broken JSON with a 400 giving line and column.

use poem::{FromRequest, Request, RequestBody};
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
        content_type
            .parse::<mime::Mime>()
            .is_ok_and(|m| m.type_() == "application" && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json")))
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

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let bytes = Vec::<u8>::from_request(request, body).await?;
        if bytes.len() > MAX_JSON_BYTES {
            return Err(ApiError::PayloadTooLarge { limit: MAX_JSON_BYTES as u64 }.into());
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
        return Err(ApiError::MalformedJson("the body is empty; a JSON object is required".into()));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, T>(&mut de).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof | serde_json::error::Category::Io => {
                ApiError::MalformedJson(inner.to_string())
            }
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
    de.end().map_err(|e| ApiError::MalformedJson(e.to_string()))?;
    Ok(value)
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
        let (field, message) =
            field_error(r#"{"name": "x", "count": 1, "items": [{"status": "active"}, {"status": "COMPLETED"}]}"#);
        assert_eq!(field, "items[1].status");
        assert!(message.contains("unknown variant `COMPLETED`"), "{message}");
        assert!(message.contains("`active`") && message.contains("`done`"), "{message}");
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(field_error(r#"{"count": 1}"#), ("name".into(), "is required".into()));
        assert_eq!(
            field_error(r#"{"name": "x", "count": 1, "items": [{}]}"#),
            ("items[0].status".into(), "is required".into())
        );
    }

    #[test]
    fn broken_json_is_a_400_with_its_position() {
        for body in [r#"{"name": "x", "count": "#, "{name: 1}", "", "   ", r#"{"name":"x","count":1} trailing"#] {
            match parse::<Body>(body.as_bytes()) {
                Err(e @ ApiError::MalformedJson(_)) => assert_eq!(e.status(), 400, "{body}"),
                other => panic!("{body}: expected malformed json, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_named_as_the_body() {
        let (field, message) = field_error("[1, 2]");
        assert_eq!(field, "body");
        assert!(message.contains("expected struct Body"), "{message}");
    }
}
