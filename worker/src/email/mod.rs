//! System email: rendering (minijinja; `.html` templates escape every parameter) with the
//! sending organization's branding, and delivery through the configured transport — SMTP
//! (lettre, pooled, rustls) or, in development, the log — or through an organization's
//! connected Gmail or Outlook account ([`OAuthSender`]).

mod oauth;
mod smtp;
mod transport;

use anyhow::Context as _;
use minijinja::{Environment, UndefinedBehavior};
use zoark_core::db::organizations::Branding;
use zoark_jobs::email::SystemTemplate;

pub use oauth::OAuthSender;
pub(crate) use oauth::chain;
pub use transport::{ExtraHeader, Mailer, SendError, build, inactive_account, mailbox};

/// A message ready to send.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("layout.txt", include_str!("templates/layout.txt")),
    ("invitation.html", include_str!("templates/invitation.html")),
    ("invitation.txt", include_str!("templates/invitation.txt")),
    (
        "password_reset.html",
        include_str!("templates/password_reset.html"),
    ),
    (
        "password_reset.txt",
        include_str!("templates/password_reset.txt"),
    ),
    (
        "email_verification.html",
        include_str!("templates/email_verification.html"),
    ),
    (
        "email_verification.txt",
        include_str!("templates/email_verification.txt"),
    ),
    (
        "account_test.html",
        include_str!("templates/account_test.html"),
    ),
    (
        "account_test.txt",
        include_str!("templates/account_test.txt"),
    ),
    (
        "task_assignment.html",
        include_str!("templates/task_assignment.html"),
    ),
    (
        "task_assignment.txt",
        include_str!("templates/task_assignment.txt"),
    ),
    (
        "approval_request.html",
        include_str!("templates/approval_request.html"),
    ),
    (
        "approval_request.txt",
        include_str!("templates/approval_request.txt"),
    ),
    (
        "approval_nudge.html",
        include_str!("templates/approval_nudge.html"),
    ),
    (
        "approval_nudge.txt",
        include_str!("templates/approval_nudge.txt"),
    ),
    ("reminder.html", include_str!("templates/reminder.html")),
    ("reminder.txt", include_str!("templates/reminder.txt")),
    (
        "timesheet_reminder.html",
        include_str!("templates/timesheet_reminder.html"),
    ),
    (
        "timesheet_reminder.txt",
        include_str!("templates/timesheet_reminder.txt"),
    ),
];

/// The subject line, a template rendered without escaping (a header, not HTML).
fn subject_template(template: SystemTemplate) -> &'static str {
    match template {
        SystemTemplate::Invitation => {
            "{{ inviter_name }} invited you to {{ organization_name }} on Zoark"
        }
        SystemTemplate::PasswordReset => "Reset your Zoark password",
        SystemTemplate::EmailVerification => "Confirm your email address for Zoark",
        SystemTemplate::AccountTest => "Zoark test message from {{ display_name }}",
        SystemTemplate::TaskAssignment => "{{ assigner_name }} assigned you: {{ task_title }}",
        SystemTemplate::ApprovalRequest => {
            "Approval needed: {{ item_kind }} \"{{ item_title }}\" ({{ stage_name }})"
        }
        SystemTemplate::ApprovalNudge => {
            "{% if escalated %}Escalated to you: {{ item_kind }} \"{{ item_title }}\" awaits approval\
             {% else %}Still waiting for your approval: {{ item_kind }} \"{{ item_title }}\"{% endif %}"
        }
        SystemTemplate::Reminder => "Reminder: {{ title }}",
        SystemTemplate::TimesheetReminder => "Your timesheet for {{ period }}",
    }
}

fn templates() -> Result<Environment<'static>, minijinja::Error> {
    let mut env = Environment::new();
    // A missing parameter fails the render instead of leaving a blank; optional ones are
    // guarded with `is defined` in the templates.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    for (name, source) in TEMPLATES {
        env.add_template(name, source)?;
    }
    Ok(env)
}

