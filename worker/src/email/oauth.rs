//! Sending through a connected Gmail or Outlook account: the Gmail API's `users.messages.send`
//! and Microsoft Graph's `sendMail` (MIME), with a bearer access token refreshed shortly before
//! it expires and once after a 401. A refused refresh token takes the account out of service
//! (`needs_reauth`); provider answers are classified for retrying like SMTP ones.

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use chrono::{DateTime, Utc};
use lettre::Message;
use secrecy::{ExposeSecret as _, SecretString};
use sqlx::PgPool;
use url::Url;
use uuid::Uuid;
use zoark_core::{
    Settings, crypto,
    db::email_accounts::{self, AccountStatus, OAuthSending},
    oauth::{self, Provider, RefreshError},
};

use super::SendError;

/// A token expiring sooner than this is refreshed before sending.
const EXPIRY_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(60);
/// How much of a provider's non-JSON error answer goes into the job's error.
const MAX_ERROR_CHARS: usize = 300;

/// Sends built messages through an organization's OAuth accounts.
#[derive(Clone)]
pub struct OAuthSender {
    pool: PgPool,
    settings: Arc<Settings>,
    http: reqwest::Client,
}

/// The account a send is for.
#[derive(Clone, Copy)]
struct Target {
    organization_id: Uuid,
    id: Uuid,
    provider: Provider,
}

/// One call of the provider's send endpoint.
enum Attempt {
    Sent(String),
    /// 401: the access token was not accepted.
    Unauthorized(String),
    Failed(SendError),
}

