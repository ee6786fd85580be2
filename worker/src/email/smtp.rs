//! A pool of SMTP connections with `TCP_NODELAY`.
//!
//! lettre 0.11.23's own transport writes a message's body and its `<CRLF>.<CRLF>` terminator as
//! two writes on a socket with Nagle's algorithm on: the terminator waits for the server's
//! delayed ACK, 40 ms on Linux, on every message (fixed upstream in lettre#1159, not released
//! yet). Measured with `cargo xtask bench email`: 334 deliveries/s with 20 slots before, see
//! docs/benchmarks.md for after. This pool opens the TCP connection itself, turns Nagle off and
//! hands the socket to lettre's SMTP session (`AsyncSmtpConnection::connect_with_transport`),
//! which still does the protocol: EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA. Implicit TLS (port
//! 465) lets lettre open the socket and do the handshake, on the address checked here.
//!
//! The host is resolved once through the [`OutboundPolicy`] and the connection made to a
//! checked address, with the TLS name set to the host: an organization's account cannot reach
//! the platform's own network. A failure that only a change of the account's settings can cure
//! (refused address, no TLS where it is required, no usable authentication, credentials
//! refused) is a [`PoolError::Setup`].

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use std::net::SocketAddr;

use lettre::{
    address::Envelope,
    transport::smtp::{
        Error,
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
};
use zoark_core::{
    outbound::{OutboundPolicy, Unreachable},
    settings::SmtpSecurity,
};

/// Idle connections kept per pool; more may be open while busy.
const MAX_IDLE: usize = 32;
/// An idle connection older than this is closed instead of reused (servers drop idle clients
/// after a few minutes; RFC 5321 asks them to wait at least 5).
const IDLE_FOR: Duration = Duration::from_secs(60);
/// An idle connection unused for longer than this is checked with NOOP before a message.
const CHECK_AFTER: Duration = Duration::from_secs(5);

/// Connections to one SMTP server with one set of credentials.
pub struct SmtpPool {
    host: String,
    port: u16,
    security: SmtpSecurity,
    credentials: Option<Credentials>,
    policy: OutboundPolicy,
    hello: ClientId,
    timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpPool {
    pub fn new(
        (host, port): (&str, u16),
        security: SmtpSecurity,
        credentials: Option<Credentials>,
        timeout: Duration,
        policy: OutboundPolicy,
    ) -> Self {
        Self {
            host: host.to_owned(),
            port,
            security,
            credentials,
            policy,
            hello: ClientId::default(),
            timeout,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends one message; the connection goes back to the pool only after a success (lettre
    /// closes a session on any error).
    ///
    /// # Errors
    /// lettre's error (an SMTP reply, a network or TLS failure), or a timeout.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), PoolError> {
        let mut conn = match self.take().await {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        match tokio::time::timeout(self.timeout, conn.send(envelope, message)).await {
            Ok(Ok(_)) => {
                self.put(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(PoolError::Timeout(self.timeout)),
        }
    }

    /// A live idle connection, if any.
    async fn take(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let (mut conn, since) = self.idle.lock().ok()?.pop()?;
            let idle = since.elapsed();
            if idle > IDLE_FOR {
                continue;
            }
            if idle < CHECK_AFTER
                || matches!(
                    tokio::time::timeout(self.timeout, conn.test_connected()).await,
                    Ok(true)
                )
            {
                return Some(conn);
            }
        }
    }

    fn put(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < MAX_IDLE
        {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, PoolError> {
        if self.security == SmtpSecurity::None && !self.policy.permits_plaintext(&self.host) {
            return Err(PoolError::Setup(
                "SMTP without TLS is refused in production: use `starttls` or `tls`".into(),
            ));
        }
        let session = async {
            let addrs = self.policy.resolve(&self.host, self.port).await?;
            let mut conn = self.open(&addrs).await?;
            if self.security == SmtpSecurity::StartTls {
                conn.starttls(
                    TlsParameters::new(self.host.clone()).map_err(setup)?,
                    &self.hello,
                )
                .await
                .map_err(setup)?;
            }
            if let Some(credentials) = &self.credentials {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await
                    .map_err(setup)?;
            }
            Ok::<_, PoolError>(conn)
        };
        tokio::time::timeout(self.timeout, session)
            .await
            .map_err(|_| PoolError::Timeout(self.timeout))?
    }

    /// An SMTP session (greeting and EHLO done) on the first of `addrs` that answers.
    async fn open(&self, addrs: &[SocketAddr]) -> Result<AsyncSmtpConnection, PoolError> {
        let mut last = None;
        for addr in addrs {
            let opened = if self.security == SmtpSecurity::Tls {
                let tls = TlsParameters::new(self.host.clone()).map_err(setup)?;
                AsyncSmtpConnection::connect_tokio1(
                    *addr,
                    Some(self.timeout),
                    &self.hello,
                    Some(tls),
                    None,
                )
                .await
                .map_err(|e| if e.is_tls() { setup(e) } else { e.into() })
            } else {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(stream) => {
                        stream.set_nodelay(true).map_err(PoolError::Connect)?;
                        AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello)
                            .await
                            .map_err(PoolError::from)
                    }
                    Err(e) => Err(PoolError::Connect(e)),
                }
            };
            match opened {
                Ok(conn) => return Ok(conn),
                Err(e @ PoolError::Setup(_)) => return Err(e),
                Err(e) => last = Some(e),
            }
        }
        Err(
            last.unwrap_or(PoolError::Unreachable(Unreachable::NoAddress {
                host: self.host.clone(),
            })),
        )
    }
}

/// An error of the TLS upgrade or of authentication: unless the server says to try later, only
/// new settings can help.
fn setup(e: Error) -> PoolError {
    if e.is_transient() {
        PoolError::Smtp(e)
    } else {
        PoolError::Setup(e.to_string())
    }
}

/// Why a message did not go out.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A reply of the server, or a failure inside the SMTP session.
    #[error(transparent)]
    Smtp(#[from] Error),
    #[error("connecting to the SMTP server: {0}")]
    Connect(std::io::Error),
    /// The account's settings cannot work (see the module's documentation).
    #[error("{0}")]
    Setup(String),
    /// Resolving the host failed, or it resolves only to refused addresses.
    #[error(transparent)]
    Unreachable(Unreachable),
    #[error("the SMTP server did not answer within {0:?}")]
    Timeout(Duration),
}

impl From<Unreachable> for PoolError {
    fn from(e: Unreachable) -> Self {
        match e {
            refused @ Unreachable::Refused { .. } => Self::Setup(refused.to_string()),
            other => Self::Unreachable(other),
        }
    }
}