/// Renders `template` with `params` (a JSON object holding the template's required
/// parameters) and the sender's `branding`: its name in the header and footer, its logo when
/// set, its color (only a valid `#rrggbb`, else Zoark's blue) on buttons.
///
/// # Errors
/// A template error, e.g. a missing parameter.
pub fn render(
    template: SystemTemplate,
    params: &serde_json::Value,
    branding: &Branding,
) -> anyhow::Result<Rendered> {
    template.check_params(params)?;
    let env = templates()?;
    let mut context = params.clone();
    let object = context
        .as_object_mut()
        .context("the template parameters are not a JSON object")?;
    object.insert(
        "brand".into(),
        serde_json::json!({
            "name": branding.name,
            "logo_url": branding.logo(),
            "color": branding.color(),
            "platform": *branding == Branding::zoark(),
        }),
    );
    let name = template.as_str();
    let subject = env
        .render_str(subject_template(template), &context)
        .with_context(|| format!("rendering the subject of {name}"))?
        .replace(['\r', '\n'], " ");
    if let Some(object) = context.as_object_mut() {
        object.insert("subject".into(), subject.clone().into());
    }
    let text = env
        .get_template(&format!("{name}.txt"))?
        .render(&context)
        .with_context(|| format!("rendering {name}.txt"))?;
    let html = env
        .get_template(&format!("{name}.html"))?
        .render(&context)
        .with_context(|| format!("rendering {name}.html"))?;
    Ok(Rendered {
        subject,
        text,
        html,
    })
}

