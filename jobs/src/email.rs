//! Email jobs. [`SendSystemEmail`] carries one message the platform itself sends (invitation,
//! password reset); the email issue adds organization accounts, broadcasts and delivery rows.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Job;

/// Which system email; each has a text and an HTML template in `worker/src/email/templates/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SystemTemplate {
    /// Params: `inviter_name`, `organization_name`, `role`, `accept_url`, `expires_at`.
    Invitation,
    /// Params: `name`, `reset_url`, `expires_at`.
    PasswordReset,
    /// Params: `display_name`, `from_address`, `requested_by`.
    AccountTest,
}

impl SystemTemplate {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invitation => "invitation",
            Self::PasswordReset => "password_reset",
            Self::AccountTest => "account_test",
        }
    }
}

/// One system email to one address. The template parameters hold a secret (the link's
/// single-use token), so they travel sealed with `ZOARK_ENCRYPTION_KEY`: the jobs table, its
/// API and its logs never show them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendSystemEmail {
    pub to: String,
    pub template: SystemTemplate,
    /// base64 of the AES-256-GCM sealed JSON object of template parameters.
    pub sealed_params: String,
}

impl Job for SendSystemEmail {
    const NAME: &'static str = "email.send_system";
    const QUEUE: &'static str = "email";
    const MAX_ATTEMPTS: i32 = 10;
    const TIMEOUT: Duration = Duration::from_secs(60);
}

/// A test message through one of the organization's sending accounts, to prove its settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SendTestEmail {
    pub account_id: uuid::Uuid,
    pub to: String,
    /// Who asked, for the message's text.
    pub requested_by: String,
}

impl Job for SendTestEmail {
    const NAME: &'static str = "email.send_test";
    const QUEUE: &'static str = "email";
    const MAX_ATTEMPTS: i32 = 3;
    const TIMEOUT: Duration = Duration::from_secs(60);
}
