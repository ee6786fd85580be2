//! Connections to hosts a tenant names: SMTP servers, LLM providers, webhook endpoints. A
//! tenant must not make the platform connect to its own network (the database, the cloud's
//! metadata service, an internal admin page) and read the answer back in an error or a log.
//!
//! [`OutboundPolicy`] says which addresses such a connection may reach: public ones; loopback
//! in development (local mail sinks, local LLMs); and the hosts an operator names in
//! `ZOARK_OUTBOUND_ALLOW_HOSTS` (a self-hosted relay or LLM on the private network). Host names
//! are resolved once, through [`OutboundPolicy::resolve`], and the connection is made to the
//! checked address (no DNS rebinding between the check and the connect).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use crate::identity::Invalid;

/// Which addresses a tenant-configured connection may reach.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    /// Loopback addresses and `localhost` (`ZOARK_OUTBOUND_ALLOW_LOOPBACK`: true in
    /// development, refused in production).
    pub allow_loopback: bool,
    /// Every private, loopback and link-local address (webhooks' development switch,
    /// `ZOARK_WEBHOOKS_ALLOW_PRIVATE`).
    pub allow_private: bool,
    /// Plain-text protocols (SMTP `security: none`) only to allowed hosts (production).
    pub require_tls: bool,
    /// Hosts (names or addresses, lower case) an operator allows whatever they resolve to
    /// (`ZOARK_OUTBOUND_ALLOW_HOSTS`, comma-separated); plain text is allowed to them too.
    pub allowed_hosts: Arc<[String]>,
}

/// Why a connection was not made. Its text, which the organization may read in a job error,
/// names no address: which internal addresses a name resolves to is the platform's business
/// (the worker's log has them).
#[derive(Debug, thiserror::Error)]
pub enum Unreachable {
    #[error("refusing to connect to {host}: it resolves only to addresses that are not public")]
    Refused { host: String },
    #[error("resolving {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
}

impl OutboundPolicy {
    /// No restriction: for connections the deployment itself configures (its own SMTP relay,
    /// LLM, embeddings and OAuth providers).
    pub fn unrestricted() -> Self {
        Self {
            allow_loopback: true,
            allow_private: true,
            require_tls: false,
            allowed_hosts: Arc::from([]),
        }
    }

    /// This policy with every private address allowed (webhooks in development and tests).
    #[must_use]
    pub fn with_private(mut self, allow_private: bool) -> Self {
        self.allow_private |= allow_private;
        self
    }

    /// Whether the operator named `host` in `ZOARK_OUTBOUND_ALLOW_HOSTS`.
    pub fn is_allowed_host(&self, host: &str) -> bool {
        let host = normalise(host);
        self.allowed_hosts.contains(&host)
    }

    /// Whether a connection to `host` may use `ip`.
    pub fn permits(&self, host: &str, ip: IpAddr) -> bool {
        is_public(ip)
            || self.allow_private
            || (self.allow_loopback && is_loopback(ip))
            || self.is_allowed_host(host)
    }

    /// Whether a plain-text connection (SMTP without TLS) to `host` is allowed.
    pub fn permits_plaintext(&self, host: &str) -> bool {
        !self.require_tls || self.is_allowed_host(host)
    }