impl OAuthSender {
    /// A sender with its own HTTP client (connect timeout 10 s, 30 s per request).
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(pool: PgPool, settings: Arc<Settings>) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            pool,
            settings,
            http,
        })
    }

    /// Sends `email` through the account; returns the provider's message id (Gmail's message
    /// `id`; for Outlook, whose `sendMail` answers without a body, the message's own
    /// `Message-ID`).
    ///
    /// # Errors
    /// [`SendError::Permanent`] for an account that is gone, not active or must be reconnected,
    /// and for a provider's 4xx other than 429; [`SendError::Transient`] for 429, 5xx, timeouts,
    /// connection and database errors.
    #[tracing::instrument(skip_all, fields(org.id = %organization_id, email.account_id = %account_id))]
    pub async fn send(
        &self,
        organization_id: Uuid,
        account_id: Uuid,
        email: Message,
    ) -> Result<String, SendError> {
        let mut conn = self.pool.acquire().await.map_err(database)?;
        let account = email_accounts::oauth_for_sending(&mut conn, organization_id, account_id)
            .await
            .map_err(database)?
            .ok_or_else(gone)?;
        drop(conn);
        let target = Target {
            organization_id,
            id: account_id,
            provider: usable(&account)?,
        };
        let stored = self.open(
            &target,
            email_accounts::OAUTH_ACCESS_TOKEN,
            account.sealed_access_token.as_deref(),
        )?;
        let access = match stored {
            Some(access) if !expires_soon(account.expires_at) => access,
            _ => self.refresh(target, None).await?,
        };
        let raw = email.formatted();
        let message_id = email
            .headers()
            .get_raw("Message-ID")
            .unwrap_or_default()
            .to_owned();
        let fresh = match self
            .attempt(target.provider, &access, &raw, &message_id)
            .await
        {
            Attempt::Sent(id) => return Ok(id),
            Attempt::Failed(e) => return Err(e),
            Attempt::Unauthorized(detail) => {
                tracing::info!(email.detail = %detail, "the access token was refused; refreshing it");
                self.refresh(target, Some(&access)).await?
            }
        };
        match self
            .attempt(target.provider, &fresh, &raw, &message_id)
            .await
        {
            Attempt::Sent(id) => Ok(id),
            Attempt::Failed(e) => Err(e),
            Attempt::Unauthorized(detail) => Err(SendError::Permanent(format!(
                "{detail} (with a freshly refreshed token)"
            ))),
        }
    }

    /// A new access token, under the account's row lock so concurrent senders refresh once.
    /// `stale` is the token the provider refused; without it the refresh is for expiry. Either
    /// way, a token another worker stored meanwhile is used instead.
    async fn refresh(
        &self,
        target: Target,
        stale: Option<&SecretString>,
    ) -> Result<SecretString, SendError> {
        let mut tx = self.pool.begin().await.map_err(database)?;
        let locked =
            email_accounts::lock_oauth_for_refresh(&mut tx, target.organization_id, target.id)
                .await
                .map_err(database)?
                .ok_or_else(gone)?;
        usable(&locked)?;
        if let Some(current) = self.open(
            &target,
            email_accounts::OAUTH_ACCESS_TOKEN,
            locked.sealed_access_token.as_deref(),
        )? {
            let refreshed_meanwhile = match stale {
                None => !expires_soon(locked.expires_at),
                Some(stale) => current.expose_secret() != stale.expose_secret(),
            };
            if refreshed_meanwhile {
                return Ok(current);
            }
        }
        let Some(refresh_token) = self.open(
            &target,
            email_accounts::OAUTH_REFRESH_TOKEN,
            locked.sealed_refresh_token.as_deref(),
        )?
        else {
            let reason = "no refresh token is stored";
            return Err(self.needs_reauth(tx, target, reason).await);
        };
        let tokens = match oauth::refresh(
            &self.settings,
            &self.http,
            target.provider,
            refresh_token.expose_secret(),
        )
        .await
        {
            Ok(tokens) => tokens,
            Err(RefreshError::InvalidGrant(answer)) => {
                let reason = format!(
                    "{} refused the refresh token ({answer})",
                    issuer(target.provider)
                );
                return Err(self.needs_reauth(tx, target, &reason).await);
            }
            Err(e @ RefreshError::Other(_)) => return Err(SendError::Transient(e.to_string())),
        };
        let sealed_access = self.seal(
            &target,
            email_accounts::OAUTH_ACCESS_TOKEN,
            &tokens.access_token,
        )?;
        let sealed_refresh = tokens
            .refresh_token
            .as_ref()
            .map(|t| self.seal(&target, email_accounts::OAUTH_REFRESH_TOKEN, t))
            .transpose()?;
        email_accounts::store_refreshed_tokens(
            &mut tx,
            target.organization_id,
            target.id,
            &sealed_access,
            sealed_refresh.as_deref(),
            tokens.expires_at,
        )
        .await
        .map_err(database)?;
        tx.commit().await.map_err(database)?;
        tracing::info!(
            oauth.rotated_refresh_token = tokens.refresh_token.is_some(),
            "access token refreshed"
        );
        Ok(tokens.access_token)
    }

    /// Marks the account `needs_reauth` with `reason`; the error to fail the send with.
    async fn needs_reauth(
        &self,
        mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
        target: Target,
        reason: &str,
    ) -> SendError {
        let marked = async {
            email_accounts::take_out_of_service(
                &mut tx,
                target.organization_id,
                target.id,
                AccountStatus::NeedsReauth,
                reason,
            )
            .await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = marked {
            return database(e);
        }
        tracing::warn!(email.reason = %reason, "the account must be reconnected");
        SendError::Permanent(format!("the account needs to be reconnected: {reason}"))
    }

    /// One call of the provider's send endpoint.
    async fn attempt(
        &self,
        provider: Provider,
        access: &SecretString,
        raw: &[u8],
        message_id: &str,
    ) -> Attempt {
        let base = &provider.settings(&self.settings).api_base_url;
        let request = match provider {
            Provider::Gmail => endpoint(base, "gmail/v1/users/me/messages/send").map(|url| {
                self.http.post(url).json(&serde_json::json!({
                    "raw": base64::engine::general_purpose::URL_SAFE.encode(raw),
                }))
            }),
            // Graph's MIME send: the message base64-encoded as a text/plain body.
            Provider::Outlook => endpoint(base, "me/sendMail").map(|url| {
                self.http
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, "text/plain")
                    .body(base64::engine::general_purpose::STANDARD.encode(raw))
            }),
        };
        let request = match request {
            Ok(request) => request,
            Err(e) => return Attempt::Failed(e),
        };
        let response = match request.bearer_auth(access.expose_secret()).send().await {
            Ok(response) => response,
            Err(e) => {
                return Attempt::Failed(SendError::Transient(format!(
                    "{} could not be reached: {}",
                    api(provider),
                    chain(&e)
                )));
            }
        };
        let status = response.status();
        if status.is_success() {
            return Attempt::Sent(match provider {
                Provider::Gmail => match response.json::<GmailMessage>().await {
                    Ok(sent) => sent.id,
                    Err(e) => {
                        // Sent all the same: retrying would send it twice.
                        tracing::warn!(error = %chain(&e), "the Gmail API's answer has no message id");
                        message_id.to_owned()
                    }
                },
                Provider::Outlook => message_id.to_owned(),
            });
        }
        let body = response.text().await.unwrap_or_default();
        let detail = format!(
            "{} answered {status}: {}",
            api(provider),
            error_message(&body)
        );
        match status.as_u16() {
            401 => Attempt::Unauthorized(detail),
            429 | 500.. => Attempt::Failed(SendError::Transient(detail)),
            _ => Attempt::Failed(SendError::Permanent(detail)),
        }
    }

    fn open(
        &self,
        target: &Target,
        column: (&'static str, &'static str),
        sealed: Option<&[u8]>,
    ) -> Result<Option<SecretString>, SendError> {
        let binding = crypto::Binding::new(column, target.organization_id, target.id);
        sealed
            .map(|sealed| {
                crypto::open_bound(&self.settings.encryption_key, sealed, &binding)
                    .map(|plain| SecretString::from(String::from_utf8_lossy(&plain).into_owned()))
                    .map_err(|e| {
                        SendError::Permanent(format!("a stored token cannot be opened: {e}"))
                    })
            })
            .transpose()
    }

    fn seal(
        &self,
        target: &Target,
        column: (&'static str, &'static str),
        token: &SecretString,
    ) -> Result<Vec<u8>, SendError> {
        let binding = crypto::Binding::new(column, target.organization_id, target.id);
        crypto::seal_bound(
            &self.settings.encryption_key,
            token.expose_secret().as_bytes(),
            &binding,
        )
        .map_err(|e| SendError::Transient(format!("sealing the refreshed token: {e}")))
    }
}

