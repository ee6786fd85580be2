//! System email: rendering (minijinja; `.html` templates escape every parameter) and delivery
//! through the configured transport — SMTP (lettre, pooled, rustls) or, in development, the
//! log — or through an organization's connected Gmail or Outlook account ([`OAuthSender`]).

mod oauth;
mod smtp;
mod transport;

use anyhow::Context as _;
use minijinja::Environment;
use zoark_jobs::email::SystemTemplate;

pub use oauth::OAuthSender;
pub use transport::{ExtraHeader, Mailer, SendError, build, inactive_account, mailbox};

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
