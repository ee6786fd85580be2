//! Strong entity tags for single-resource GETs, and `If-None-Match` (RFC 9110 §13.1.2).

use poem_openapi::{ApiResponse, payload::Json, types::ToJSON};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The answer of a single-resource GET: the representation with its entity tag, or 304.
#[derive(ApiResponse)]
pub enum Found<T: ToJSON + Send + Sync> {
    /// The resource, with its entity tag.
    #[oai(status = 200)]
    Ok(Json<Box<T>>, #[oai(header = "ETag")] String),
    /// `If-None-Match` named the current entity tag: nothing changed.
    #[oai(status = 304)]
    NotModified(#[oai(header = "ETag")] String),
}

/// `value` tagged, or 304 when `if_none_match` names its tag.
pub fn found<T: ToJSON + Serialize + Send + Sync>(
    value: T,
    if_none_match: Option<&str>,
) -> Found<T> {
    let tag = of(&value);
    if none_match(if_none_match, &tag) {
        Found::NotModified(tag)
    } else {
        Found::Ok(Json(Box::new(value)), tag)
    }
}

/// A strong entity tag: 128 bits of the SHA-256 of the JSON representation, quoted.
pub fn of<T: Serialize>(representation: &T) -> String {
    let body = serde_json::to_vec(representation).unwrap_or_default();
    let digest = Sha256::digest(&body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `true` when an `If-None-Match` header names `tag` (weakly compared) or is `*`.
pub fn none_match(header: Option<&str>, tag: &str) -> bool {
    header.is_some_and(|h| {
        h.split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == tag)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listed_or_weak_or_star_tag_matches_and_another_does_not() {
        let tag = of(&serde_json::json!({"a": 1}));
        assert!(none_match(Some(&tag), &tag));
        assert!(none_match(Some(&format!("\"x\", W/{tag}")), &tag));
        assert!(none_match(Some("*"), &tag));
        assert!(!none_match(Some("\"x\""), &tag));
        assert!(!none_match(None, &tag));
        assert_ne!(tag, of(&serde_json::json!({"a": 2})));
    }
}