/// When `error` says an account's settings cannot work, marks the account `needs_attention`
/// with the reason: its other deliveries then fail at once, and its page says what to fix.
/// A failure to mark is logged (the delivery still fails with the reason).
pub async fn needs_attention(
    ctx: &crate::WorkerContext,
    organization_id: uuid::Uuid,
    account_id: uuid::Uuid,
    error: &SendError,
) {
    let SendError::Account(reason) = error else {
        return;
    };
    let marked = async {
        let mut conn = ctx.pool.acquire().await?;
        zoark_core::db::email_accounts::take_out_of_service(
            &mut conn,
            organization_id,
            account_id,
            zoark_core::db::email_accounts::AccountStatus::NeedsAttention,
            reason,
        )
        .await
    }
    .await;
    match marked {
        Ok(()) => {
            tracing::warn!(email.account_id = %account_id, email.reason = %reason, "the sending account needs attention");
        }
        Err(e) => {
            tracing::error!(email.account_id = %account_id, error = %e, "marking the sending account as needing attention failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// An organization whose name needs escaping, with a logo and a color.
    fn acme() -> Branding {
        Branding {
            name: "Acme & Sons".into(),
            logo_url: Some("https://cdn.acme.example/logo.png?size=2&v=\"1\"".into()),
            primary_color: Some("#c0ffee".into()),
        }
    }

    const HOSTILE: &str = "<script>alert(1)</script> & co";

    /// Every template with its params, each user-supplied text set to [`HOSTILE`].
    fn every_template() -> Vec<(SystemTemplate, Value)> {
        vec![
            (
                SystemTemplate::Invitation,
                json!({"inviter_name": HOSTILE, "organization_name": "Tom & Jerry", "role": "member",
                       "accept_url": "https://zoark.example/accept-invitation?token=abc",
                       "expires_at": "2026-12-03 10:00 UTC"}),
            ),
            (
                SystemTemplate::PasswordReset,
                json!({"name": HOSTILE, "reset_url": "https://x/r?token=t", "expires_at": "soon"}),
            ),
            (
                SystemTemplate::AccountTest,
                json!({"display_name": HOSTILE, "from_address": "news@acme.example",
                       "requested_by": "Ada"}),
            ),
            (
                SystemTemplate::TaskAssignment,
                json!({"assignee_name": "Grace", "assigner_name": "Ada",
                       "task_title": HOSTILE, "project_name": "Engines",
                       "due_date": "2026-12-01", "task_url": "https://zoark.example/tasks/1"}),
            ),
            (
                SystemTemplate::ApprovalRequest,
                json!({"approver_name": "Grace", "requester_name": "Ada",
                       "item_title": HOSTILE, "item_kind": "invoice", "stage_name": "Finance",
                       "amount": "€1,200.00", "approve_url": "https://zoark.example/approvals/1"}),
            ),
            (
                SystemTemplate::ApprovalNudge,
                json!({"approver_name": "Grace", "item_title": HOSTILE, "item_kind": "invoice",
                       "waiting_since": "2026-11-20", "escalated": false,
                       "approve_url": "https://zoark.example/approvals/1"}),
            ),
            (
                SystemTemplate::Reminder,
                json!({"recipient_name": "Grace", "title": "Renew the lease",
                       "body": HOSTILE, "due_at": "2026-12-24 09:00 UTC",
                       "url": "https://zoark.example/reminders/1"}),
            ),
            (
                SystemTemplate::EmailVerification,
                json!({"name": HOSTILE, "verify_url": "https://zoark.example/verify-email?token=t",
                       "expires_at": "2026-12-07 10:00 UTC"}),
            ),
            (
                SystemTemplate::TimesheetReminder,
                json!({"recipient_name": HOSTILE, "period": "week of 2026-11-23",
                       "hours_logged": 12.5, "hours_expected": 40,
                       "timesheet_url": "https://zoark.example/timesheets/2026-w48"}),
            ),
        ]
    }

    #[test]
    fn every_template_renders_with_its_params_and_the_organizations_branding() {
        for (template, params) in every_template() {
            let r = render(template, &params, &acme())
                .unwrap_or_else(|e| panic!("{}: {e:#}", template.as_str()));
            let name = template.as_str();
            assert!(!r.subject.is_empty(), "{name}");
            assert!(
                r.html.contains("Sent by Acme &amp; Sons via Zoark."),
                "{name}"
            );
            assert!(r.text.contains("Sent by Acme & Sons via Zoark."), "{name}");
            assert!(
                r.html.contains(
                    "<img src=\"https:&#x2f;&#x2f;cdn.acme.example&#x2f;logo.png?size=2&amp;v=&quot;1&quot;\" \
                     alt=\"Acme &amp; Sons\""
                ),
                "{name}: {}",
                r.html
            );
            assert!(r.html.contains("border-top:4px solid #c0ffee"), "{name}");
            if template != SystemTemplate::AccountTest {
                assert!(r.html.contains("background:#c0ffee"), "{name}: the button");
            }
            assert!(!r.html.contains("#1f6feb"), "{name}");
        }
    }

    #[test]
    fn user_text_is_escaped_in_html_and_verbatim_in_text() {
        for (template, params) in every_template() {
            let name = template.as_str();
            let r = render(template, &params, &acme()).unwrap();
            assert!(
                r.html
                    .contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt; &amp; co"),
                "{name}: {}",
                r.html
            );
            assert!(!r.html.contains("<script>"), "{name}");
            assert!(r.text.contains(HOSTILE), "{name}: {}", r.text);
            assert!(
                !r.text.contains("&lt;") && !r.text.contains("&amp;"),
                "{name}"
            );
        }
    }

    #[test]
    fn the_texts_say_what_happened() {
        let texts: Vec<(SystemTemplate, Rendered)> = every_template()
            .into_iter()
            .map(|(t, p)| (t, render(t, &p, &acme()).unwrap()))
            .collect();
        let text = |t: SystemTemplate| {
            &texts
                .iter()
                .find(|(x, _)| *x == t)
                .map(|(_, r)| r)
                .unwrap()
                .text
        };
        assert!(
            text(SystemTemplate::Invitation)
                .contains(&format!("{HOSTILE} invited you to join Tom & Jerry"))
        );
        assert!(
            text(SystemTemplate::Invitation)
                .contains("https://zoark.example/accept-invitation?token=abc")
        );
        assert!(text(SystemTemplate::TaskAssignment).contains(&format!(
            "Ada assigned you the task \"{HOSTILE}\" in the project Engines.\nIt is due on 2026-12-01."
        )));
        assert!(text(SystemTemplate::TaskAssignment).contains("https://zoark.example/tasks/1"));
        assert!(text(SystemTemplate::ApprovalRequest).contains(&format!(
            "Ada submitted the invoice \"{HOSTILE}\" for €1,200.00. It waits for your approval at the Finance stage."
        )));
        assert!(text(SystemTemplate::ApprovalNudge).contains("since 2026-11-20"));
        assert!(text(SystemTemplate::Reminder).contains(&format!(
            "Reminder: Renew the lease\n\n{HOSTILE}\n\nDue: 2026-12-24 09:00 UTC"
        )));
        assert!(text(SystemTemplate::Reminder).contains("Open: https://zoark.example/reminders/1"));
        assert!(
            text(SystemTemplate::TimesheetReminder)
                .contains("week of 2026-11-23 shows 12.5 of the 40 hours expected")
        );
        let reset = texts
            .iter()
            .find(|(t, _)| *t == SystemTemplate::PasswordReset)
            .map(|(_, r)| r)
            .unwrap();
        // minijinja escapes `/` in HTML too (`&#x2f;`), which browsers decode in attributes.
        assert!(reset.html.contains("x&#x2f;r?token=t"));
        assert!(
            reset.text.starts_with(&format!("Hello {HOSTILE},")),
            "{}",
            reset.text
        );
    }

    #[test]
    fn a_missing_required_param_is_an_error_for_every_template() {
        for (template, params) in every_template() {
            for required in template.required_params() {
                let mut without = params.clone();
                without.as_object_mut().unwrap().remove(*required);
                let err = render(template, &without, &acme())
                    .err()
                    .unwrap_or_else(|| panic!("{} without {required}", template.as_str()));
                assert!(err.to_string().contains(required), "{err:#}");
                let mut null = params.clone();
                null[*required] = Value::Null;
                assert!(
                    render(template, &null, &acme()).is_err(),
                    "{required}: null"
                );
            }
        }
        assert!(render(SystemTemplate::Reminder, &json!("nope"), &acme()).is_err());
    }

    #[test]
    fn templates_refuse_an_undefined_variable() {
        // The belt to `check_params`' braces: a template naming a parameter nobody passes.
        let env = templates().unwrap();
        assert!(env.render_str("Hello {{ nobody }}", json!({})).is_err());
        assert!(
            env.render_str("{% if nobody %}x{% endif %}", json!({}))
                .is_err()
        );
    }

    #[test]
    fn optional_params_may_be_absent_or_null() {
        let task = json!({"assignee_name": "Grace", "assigner_name": "Ada", "task_title": "Oil",
                          "project_name": "Engines", "task_url": "https://z/t"});
        let r = render(SystemTemplate::TaskAssignment, &task, &acme()).unwrap();
        assert!(
            !r.text.contains("due") && !r.html.contains("due on"),
            "{}",
            r.text
        );

        let approval = json!({"approver_name": "Grace", "requester_name": "Ada",
                              "item_title": "INV-7", "item_kind": "invoice", "stage_name": "Finance",
                              "amount": null, "approve_url": "https://z/a"});
        let r = render(SystemTemplate::ApprovalRequest, &approval, &acme()).unwrap();
        assert!(
            r.text.contains("submitted the invoice \"INV-7\". It waits"),
            "{}",
            r.text
        );

        let reminder = json!({"recipient_name": "Grace", "title": "Call", "body": "Call Bob",
                              "due_at": null});
        let r = render(SystemTemplate::Reminder, &reminder, &acme()).unwrap();
        assert!(
            !r.text.contains("Due:") && !r.text.contains("Open:"),
            "{}",
            r.text
        );
        assert!(!r.html.contains("Due:") && !r.html.contains(">Open<"));
    }

    #[test]
    fn an_escalated_nudge_says_so_in_its_subject_and_text() {
        let mut params = json!({"approver_name": "Grace", "item_title": "INV-7",
                                "item_kind": "invoice", "waiting_since": "2026-11-20",
                                "escalated": false, "approve_url": "https://z/a"});
        let nudge = render(SystemTemplate::ApprovalNudge, &params, &acme()).unwrap();
        params["escalated"] = json!(true);
        let escalated = render(SystemTemplate::ApprovalNudge, &params, &acme()).unwrap();
        assert_eq!(
            nudge.subject,
            "Still waiting for your approval: invoice \"INV-7\""
        );
        assert_eq!(
            escalated.subject,
            "Escalated to you: invoice \"INV-7\" awaits approval"
        );
        assert!(
            nudge
                .text
                .contains("A reminder: the invoice \"INV-7\" has been waiting")
        );
        assert!(!nudge.text.contains("next approver"));
        assert!(
            escalated
                .text
                .contains("passed on to you as the next approver")
        );
        assert!(
            escalated
                .html
                .contains("passed on to you as the next approver")
        );
    }

    #[test]
    fn subjects_are_one_line() {
        for (template, mut params) in every_template() {
            for value in params.as_object_mut().unwrap().values_mut() {
                if value.is_string() {
                    *value = json!("line one\r\nBcc: victim@example.com\nthree");
                }
            }
            let r = render(template, &params, &acme()).unwrap();
            assert!(
                !r.subject.contains(['\r', '\n']),
                "{}: {:?}",
                template.as_str(),
                r.subject
            );
        }
        let r = render(
            SystemTemplate::Invitation,
            &json!({"inviter_name": "Ada\r\nBcc: x@y", "organization_name": "Engines",
                    "role": "member", "accept_url": "https://z/a", "expires_at": "soon"}),
            &acme(),
        )
        .unwrap();
        assert_eq!(r.subject, "Ada  Bcc: x@y invited you to Engines on Zoark");
    }

    #[test]
    fn a_stored_color_that_is_not_rrggbb_falls_back_to_zoark_blue() {
        let params = json!({"name": "Ada", "reset_url": "https://x/r", "expires_at": "soon"});
        for bad in [
            "red",
            "#fff",
            "#12345g",
            "#123456;background:url(https://evil.example/x)",
            "#1234567",
            "",
        ] {
            let branding = Branding {
                primary_color: Some(bad.into()),
                ..acme()
            };
            let r = render(SystemTemplate::PasswordReset, &params, &branding).unwrap();
            assert!(r.html.contains("background:#1f6feb"), "{bad}");
            assert!(!r.html.contains("evil.example"), "{bad}");
        }
        let bare = Branding {
            logo_url: None,
            primary_color: None,
            ..acme()
        };
        let r = render(SystemTemplate::PasswordReset, &params, &bare).unwrap();
        assert!(r.html.contains("background:#1f6feb") && !r.html.contains("<img"));
        // Without a logo the name stands in the header, in the color.
        assert!(
            r.html.contains("color:#1f6feb\">Acme &amp; Sons</span>"),
            "{}",
            r.html
        );
    }

    #[test]
    fn a_logo_that_is_not_http_is_left_out() {
        let params = json!({"name": "Ada", "reset_url": "https://x/r", "expires_at": "soon"});
        let branding = Branding {
            logo_url: Some("javascript:alert(1)".into()),
            ..acme()
        };
        let r = render(SystemTemplate::PasswordReset, &params, &branding).unwrap();
        assert!(!r.html.contains("<img") && !r.html.contains("javascript"));
    }

    #[test]
    fn without_an_organization_the_email_carries_zoarks_branding() {
        let params = json!({"name": "Ada", "reset_url": "https://x/r", "expires_at": "soon"});
        let r = render(SystemTemplate::PasswordReset, &params, &Branding::zoark()).unwrap();
        assert!(r.html.contains("Sent by Zoark.") && !r.html.contains("via Zoark"));
        assert!(r.text.contains("Sent by Zoark."));
        assert!(r.html.contains("background:#1f6feb") && !r.html.contains("<img"));
        assert_eq!(r.subject, "Reset your Zoark password");
    }
}
