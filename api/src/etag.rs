//! Strong entity tags for `GET` of one resource, and `If-None-Match` (RFC 9110).

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The tag of a representation: the first 128 bits of the SHA-256 of its JSON.
pub fn of(representation: &impl Serialize) -> String {
    let body = serde_json::to_vec(representation).unwrap_or_default();
    let digest = Sha256::digest(&body);
    format!("\"{}\"", hex::encode(&digest[..16]))
}

/// Whether an `If-None-Match` header names `tag` (or is `*`); weak comparison, as GET uses.
pub fn none_match(if_none_match: Option<&str>, tag: &str) -> bool {
    if_none_match.is_some_and(|h| {
        h.split(',')
            .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag)
    })
}
