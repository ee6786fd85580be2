//! Delivery of a built message: SMTP (lettre, pooled, rustls) or, in development, the log.
//! Errors are classified for the job engine: a permanent refusal fails at once, a bounce also
//! suppresses the address, anything else retries with backoff.

use anyhow::Context as _;
use lettre::{
    Message,
    message::{Mailbox, MultiPart},
    transport::smtp::authentication::Credentials,
};
use secrecy::ExposeSecret as _;
use zoark_core::{
    db::email_accounts::AccountStatus,
    outbound::OutboundPolicy,
    settings::{EmailSettings, EmailTransport, SmtpSecurity},
};

use super::{
    Rendered,
    smtp::{PoolError, SmtpPool},
};

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Refused for good (SMTP 5xx, a provider's 4xx other than 429, an unusable address or a
    /// disconnected account): retrying cannot help.
    #[error("refused permanently: {0}")]
    Permanent(String),
    /// The recipient's mailbox does not exist (SMTP 550, 551, 553): fail, and suppress the
    /// address.
    #[error("bounced: {0}")]
    Bounced(String),
    /// Anything that may pass later (SMTP 4xx, 429, a provider's 5xx, connection, timeout).
    #[error("failed, will retry: {0}")]
    Transient(String),
    /// The sending account's settings cannot work (a refused address, TLS unavailable, no
    /// usable authentication, credentials refused): fail, and mark the account as needing
    /// attention so that its other deliveries fail at once.
    #[error("the sending account needs attention: {0}")]
    Account(String),
}

impl SendError {
    /// The job outcome: permanent refusals end the job, the rest retry.
    pub fn into_job_error(self) -> crate::engine::JobError {
        match self {
            Self::Permanent(_) | Self::Bounced(_) | Self::Account(_) => {
                crate::engine::JobError::Fatal(self.into())
            }
            Self::Transient(_) => crate::engine::JobError::Retry(self.into()),
        }
    }

    fn from_smtp(e: &lettre::transport::smtp::Error) -> Self {
        match e.status() {
            Some(code) if e.is_permanent() => match code.to_string().as_str() {
                "550" | "551" | "553" => Self::Bounced(e.to_string()),
                // Authentication required: the account has no credentials for this server.
                "530" => Self::Account(e.to_string()),
                _ => Self::Permanent(e.to_string()),
            },
            _ if e.is_permanent() => Self::Permanent(e.to_string()),
            _ => Self::Transient(e.to_string()),
        }
    }
}

/// The configured transport.
pub enum Mailer {
    /// Development: the message is written to the log.
    Console { from: Mailbox },
    /// SMTP: our pool of connections (see [`super::smtp`]).
    Smtp { from: Mailbox, pool: SmtpPool },
}

impl Mailer {
    /// The platform's own transport (`ZOARK_EMAIL_*`); the deployment chose its relay, so no
    /// outbound restriction applies.
    ///
    /// # Errors
    /// An unusable sender address, or no SMTP host.
    pub fn from_settings(settings: &EmailSettings) -> anyhow::Result<Self> {
        let from: Mailbox = settings
            .from_address
            .parse()
            .context("ZOARK_EMAIL_FROM is not a mailbox")?;
        match settings.transport {
            EmailTransport::Console => Ok(Self::Console { from }),
            EmailTransport::Smtp => {
                let host = settings
                    .smtp_host
                    .as_deref()
                    .context("ZOARK_SMTP_HOST is not set")?;
                let credentials = match (&settings.smtp_username, &settings.smtp_password) {
                    (Some(user), Some(password)) => {
                        Some((user.clone(), password.expose_secret().to_owned()))
                    }
                    _ => None,
                };
                Ok(Self::smtp(
                    from,
                    (host, settings.smtp_port),
                    settings.smtp_security,
                    credentials,
                    OutboundPolicy::unrestricted(),
                ))
            }
        }
    }

    /// An SMTP transport (pooled) to `host:port`, reaching what `policy` permits.
    pub fn smtp(
        from: Mailbox,
        server: (&str, u16),
        security: SmtpSecurity,
        credentials: Option<(String, String)>,
        policy: OutboundPolicy,
    ) -> Self {
        let timeout = std::time::Duration::from_secs(30);
        let credentials = credentials.map(|(user, password)| Credentials::new(user, password));
        Self::Smtp {
            from,
            pool: SmtpPool::new(server, security, credentials, timeout, policy),
        }
    }