/// The part of Gmail's `Message` resource the send answers with that we keep.
#[derive(serde::Deserialize)]
struct GmailMessage {
    id: String,
}

/// The account's provider, when it may send at all.
fn usable(account: &OAuthSending) -> Result<Provider, SendError> {
    if account.status != AccountStatus::Active {
        return Err(super::inactive_account(
            account.status,
            account.status_reason.as_deref(),
        ));
    }
    Provider::from_stored(&account.provider).ok_or_else(|| {
        SendError::Permanent(format!("`{}` is not an OAuth provider", account.provider))
    })
}

fn expires_soon(expires_at: Option<DateTime<Utc>>) -> bool {
    // Without an expiry we cannot tell: the provider's 401 will.
    expires_at.is_some_and(|at| at - Utc::now() < EXPIRY_MARGIN)
}

fn gone() -> SendError {
    SendError::Permanent("the OAuth account no longer exists".into())
}

fn database(e: sqlx::Error) -> SendError {
    SendError::Transient(format!("database: {e}"))
}

fn issuer(provider: Provider) -> &'static str {
    match provider {
        Provider::Gmail => "Google",
        Provider::Outlook => "Microsoft",
    }
}

fn api(provider: Provider) -> &'static str {
    match provider {
        Provider::Gmail => "the Gmail API",
        Provider::Outlook => "Microsoft Graph",
    }
}

/// `path` under the API's base URL (with or without its trailing slash).
fn endpoint(base: &Url, path: &str) -> Result<Url, SendError> {
    let mut base = base.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    base.join(path)
        .map_err(|e| SendError::Permanent(format!("the API base URL {base} is unusable: {e}")))
}

/// The provider's own words: Google's and Graph's error JSON (`error.message` with its `code`
/// or `status`), or the start of whatever else came back.
fn error_message(body: &str) -> String {
    let json: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = json.as_ref().map(|j| &j["error"]);
    match error.and_then(|e| e["message"].as_str()) {
        Some(message) => {
            match error.and_then(|e| e["status"].as_str().or_else(|| e["code"].as_str())) {
                Some(code) => format!("{code}: {message}"),
                None => message.to_owned(),
            }
        }
        None => body.chars().take(MAX_ERROR_CHARS).collect(),
    }
}

/// An error with its sources (reqwest puts the useful part, e.g. a timeout, in a source).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        out.push_str(": ");
        out.push_str(&inner.to_string());
        source = inner.source();
    }
    out
}
