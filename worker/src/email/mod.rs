//! System email: rendering (minijinja; `.html` templates escape every parameter) and delivery
//! through the configured transport — SMTP (lettre, pooled, rustls) or, in development, the
//! log. The email issue adds organization accounts, branding and delivery tracking.

use anyhow::Context as _;
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Mailbox, MultiPart},
    transport::smtp::authentication::Credentials,
};
use minijinja::Environment;
use secrecy::ExposeSecret as _;
use zoark_core::settings::{EmailSettings, EmailTransport, SmtpSecurity};
use zoark_jobs::email::SystemTemplate;

/// A message ready to send.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

fn templates() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    env.add_template("layout.html", include_str!("templates/layout.html"))?;
    env.add_template("invitation.html", include_str!("templates/invitation.html"))?;
    env.add_template("invitation.txt", include_str!("templates/invitation.txt"))?;
    env.add_template(
        "password_reset.html",
        include_str!("templates/password_reset.html"),
    )?;
    env.add_template(
        "password_reset.txt",
        include_str!("templates/password_reset.txt"),
    )?;
    env.add_template(
        "account_test.html",
        include_str!("templates/account_test.html"),
    )?;
    env.add_template(
        "account_test.txt",
        include_str!("templates/account_test.txt"),
    )?;
    Ok(env)
}

/// Renders `template` with `params` (a JSON object).
///
/// # Errors
/// A template error, e.g. a missing parameter.
pub fn render(template: SystemTemplate, params: &serde_json::Value) -> anyhow::Result<Rendered> {
    let env = templates()?;
    let text_param = |name: &str| params[name].as_str().unwrap_or_default().to_owned();
    let subject = match template {
        SystemTemplate::Invitation => format!(
            "{} invited you to {} on Zoark",
            text_param("inviter_name"),
            text_param("organization_name")
        ),
        SystemTemplate::PasswordReset => "Reset your Zoark password".to_owned(),
        SystemTemplate::AccountTest => {
            format!("Zoark test message from {}", text_param("display_name"))
        }
    };
    let mut context = params.clone();
    if let Some(object) = context.as_object_mut() {
        object.insert("subject".into(), subject.clone().into());
    }
    let name = template.as_str();
    let text = env
        .get_template(&format!("{name}.txt"))?
        .render(&context)
        .with_context(|| format!("rendering {name}.txt"))?;
    let html = env
        .get_template(&format!("{name}.html"))?
        .render(&context)
        .with_context(|| format!("rendering {name}.html"))?;
    Ok(Rendered {
        subject: subject.replace(['\r', '\n'], " "),
        text,
        html,
    })
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused for good (5xx) or the address is unusable: retrying cannot help.
    #[error("refused permanently: {0}")]
    Permanent(String),
    /// Anything that may pass later (4xx, connection, timeout).
    #[error("failed, will retry: {0}")]
    Transient(String),
}

/// The configured transport.
pub enum Mailer {
    /// Development: the message is written to the log.
    Console { from: Mailbox },
    Smtp {
        from: Mailbox,
        transport: AsyncSmtpTransport<Tokio1Executor>,
    },
}

impl Mailer {
    /// # Errors
    /// An unusable sender address or SMTP host.
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
                Self::smtp(
                    from,
                    host,
                    settings.smtp_port,
                    settings.smtp_security,
                    credentials,
                )
            }
        }
    }

    /// An SMTP transport (pooled) to `host:port`.
    ///
    /// # Errors
    /// An unusable host name for TLS.
    pub fn smtp(
        from: Mailbox,
        host: &str,
        port: u16,
        security: SmtpSecurity,
        credentials: Option<(String, String)>,
    ) -> anyhow::Result<Self> {
        let builder = match security {
            SmtpSecurity::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpSecurity::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)?,
            SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)?,
        };
        let mut builder = builder
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(30)));
        if let Some((user, password)) = credentials {
            builder = builder.credentials(Credentials::new(user, password));
        }
        Ok(Self::Smtp {
            from,
            transport: builder.build(),
        })
    }

    /// Sends `message` to `to`; returns the message id.
    ///
    /// # Errors
    /// [`SendError`], classified for retrying.
    pub async fn send(&self, to: &str, message: &Rendered) -> Result<String, SendError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| SendError::Permanent(format!("`{to}` is not an address: {e}")))?;
        let (from, transport) = match self {
            Self::Console { from } => (from, None),
            Self::Smtp { from, transport } => (from, Some(transport)),
        };
        let message_id = format!("<{}@zoark>", uuid::Uuid::now_v7());
        let email = Message::builder()
            .from(from.clone())
            .to(to.clone())
            .subject(&message.subject)
            .message_id(Some(message_id.clone()))
            .multipart(MultiPart::alternative_plain_html(
                message.text.clone(),
                message.html.clone(),
            ))
            .map_err(|e| SendError::Permanent(format!("building the message: {e}")))?;
        match transport {
            None => {
                tracing::info!(
                    email.to = %to,
                    email.subject = %message.subject,
                    email.text = %message.text,
                    "email (console transport, not sent)"
                );
                Ok(message_id)
            }
            Some(transport) => match transport.send(email).await {
                Ok(_) => Ok(message_id),
                Err(e) if e.is_permanent() => Err(SendError::Permanent(e.to_string())),
                Err(e) => Err(SendError::Transient(e.to_string())),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_content_is_escaped_in_html_and_kept_in_text() {
        let params = serde_json::json!({
            "inviter_name": "<script>alert(1)</script>",
            "organization_name": "Tom & Jerry",
            "role": "member",
            "accept_url": "https://zoark.example/accept-invitation?token=abc",
            "expires_at": "2026-12-03 10:00 UTC",
        });
        let r = render(SystemTemplate::Invitation, &params).unwrap();
        assert!(r.html.contains("&lt;script&gt;") && !r.html.contains("<script>"));
        assert!(r.html.contains("Tom &amp; Jerry"));
        assert!(
            r.text
                .contains("<script>alert(1)</script> invited you to join Tom & Jerry")
        );
        assert!(
            r.text
                .contains("https://zoark.example/accept-invitation?token=abc")
        );
        assert_eq!(
            r.subject,
            "<script>alert(1)</script> invited you to Tom & Jerry on Zoark"
        );
        let reset = render(
            SystemTemplate::PasswordReset,
            &serde_json::json!({"name": "Ada", "reset_url": "https://x/r?token=t", "expires_at": "soon"}),
        )
        .unwrap();
        // minijinja escapes `/` in HTML too (`&#x2f;`), which browsers decode in attributes.
        assert!(reset.html.contains("x&#x2f;r?token=t") && reset.text.contains("Hello Ada"));
    }
}
