//! A pool of SMTP connections with `TCP_NODELAY`.
//!
//! lettre 0.11.23's own transport writes a message's body and its `<CRLF>.<CRLF>` terminator as
//! two writes on a socket with Nagle's algorithm on: the terminator waits for the server's
//! delayed ACK, 40 ms on Linux, on every message (fixed upstream in lettre#1159, not released
//! yet). Measured with `cargo xtask bench email`: 334 deliveries/s with 20 slots before, see
//! docs/benchmarks.md for after. This pool opens the TCP connection itself, turns Nagle off and
//! hands the socket to lettre's SMTP session (`AsyncSmtpConnection::connect_with_transport`),
//! which still does the protocol: EHLO, STARTTLS, AUTH, MAIL/RCPT/DATA. Implicit TLS (port
//! 465) stays on lettre's transport, which owns that handshake.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use lettre::{
    address::Envelope,
    transport::smtp::{
        Error,
        authentication::{Credentials, Mechanism},
        client::{AsyncSmtpConnection, TlsParameters},
        extension::ClientId,
    },
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
    starttls: bool,
    credentials: Option<Credentials>,
    hello: ClientId,
    timeout: Duration,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl SmtpPool {
    pub fn new(
        host: &str,
        port: u16,
        starttls: bool,
        credentials: Option<Credentials>,
        timeout: Duration,
    ) -> Self {
        Self {
            host: host.to_owned(),
            port,
            starttls,
            credentials,
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
        let session = async {
            let stream = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .map_err(PoolError::Connect)?;
            stream.set_nodelay(true).map_err(PoolError::Connect)?;
            let mut conn =
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &self.hello).await?;
            if self.starttls {
                conn.starttls(TlsParameters::new(self.host.clone())?, &self.hello)
                    .await?;
            }
            if let Some(credentials) = &self.credentials {
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                    .await?;
            }
            Ok::<_, PoolError>(conn)
        };
        tokio::time::timeout(self.timeout, session)
            .await
            .map_err(|_| PoolError::Timeout(self.timeout))?
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
    #[error("the SMTP server did not answer within {0:?}")]
    Timeout(Duration),
}