    /// The sender of the messages this transport sends.
    pub fn from(&self) -> &Mailbox {
        match self {
            Self::Console { from } | Self::Smtp { from, .. } => from,
        }
    }

    /// Sends `message` to `to`; returns the message id.
    ///
    /// # Errors
    /// [`SendError`], classified for retrying.
    pub async fn send(&self, to: &str, message: &Rendered) -> Result<String, SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("`{to}` is not an address: {e}")))?;
        let message_id = format!("<{}@zoark>", uuid::Uuid::now_v7());
        let email = build(self.from().clone(), to, message, &message_id, &[])?;
        self.send_message(email).await?;
        Ok(message_id)
    }

    /// Sends a built message.
    ///
    /// # Errors
    /// [`SendError`], classified for retrying.
    pub async fn send_message(&self, email: Message) -> Result<(), SendError> {
        match self {
            Self::Console { .. } => {
                tracing::info!(
                    email.to = ?email.envelope().to(),
                    email.message = %String::from_utf8_lossy(&email.formatted()),
                    "email (console transport, not sent)"
                );
                Ok(())
            }
            Self::Smtp { pool, .. } => pool
                .send(email.envelope(), &email.formatted())
                .await
                .map_err(|e| match e {
                    PoolError::Smtp(e) => SendError::from_smtp(&e),
                    PoolError::Setup(why) => SendError::Account(why),
                    other => SendError::Transient(other.to_string()),
                }),
        }
    }
}

/// The refusal for an account that is not `active` (it must be reconnected, or is disabled).
pub fn inactive_account(status: AccountStatus, reason: Option<&str>) -> SendError {
    SendError::Permanent(format!(
        "the sending account cannot send (status `{}`){}",
        status.as_str(),
        reason.map(|r| format!(": {r}")).unwrap_or_default()
    ))
}

/// `Display Name <address>`, or the bare address when the name cannot be part of a mailbox.
///
/// # Errors
/// [`SendError::Permanent`] for an unusable address.
pub fn mailbox(display_name: &str, address: &str) -> Result<Mailbox, SendError> {
    format!("{display_name} <{address}>")
        .parse()
        .or_else(|_| address.parse())
        .map_err(|e| SendError::Permanent(format!("the sender address is unusable: {e}")))
}

impl Mailer {
    /// The pooled transport of an organization's SMTP account (its password opened with `key`),
    /// reaching only what the platform's outbound `policy` permits.
    ///
    /// # Errors
    /// [`SendError::Permanent`]: a password sealed under another key, unusable settings.
    pub fn for_account(
        settings: &zoark_core::Settings,
        organization_id: uuid::Uuid,
        account: &zoark_core::db::email_accounts::Smtp,
    ) -> Result<Self, SendError> {
        let key = &settings.encryption_key;
        let binding = zoark_core::crypto::Binding::new(
            zoark_core::db::email_accounts::SMTP_PASSWORD,
            organization_id,
            account.id,
        );
        let password = account
            .sealed_password
            .as_deref()
            .map(|sealed| zoark_core::crypto::open_bound(key, sealed, &binding))
            .transpose()
            .map_err(|e| {
                SendError::Permanent(format!("the stored password cannot be opened: {e}"))
            })?
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        let security: SmtpSecurity = account.security.parse().map_err(SendError::Permanent)?;
        let from = mailbox(&account.display_name, &account.from_address)?;
        Ok(Self::smtp(
            from,
            (&account.host, account.port),
            security,
            account.username.clone().zip(password),
            settings.outbound.clone(),
        ))
    }
}

/// A header this crate adds beyond lettre's typed ones (`List-Unsubscribe`, ...).
pub type ExtraHeader = (lettre::message::header::HeaderName, String);

/// An RFC 5322 message: text and HTML alternatives, the given `Message-ID` and extra headers.
///
/// # Errors
/// [`SendError::Permanent`] when the message cannot be built.
pub fn build(
    from: Mailbox,
    to: Mailbox,
    message: &Rendered,
    message_id: &str,
    headers: &[ExtraHeader],
) -> Result<Message, SendError> {
    let mut builder = Message::builder()
        .from(from)
        .to(to)
        .subject(&message.subject)
        .message_id(Some(message_id.to_owned()));
    for (name, value) in headers {
        builder = builder.raw_header(lettre::message::header::HeaderValue::new(
            name.clone(),
            value.clone(),
        ));
    }
    builder
        .multipart(MultiPart::alternative_plain_html(
            message.text.clone(),
            message.html.clone(),
        ))
        .map_err(|e| SendError::Permanent(format!("building the message: {e}")))
}