    /// Checks a host as configured (an address literal or a name), before anything resolves
    /// it: an internal address, or a name that can only be internal (`localhost`, `*.local`,
    /// `*.internal`, a name without a dot), is refused unless allowed.
    ///
    /// # Errors
    /// [`Invalid`] saying why.
    pub fn check_host(&self, host: &str) -> Result<(), Invalid> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return if self.permits(host, ip) {
                Ok(())
            } else {
                Err(Invalid(format!(
                    "must not point at the internal address {ip}"
                )))
            };
        }
        let name = normalise(host);
        if self.allow_private || self.is_allowed_host(&name) {
            return Ok(());
        }
        let loopback = name == "localhost" || name.ends_with(".localhost");
        if loopback && self.allow_loopback {
            return Ok(());
        }
        let internal = loopback
            || [".local", ".internal", ".localdomain"]
                .iter()
                .any(|suffix| name.ends_with(suffix))
            || !name.contains('.');
        if internal {
            return Err(Invalid(
                "must name a public host, not an internal one".into(),
            ));
        }
        Ok(())
    }

    /// Resolves `host` (a name or an address literal) and keeps the addresses this policy
    /// permits.
    ///
    /// # Errors
    /// [`Unreachable`]: resolution failed, or only refused addresses came back.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, Unreachable> {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let all: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
            .await
            .map_err(|source| Unreachable::Resolve {
                host: host.to_owned(),
                source,
            })?
            .collect();
        self.keep(host, all)
    }

    /// The addresses of `all` (what `host` resolved to) this policy permits.
    ///
    /// # Errors
    /// [`Unreachable`] when none is left.
    pub fn keep(&self, host: &str, all: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Unreachable> {
        if all.is_empty() {
            return Err(Unreachable::NoAddress {
                host: host.to_owned(),
            });
        }
        let allowed: Vec<SocketAddr> = all
            .iter()
            .copied()
            .filter(|a| self.permits(host, a.ip()))
            .collect();
        if allowed.is_empty() {
            let addrs = all
                .iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            tracing::warn!(%host, %addrs, "outbound connection refused: the host resolves only to non-public addresses");
            return Err(Unreachable::Refused {
                host: host.to_owned(),
            });
        }
        Ok(allowed)
    }
}

impl OutboundPolicy {
    /// Checks the host of a URL a tenant configured (an address literal is connected to
    /// without resolving, so it is checked here), and that plain `http://` goes only where
    /// plain text is allowed.
    ///
    /// # Errors
    /// [`Invalid`] saying why.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Invalid> {
        let host = url
            .host_str()
            .ok_or_else(|| Invalid("must name a host".into()))?;
        self.check_host(host)?;
        if url.scheme() == "http" && !self.permits_plaintext(host) {
            return Err(Invalid(
                "must be an https:// URL (plain http is allowed only to the hosts of \
                 ZOARK_OUTBOUND_ALLOW_HOSTS in production)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// An HTTP client builder for tenant-configured URLs: names resolve through this policy
    /// (the address checked is the address connected to), redirects are not followed (they
    /// could point at an address literal) and no proxy is used. Check address literals with
    /// [`OutboundPolicy::check_url`] before each request.
    pub fn http_client(&self) -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(GuardedResolver {
                policy: self.clone(),
            })
    }
}

/// The system resolver, keeping only the addresses the policy permits.
struct GuardedResolver {
    policy: OutboundPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs = policy.resolve(&host, 0).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The refusal in an error's chain (reqwest wraps its resolver's errors), if that is why.
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Unreachable> {
    let mut source = Some(error);
    while let Some(e) = source {
        if let Some(found @ Unreachable::Refused { .. }) = e.downcast_ref::<Unreachable>() {
            return Some(found);
        }
        source = e.source();
    }
    None
}

/// The form hosts are compared in: lower case, without a trailing dot or brackets.
pub fn normalise(host: &str) -> String {
    host.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Whether a tenant's connection may reach `ip` without an exception: false for loopback,
/// private, shared (CGNAT), link-local, unspecified, broadcast, multicast, documentation and
/// reserved ranges, and their IPv4-mapped IPv6 forms.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && ip.octets()[2] == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // Only global unicast (2000::/3) is public; outside it are the unspecified and loopback
    // addresses, IPv4-compatible ::/96, NAT64 64:ff9b::/96 and 64:ff9b:1::/48 (which reach
    // IPv4 internals), discard-only 100::/64, SRv6 5f00::/16, unique local fc00::/7, link- and
    // site-local fe80::/10 and fec0::/10, multicast ff00::/8.
    let global_unicast = (s[0] & 0xe000) == 0x2000;
    global_unicast
        // 2001::/23 IETF protocol assignments: Teredo 2001::/32 (tunnels to IPv4), benchmarking,
        // ORCHID and the rest.
        && !(s[0] == 0x2001 && s[1] < 0x0200)
        // 2001:db8::/32 and 3fff::/20 documentation.
        && !(s[0] == 0x2001 && s[1] == 0x0db8)
        && !(s[0] == 0x3fff && s[1] < 0x1000)
        // 2002::/16 6to4: embeds an IPv4 address (2002:7f00:1:: is 127.0.0.1).
        && s[0] != 0x2002
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> OutboundPolicy {
        OutboundPolicy {
            require_tls: true,
            ..OutboundPolicy::default()
        }
    }

    fn addr(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap(), 25)
    }

    #[test]
    fn only_public_addresses_pass_a_strict_policy() {
        let p = strict();
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "169.254.169.254",
            "192.168.0.10",
            "::1",
            "::ffff:127.0.0.1",
            "fd00::1",
            "2002:7f00:1::",
        ] {
            assert!(!p.permits("h", internal.parse().unwrap()), "{internal}");
            assert!(p.check_host(internal).is_err(), "{internal}");
        }
        assert!(p.permits("h", "93.184.215.14".parse().unwrap()));
        for name in ["localhost", "db.internal", "printer.local", "intranet"] {
            assert!(p.check_host(name).is_err(), "{name}");
        }
        assert!(p.check_host("smtp.example.com").is_ok());
    }

