//! Strong entity tags for single-resource GETs, and `If-None-Match` against them.

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// A strong entity tag: the first 128 bits of the SHA-256 of the JSON representation.
pub fn of(value: &impl Serialize) -> String {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&body);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// `true` when an `If-None-Match` header names `tag` (or `*`); weak comparison, as RFC 9110
/// asks for this header.
pub fn matches(if_none_match: Option<&str>, tag: &str) -> bool {
    if_none_match.is_some_and(|h| {
        h.split(',')
            .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag)
    })
}
