//! Webhook domain types: the closed list of event types, endpoint URLs (parsed, with the
//! address rules that keep deliveries away from internal networks), signing secrets and the
//! `Zoark-Signature` header.

use std::{fmt, str::FromStr};

use url::Url;

use crate::{crypto, identity::Invalid, outbound::OutboundPolicy};

/// What an endpoint can subscribe to, and what an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// A task moved to another board column.
    TaskStatusChanged,
    /// An approval pipeline instance reached its final decision.
    ApprovalCompleted,
    /// A broadcast reached its final status (`sent`, `partially_failed` or `failed`).
    BroadcastFinished,
    /// A job of the organization ran out of attempts or failed fatally.
    JobDiscarded,
    /// A ping sent by `POST /webhooks/{id}/test` to that endpoint only; not subscribable.
    WebhookTest,
}

impl EventType {
    /// Every event type, in documentation order.
    pub const ALL: [Self; 5] = [
        Self::TaskStatusChanged,
        Self::ApprovalCompleted,
        Self::BroadcastFinished,
        Self::JobDiscarded,
        Self::WebhookTest,
    ];

    /// Subscribing to this matches every subscribable event type, present and future.
    pub const WILDCARD: &'static str = "*";

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TaskStatusChanged => "task.status_changed",
            Self::ApprovalCompleted => "approval.completed",
            Self::BroadcastFinished => "broadcast.finished",
            Self::JobDiscarded => "job.discarded",
            Self::WebhookTest => "webhook.test",
        }
    }

    /// Whether an endpoint may list it in `event_types` (the test ping is sent on request).
    pub fn subscribable(self) -> bool {
        self != Self::WebhookTest
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventType {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| Invalid(format!("`{s}` is not an event type")))
    }
}

/// The `event_types` of an endpoint: 1 to 16 subscribable types or `*`, deduplicated, sorted.
///
/// # Errors
/// An empty list, an unknown or unsubscribable type, or `*` mixed with others.
pub fn parse_subscriptions(raw: &[String]) -> Result<Vec<String>, Invalid> {
    if raw.is_empty() || raw.len() > 16 {
        return Err(Invalid("must list 1 to 16 event types (or \"*\")".into()));
    }
    let mut out = Vec::with_capacity(raw.len());
    for item in raw {
        let item = item.trim();
        if item == EventType::WILDCARD {
            out.push(item.to_owned());
            continue;
        }
        let event: EventType = item.parse()?;
        if !event.subscribable() {
            return Err(Invalid(format!(
                "`{event}` is sent by the test endpoint and cannot be subscribed to"
            )));
        }
        out.push(event.as_str().to_owned());
    }
    out.sort_unstable();
    out.dedup();
    if out.len() > 1 && out.iter().any(|e| e == EventType::WILDCARD) {
        return Err(Invalid("\"*\" already means every event type".into()));
    }
    Ok(out)
}

/// Which endpoints the settings allow.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Which hosts and addresses deliveries may reach.
    pub outbound: OutboundPolicy,
    /// Plain `http://`.
    pub allow_http: bool,
}

impl AddressPolicy {
    /// The webhook settings' policy on top of the platform's outbound one.
    pub fn new(outbound: &OutboundPolicy, s: &crate::settings::WebhookSettings) -> Self {
        Self {
            outbound: outbound.clone().with_private(s.allow_private),
            allow_http: s.allow_http,
        }
    }
}

/// An endpoint URL: absolute, `https` (or `http` where allowed), no credentials, no fragment,
/// at most 2048 bytes, and not naming an internal host or address unless allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    /// # Errors
    /// [`Invalid`] naming the first rule the URL breaks.
    pub fn parse(raw: &str, policy: &AddressPolicy) -> Result<Self, Invalid> {
        let raw = raw.trim();
        if raw.len() > 2048 {
            return Err(Invalid("must be at most 2048 characters".into()));
        }
        let url = Url::parse(raw).map_err(|e| Invalid(format!("is not a URL: {e}")))?;
        match url.scheme() {
            "https" => {}
            "http" if policy.allow_http => {}
            _ => return Err(Invalid("must be an https:// URL".into())),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Invalid("must not carry credentials".into()));
        }
        if url.fragment().is_some() {
            return Err(Invalid("must not have a #fragment".into()));
        }
        match url.host_str() {
            None => return Err(Invalid("must name a host".into())),
            Some(host) => policy.outbound.check_host(host)?,
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

/// A new signing secret: `whsec_` and 32 random bytes.
pub fn new_secret() -> String {
    format!("whsec_{}", crypto::random_token(32))
}

/// The `Zoark-Signature` header for `body` sent at `timestamp` (Unix seconds):
/// `t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with the secret>`.
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    // HMAC takes keys of any length: `new_from_slice` cannot fail.
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| hmac::Hmac::<sha2::Sha256>::new(&Default::default()));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_are_a_closed_deduplicated_list() {
        let ok = parse_subscriptions(&[
            "job.discarded".into(),
            "broadcast.finished".into(),
            "job.discarded".into(),
        ])
        .unwrap();
        assert_eq!(ok, ["broadcast.finished", "job.discarded"]);
        assert_eq!(parse_subscriptions(&["*".into()]).unwrap(), ["*"]);
        assert!(parse_subscriptions(&[]).is_err());
        assert!(parse_subscriptions(&["task.deleted".into()]).is_err());
        assert!(parse_subscriptions(&["webhook.test".into()]).is_err());
        assert!(parse_subscriptions(&["*".into(), "job.discarded".into()]).is_err());
    }

    #[test]
    fn urls_must_be_https_and_public_unless_allowed() {
        let strict = &AddressPolicy::default();
        assert!(EndpointUrl::parse("https://hooks.example.com/zoark", strict).is_ok());
        for bad in [
            "http://hooks.example.com/",
            "ftp://hooks.example.com/",
            "https://user:pw@hooks.example.com/",
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:192.168.1.1]/",
            "https://localhost:8443/",
            "https://db.internal/",
            "https://intranet/",
            "not a url",
        ] {
            assert!(EndpointUrl::parse(bad, strict).is_err(), "{bad}");
        }
        let dev = &AddressPolicy {
            outbound: OutboundPolicy::default().with_private(true),
            allow_http: true,
        };
        assert!(EndpointUrl::parse("http://127.0.0.1:8080/hook", dev).is_ok());
    }

    #[test]
    fn the_signature_is_stripe_shaped() {
        let header = signature_header("whsec_test", 1_700_000_000, b"{}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(
            header,
            signature_header("whsec_other", 1_700_000_000, b"{}")
        );
    }
}