    #[test]
    fn development_allows_loopback_but_not_the_rest_of_the_private_network() {
        let p = OutboundPolicy {
            allow_loopback: true,
            ..OutboundPolicy::default()
        };
        assert!(p.check_host("127.0.0.1").is_ok());
        assert!(p.check_host("localhost").is_ok());
        assert!(p.check_host("[::1]").is_ok());
        assert!(p.check_host("169.254.169.254").is_err());
        assert!(p.check_host("10.0.0.7").is_err());
        assert!(p.keep("h", vec![addr("127.0.0.1")]).is_ok());
        assert!(p.keep("h", vec![addr("10.0.0.7")]).is_err());
    }

    #[test]
    fn named_hosts_may_be_private_and_plain_text() {
        let p = OutboundPolicy {
            allowed_hosts: Arc::from(["relay.corp".to_owned(), "10.0.0.9".to_owned()]),
            ..strict()
        };
        assert!(p.check_host("Relay.Corp.").is_ok());
        assert!(p.check_host("10.0.0.9").is_ok());
        assert!(p.check_host("10.0.0.8").is_err());
        assert!(p.keep("relay.corp", vec![addr("10.1.1.1")]).is_ok());
        assert!(p.permits_plaintext("relay.corp"));
        assert!(!p.permits_plaintext("smtp.example.com"));
        assert!(OutboundPolicy::default().permits_plaintext("smtp.example.com"));
    }

    #[tokio::test]
    async fn names_resolve_to_permitted_addresses_only() {
        let error = strict().resolve("localhost", 25).await.unwrap_err();
        assert!(matches!(error, Unreachable::Refused { .. }), "{error}");
        assert!(!error.to_string().contains("127.0.0.1"), "{error}");
        let dev = OutboundPolicy {
            allow_loopback: true,
            ..strict()
        };
        let addrs = dev.resolve("localhost", 25).await.unwrap();
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 25),
            "{addrs:?}"
        );
    }

    #[test]
    fn a_refusal_names_the_host_but_no_address() {
        let refused = strict()
            .keep("mail.example.com", vec![addr("10.9.8.7")])
            .unwrap_err()
            .to_string();
        assert!(refused.contains("mail.example.com"), "{refused}");
        assert!(!refused.contains("10.9.8.7"), "{refused}");
    }

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "100::1",
            "2001::1",
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001:2::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "3fff::1",
            "5f00::1",
            "fec0::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "2a00:1450:4001:80b::200e",
            "2001:4860::8888",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
