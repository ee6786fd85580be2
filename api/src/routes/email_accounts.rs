//! `/api/v1/email-accounts`: the organization's sending accounts: SMTP (the password sealed at
//! rest, never returned) and Gmail or Outlook connected over OAuth (tokens sealed likewise).

use chrono::{DateTime, Utc};
use oauth2::TokenResponse as _;
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
};
use serde::Deserialize;
use uuid::Uuid;
use zoark_core::{
    access::{Actor, Granted, ManageEmailAccounts, ReadEmailAccounts},
    crypto,
    db::{
        self,
        audit::{self, Entry},
        email_accounts::{self, AccountStatus, Smtp, SmtpPatch, WriteError},
        tenant,
    },
    identity::{EmailAddress, Invalid, MAX_PASSWORD_BYTES, Name},
    outbound::OutboundPolicy,
};
use zoark_jobs::{Opts, email::SendTestEmail};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, FieldError, Fields},
    json::JsonBody,
    oauth::{self, OAuthProvider},
    routes::{ApiTags, NoContent},
    state::AppState,
};

pub struct EmailAccountsApi;

/// How an account reaches its provider.
#[derive(Debug, Clone, Copy, Enum, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Any SMTP server.
    Smtp,
}

/// Transport security of the SMTP connection.
#[derive(Debug, Clone, Copy, Enum, Deserialize, PartialEq, Eq)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain text (a relay on a private network only).
    None,
    /// Upgrade with STARTTLS (usually port 587).
    Starttls,
    /// TLS from the first byte (usually port 465).
    Tls,
}

impl Security {
    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Starttls => "starttls",
            Self::Tls => "tls",
        }
    }
}

/// `POST /email-accounts`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewEmailAccount {
    pub provider: Provider,
    /// The sender name recipients see.
    pub display_name: String,
    pub from_address: String,
    /// The SMTP server's host name.
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub username: Option<String>,
    /// Stored sealed with AES-256-GCM; never returned.
    pub password: Option<String>,
}

impl poem_openapi::types::Example for NewEmailAccount {
    fn example() -> Self {
        Self {
            provider: Provider::Smtp,
            display_name: "Operations".into(),
            from_address: "ops@example.com".into(),
            host: "smtp.example.com".into(),
            port: 587,
            security: Security::Starttls,
            username: Some("ops@example.com".into()),
            password: Some("app-password".into()),
        }
    }
}

/// `PATCH /email-accounts/{id}`: absent fields stay; `null` clears the username or password.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct EmailAccountPatch {
    #[serde(default)]
    pub display_name: MaybeUndefined<String>,
    #[serde(default)]
    pub from_address: MaybeUndefined<String>,
    #[serde(default)]
    pub host: MaybeUndefined<String>,
    #[serde(default)]
    pub port: MaybeUndefined<u16>,
    #[serde(default)]
    pub security: MaybeUndefined<Security>,
    #[serde(default)]
    pub username: MaybeUndefined<String>,
    #[serde(default)]
    pub password: MaybeUndefined<String>,
}

impl poem_openapi::types::Example for EmailAccountPatch {
    fn example() -> Self {
        Self {
            display_name: MaybeUndefined::Value("Operations team".into()),
            from_address: MaybeUndefined::Undefined,
            host: MaybeUndefined::Undefined,
            port: MaybeUndefined::Value(465),
            security: MaybeUndefined::Value(Security::Tls),
            username: MaybeUndefined::Undefined,
            password: MaybeUndefined::Undefined,
        }
    }
}

/// `POST /email-accounts/{id}/test`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct TestRequest {
    /// Where to send the test message (default: your own address, or the account's for an API
    /// key).
    pub to: Option<String>,
}

impl poem_openapi::types::Example for TestRequest {
    fn example() -> Self {
        Self {
            to: Some("ada@example.com".into()),
        }
    }
}

/// SMTP settings of an account (never the password).
#[derive(Debug, Object)]
pub struct SmtpSettings {
    pub host: String,
    pub port: i32,
    /// `none`, `starttls` or `tls`.
    pub security: String,
    pub username: Option<String>,
    /// Whether a password is stored.
    pub has_password: bool,
}

/// A sending account.
#[derive(Debug, Object)]
pub struct EmailAccount {
    pub id: Uuid,
    /// `smtp`, `gmail` or `outlook`.
    pub provider: String,
    pub display_name: String,
    pub from_address: String,
    /// Whether the account sends; `status_reason` says why not.
    pub status: AccountStatus,
    pub status_reason: Option<String>,
    pub smtp: Option<SmtpSettings>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<email_accounts::Account> for EmailAccount {
    fn from(a: email_accounts::Account) -> Self {
        let smtp = match (a.smtp_host, a.smtp_port, a.smtp_security) {
            (Some(host), Some(port), Some(security)) => Some(SmtpSettings {
                host,
                port,
                security,
                username: a.smtp_username,
                has_password: a.has_password,
            }),
            _ => None,
        };
        Self {
            id: a.id,
            provider: a.provider,
            display_name: a.display_name,
            from_address: a.from_address,
            status: a.status,
            status_reason: a.status_reason,
            smtp,
            created_by: a.created_by,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct EmailAccountList {
    pub items: Vec<EmailAccount>,
}

/// The enqueued test message.
#[derive(Debug, Object)]
pub struct TestQueued {
    /// Follow it at `GET /api/v1/jobs/{job_id}`.
    pub job_id: Uuid,
    pub to: String,
}

/// Where to send the user to connect an account.
#[derive(Debug, Object)]
pub struct OAuthStart {
    /// Open it in the user's browser; the provider sends them back to the callback.
    pub authorization_url: String,
}

/// `POST /email-accounts/oauth/{provider}/complete`: what the callback passed on.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct OAuthComplete {
    /// The authorization code.
    pub code: String,
    /// The `state` of the start.
    pub state: String,
}

impl poem_openapi::types::Example for OAuthComplete {
    fn example() -> Self {
        Self {
            code: "4/0Adeu5BW".into(),
            state: "Zq3c9yYbq2dYQz8kV0m3Ww".into(),
        }
    }
}

/// The callback passes the browser on to the web app.
#[derive(ApiResponse)]
pub enum CallbackRedirect {
    /// On to `ZOARK_OAUTH_RETURN_URL` with `provider`, `code` and `state`.
    #[oai(status = 303)]
    SeeOther(#[oai(header = "Location")] String),
}

/// The account a completed OAuth connection stored.
#[derive(Debug, Object)]
pub struct Connected {
    pub id: Uuid,
    /// `gmail` or `outlook`.
    pub provider: String,
    pub from_address: String,
    pub status: String,
}

#[derive(ApiResponse)]
pub enum AccountCreated {
    /// The account.
    #[oai(status = 201)]
    Created(Json<EmailAccount>),
}

#[derive(ApiResponse)]
pub enum TestAccepted {
    /// The test message is queued.
    #[oai(status = 202)]
    Accepted(Json<TestQueued>),
}

/// The user and session of a signed-in caller: an OAuth connection is bound to both, and an API
/// key has neither.
fn signed_in(granted: &Granted<ManageEmailAccounts>) -> Result<(Uuid, Uuid), ApiError> {
    match granted.actor() {
        Actor::User {
            user_id,
            session_id,
        } => Ok((user_id, session_id)),
        _ => Err(ApiError::InvalidParameter(FieldError {
            field: "authorization".into(),
            message: "connecting an account needs a user's access token, not an API key".into(),
        })),
    }
}

/// A host the platform's outbound policy lets an organization's account reach.
fn host(policy: &OutboundPolicy, raw: &str) -> Result<String, Invalid> {
    let host = raw.trim();
    if host.is_empty()
        || host.len() > 255
        || host.contains("://")
        || host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '/' || c == '@')
    {
        return Err(Invalid(
            "must be a host name or address, like smtp.example.com".into(),
        ));
    }
    policy.check_host(host)?;
    Ok(host.to_owned())
}

/// `security: none` only where plain text is allowed (not in production, unless the operator
/// named the host in `ZOARK_OUTBOUND_ALLOW_HOSTS`).
fn security(policy: &OutboundPolicy, security: &str, host: &str) -> Result<(), Invalid> {
    if security == Security::None.as_str() && !policy.permits_plaintext(host) {
        return Err(Invalid(
            "must be `starttls` or `tls`: SMTP without TLS is refused in production".into(),
        ));
    }
    Ok(())
}

fn port(port: u16) -> Result<u16, Invalid> {
    if port == 0 {
        Err(Invalid("must be between 1 and 65535".into()))
    } else {
        Ok(port)
    }
}

/// The password sealed for account `id` of the organization.
fn password(
    state: &AppState,
    granted: &Granted<ManageEmailAccounts>,
    id: Uuid,
    raw: &str,
) -> Result<Vec<u8>, Invalid> {
    if raw.is_empty() || raw.len() > MAX_PASSWORD_BYTES {
        return Err(Invalid(format!("must be 1 to {MAX_PASSWORD_BYTES} bytes")));
    }
    let binding =
        crypto::Binding::new(email_accounts::SMTP_PASSWORD, granted.organization_id(), id);
    crypto::seal_bound(&state.settings.encryption_key, raw.as_bytes(), &binding)
        .map_err(|e| Invalid(format!("could not be sealed: {e}")))
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "email_account_not_found",
        detail: "No email account with this id in the organization.".into(),
    }
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::NotFound => not_found(),
        WriteError::DuplicateAddress => ApiError::Conflict {
            code: "email_account_exists",
            detail: "Another SMTP account of the organization already sends from this address."
                .into(),
        },
        WriteError::InUse => ApiError::Conflict {
            code: "email_account_in_use",
            detail: "Broadcasts or deliveries still use this account; disable it instead.".into(),
        },
        WriteError::Database(e) => e.into(),
    }
}

async fn load(
    tx: &mut sqlx::PgConnection,
    granted: &Granted<impl Sized>,
    id: Uuid,
) -> Result<EmailAccount, ApiError> {
    email_accounts::get(tx, granted, id)
        .await?
        .map(EmailAccount::from)
        .ok_or_else(not_found)
}

#[OpenApi(tag = "ApiTags::EmailAccounts", prefix_path = "/api/v1/email-accounts")]
impl EmailAccountsApi {
    /// Add an SMTP account
    ///
    /// The password is sealed at rest and never returned. 409 `email_account_exists` when
    /// another SMTP account already sends from the address. Needs `email_accounts.manage`
    /// (manager). Audited as `email_account.created`.
    #[oai(path = "/", method = "post", operation_id = "email_accounts_create")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewEmailAccount>,
    ) -> Result<AccountCreated, ApiError> {
        let granted = auth.grant::<ManageEmailAccounts>(&state).await?;
        let body = body.0;
        let Provider::Smtp = body.provider;
        let mut fields = Fields::default();
        let display_name = fields.take("display_name", Name::parse(&body.display_name));
        let from_address = fields.take("from_address", EmailAddress::parse(&body.from_address));
        let policy = &state.settings.outbound;
        let host = fields.take("host", host(policy, &body.host));
        if let Some(host) = &host {
            fields.take("security", security(policy, body.security.as_str(), host));
        }
        let port = fields.take("port", port(body.port));
        let id = Uuid::now_v7();
        let sealed_password = match body.password.as_deref() {
            Some(raw) => fields
                .take("password", password(&state, &granted, id, raw))
                .map(Some),
            None => Some(None),
        };
        fields.finish()?;
        let (Some(display_name), Some(from_address), Some(host), Some(port), Some(sealed_password)) =
            (display_name, from_address, host, port, sealed_password)
        else {
            return Err(ApiError::Internal(anyhow::anyhow!("parsed fields missing")));
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        email_accounts::insert_smtp(
            &mut tx,
            &granted,
            &Smtp {
                id,
                display_name: display_name.as_str().to_owned(),
                from_address: from_address.to_string(),
                host,
                port,
                security: body.security.as_str().to_owned(),
                username: body.username.filter(|u| !u.is_empty()),
                sealed_password,
            },
        )
        .await
        .map_err(write_error)?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("email_account.created", &client(req, &state.settings))
                .on("email_account", id)
                .with(serde_json::json!({ "provider": "smtp", "from_address": from_address.as_str() })),
        )
        .await?;
        let account = load(&mut tx, &granted, id).await?;
        tx.commit().await?;
        Ok(AccountCreated::Created(Json(account)))
    }

    /// Connect Gmail or Outlook
    ///
    /// The authorization URL (code flow with PKCE) asking for the send scope (Gmail
    /// `gmail.send`; Microsoft `Mail.Send offline_access`) and `openid email`. Its `state`,
    /// valid 10 minutes and single use, is bound to you and the organization. Needs a user's
    /// access token with `email_accounts.manage` (manager).
    #[oai(
        path = "/oauth/:provider/start",
        method = "get",
        operation_id = "email_accounts_oauth_start"
    )]
    async fn oauth_start(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        provider: Path<OAuthProvider>,
    ) -> Result<Json<OAuthStart>, ApiError> {
        let granted = auth.grant::<ManageEmailAccounts>(&state).await?;
        let (user_id, session_id) = signed_in(&granted)?;
        let (authorization_url, csrf, verifier) = oauth::start(&state.settings, provider.0)
            .map_err(|e| ApiError::Conflict {
                code: "oauth_not_configured",
                detail: e.to_string(),
            })?;
        let state_id = Uuid::now_v7();
        let binding = crypto::Binding::new(
            email_accounts::PKCE_VERIFIER,
            granted.organization_id(),
            state_id,
        );
        let sealed = crypto::seal_bound(
            &state.settings.encryption_key,
            verifier.as_bytes(),
            &binding,
        )
        .map_err(|e| ApiError::Internal(e.into()))?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        email_accounts::insert_oauth_state(
            &mut tx,
            &granted,
            state_id,
            (user_id, session_id),
            provider.0.as_str(),
            &csrf,
            &sealed,
        )
        .await?;
        tx.commit().await?;
        Ok(Json(OAuthStart { authorization_url }))
    }

    /// OAuth callback
    ///
    /// Where Google or Microsoft send the browser back. Nothing is spent or stored here: a 303
    /// sends the browser on to the web app (`ZOARK_OAUTH_RETURN_URL`) with `provider`, `code`
    /// and `state`, which completes the connection as the signed-in user
    /// (`POST …/oauth/{provider}/complete`), so a consent given by someone else who opened the
    /// link connects nothing. 400 for a refused consent or a missing `code` or `state`.
    #[oai(
        path = "/oauth/:provider/callback",
        method = "get",
        operation_id = "email_accounts_oauth_callback"
    )]
    async fn oauth_callback(
        &self,
        state: Data<&AppState>,
        provider: Path<OAuthProvider>,
        /// The authorization code.
        code: Query<Option<String>>,
        /// The `state` of the start.
        #[oai(name = "state")]
        oauth_state: Query<Option<String>>,
        /// Set by the provider when the user refused or something failed.
        error: Query<Option<String>>,
    ) -> Result<CallbackRedirect, ApiError> {
        let parameter = |field: &str, message: String| {
            ApiError::InvalidParameter(FieldError {
                field: field.into(),
                message,
            })
        };
        if let Some(error) = error.0 {
            return Err(parameter(
                "error",
                format!("the provider answered `{error}`"),
            ));
        }
        let (Some(code), Some(csrf)) = (code.0, oauth_state.0) else {
            return Err(parameter("code", "`code` and `state` are required".into()));
        };
        let mut url = state.settings.oauth.return_url.clone();
        url.query_pairs_mut()
            .append_pair("provider", provider.0.as_str())
            .append_pair("code", &code)
            .append_pair("state", &csrf);
        Ok(CallbackRedirect::SeeOther(url.to_string()))
    }

    /// Complete a Gmail or Outlook connection
    ///
    /// The web app's page the callback sent the browser to posts the `code` and `state` here
    /// with the signed-in user's access token. The `state` must have been issued to this user's
    /// session by `…/start` (single use, 10 minutes). Exchanges the code (with the PKCE
    /// verifier) for tokens and stores the account with the tokens sealed (a reconnection of the
    /// same address and provider account replaces its tokens and makes it active again). 422
    /// naming `state` for a state unknown, used, expired or issued to another sign-in; 409
    /// `oauth_email_unverified` when the provider says the address is not verified, 409
    /// `oauth_account_mismatch` when the address is connected through another account of the
    /// provider; 502 `oauth_exchange_failed` when the provider refuses the code. Needs
    /// `email_accounts.manage` (manager). Audited as `email_account.connected`.
    #[oai(
        path = "/oauth/:provider/complete",
        method = "post",
        operation_id = "email_accounts_oauth_complete"
    )]
    async fn oauth_complete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        provider: Path<OAuthProvider>,
        body: JsonBody<OAuthComplete>,
    ) -> Result<Json<Connected>, ApiError> {
        let granted = auth.grant::<ManageEmailAccounts>(&state).await?;
        let (user_id, session_id) = signed_in(&granted)?;
        let provider = provider.0;
        let invalid_state = || {
            ApiError::Validation(vec![FieldError {
                field: "state".into(),
                message: "is unknown, used, expired, or was issued to another sign-in".into(),
            }])
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let pending = email_accounts::consume_oauth_state(
            &mut tx,
            &granted,
            (user_id, session_id),
            provider.as_str(),
            &body.0.state,
        )
        .await?
        .ok_or_else(invalid_state)?;
        tx.commit().await?;
        let binding = crypto::Binding::new(
            email_accounts::PKCE_VERIFIER,
            pending.organization_id,
            pending.id,
        );
        let verifier = crypto::open_bound(
            &state.settings.encryption_key,
            &pending.sealed_verifier,
            &binding,
        )
        .map_err(|e| ApiError::Internal(e.into()))?;
        let upstream = |detail: String| ApiError::Upstream {
            code: "oauth_exchange_failed",
            detail,
        };
        let tokens = oauth::exchange(
            &state.settings,
            &state.http,
            provider,
            &body.0.code,
            String::from_utf8_lossy(&verifier).into_owned(),
        )
        .await
        .map_err(|e| upstream(e.to_string()))?;
        let (identity, email) = oauth::identity(tokens.extra_fields().id_token.as_deref())
            .map_err(|e| upstream(e.to_string()))?;
        if identity.email_verified() == Some(false) {
            return Err(ApiError::Conflict {
                code: "oauth_email_unverified",
                detail: format!(
                    "The provider says {email} is not verified; verify it with the provider first."
                ),
            });
        }
        let refresh = tokens.refresh_token().ok_or_else(|| {
            upstream(
                "the provider sent no refresh token; remove Zoark's access in your account \
                 settings and connect again"
                    .into(),
            )
        })?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        // The account's id, found (and its address locked for this transaction) or new: the
        // tokens are sealed for that row.
        let account_id = email_accounts::oauth_account_id(
            &mut tx,
            pending.organization_id,
            provider.as_str(),
            &email,
        )
        .await?
        .unwrap_or_else(Uuid::now_v7);
        let key = &state.settings.encryption_key;
        let seal = |column, secret: &str| {
            let binding = crypto::Binding::new(column, pending.organization_id, account_id);
            crypto::seal_bound(key, secret.as_bytes(), &binding)
                .map_err(|e| ApiError::Internal(e.into()))
        };
        let expires_at = tokens
            .expires_in()
            .and_then(|d| chrono::Duration::from_std(d).ok().map(|d| Utc::now() + d));
        let stored = email_accounts::OAuthTokens {
            provider: provider.as_str().to_owned(),
            display_name: identity.name.clone().unwrap_or_else(|| email.clone()),
            from_address: email.clone(),
            subject: identity.sub.clone(),
            id: account_id,
            sealed_access_token: seal(
                email_accounts::OAUTH_ACCESS_TOKEN,
                tokens.access_token().secret(),
            )?,
            sealed_refresh_token: seal(email_accounts::OAUTH_REFRESH_TOKEN, refresh.secret())?,
            expires_at,
            scopes: tokens
                .scopes()
                .map(|s| s.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
        };
        let id = email_accounts::upsert_oauth(
            &mut tx,
            pending.organization_id,
            pending.user_id,
            &stored,
        )
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: "oauth_account_mismatch",
            detail: format!(
                "{email} is already connected through another {} account; remove that \
                 connection first.",
                provider.as_str()
            ),
        })?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("email_account.connected", &client(req, &state.settings))
                .on("email_account", id)
                .with(serde_json::json!({
                    "provider": provider.as_str(),
                    "from_address": email,
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(Json(Connected {
            id,
            provider: provider.as_str().to_owned(),
            from_address: email,
            status: "active".into(),
        }))
    }

    /// List email accounts
    ///
    /// Newest first, never with secrets. Needs `email_accounts.read` (member).
    #[oai(path = "/", method = "get", operation_id = "email_accounts_list")]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<EmailAccountList>, ApiError> {
        let granted = auth.grant::<ReadEmailAccounts>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let items = email_accounts::list(&mut tx, &granted)
            .await?
            .into_iter()
            .map(EmailAccount::from)
            .collect();
        tx.commit().await?;
        Ok(Json(EmailAccountList { items }))
    }

    /// Get an email account
    ///
    /// Needs `email_accounts.read` (member).
    #[oai(path = "/:id", method = "get", operation_id = "email_accounts_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<EmailAccount>, ApiError> {
        let granted = auth.grant::<ReadEmailAccounts>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let account = load(&mut tx, &granted, id.0).await?;
        if let Some(smtp) = &account.smtp {
            let mut fields = Fields::default();
            fields.take(
                "security",
                security(&state.settings.outbound, &smtp.security, &smtp.host),
            );
            fields.finish()?;
        }
        tx.commit().await?;
        Ok(Json(account))
    }

    /// Change an SMTP account
    ///
    /// Absent fields stay; `null` clears the username or the password. Needs
    /// `email_accounts.manage` (manager). Audited as `email_account.updated` with the changed
    /// field names (never values).
    #[oai(
        path = "/:id",
        method = "patch",
        operation_id = "email_accounts_update"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
        body: JsonBody<EmailAccountPatch>,
    ) -> Result<Json<EmailAccount>, ApiError> {
        let granted = auth.grant::<ManageEmailAccounts>(&state).await?;
        let body = body.0;
        let mut fields = Fields::default();
        let mut patch = SmtpPatch::default();
        let mut changed: Vec<&'static str> = Vec::new();
        let required = |fields: &mut Fields, name: &'static str| {
            fields.reject(name, "cannot be null");
        };
        match body.display_name {
            MaybeUndefined::Value(v) => {
                patch.display_name = fields
                    .take("display_name", Name::parse(&v))
                    .map(|n| n.as_str().to_owned());
                changed.push("display_name");
            }
            MaybeUndefined::Null => required(&mut fields, "display_name"),
            MaybeUndefined::Undefined => {}
        }
        match body.from_address {
            MaybeUndefined::Value(v) => {
                patch.from_address = fields
                    .take("from_address", EmailAddress::parse(&v))
                    .map(|e| e.to_string());
                changed.push("from_address");
            }
            MaybeUndefined::Null => required(&mut fields, "from_address"),
            MaybeUndefined::Undefined => {}
        }
        match body.host {
            MaybeUndefined::Value(v) => {
                patch.host = fields.take("host", host(&state.settings.outbound, &v));
                changed.push("host");
            }
            MaybeUndefined::Null => required(&mut fields, "host"),
            MaybeUndefined::Undefined => {}
        }
        match body.port {
            MaybeUndefined::Value(v) => {
                patch.port = fields.take("port", port(v));
                changed.push("port");
            }
            MaybeUndefined::Null => required(&mut fields, "port"),
            MaybeUndefined::Undefined => {}
        }
        match body.security {
            MaybeUndefined::Value(v) => {
                patch.security = Some(v.as_str().to_owned());
                changed.push("security");
            }
            MaybeUndefined::Null => required(&mut fields, "security"),
            MaybeUndefined::Undefined => {}
        }
        match body.username {
            MaybeUndefined::Value(v) => {
                patch.username = Some(Some(v).filter(|u| !u.is_empty()));
                changed.push("username");
            }
            MaybeUndefined::Null => {
                patch.username = Some(None);
                changed.push("username");
            }
            MaybeUndefined::Undefined => {}
        }
        match body.password {
            MaybeUndefined::Value(v) => {
                patch.sealed_password = fields
                    .take("password", password(&state, &granted, id.0, &v))
                    .map(Some);
                changed.push("password");
            }
            MaybeUndefined::Null => {
                patch.sealed_password = Some(None);
                changed.push("password");
            }
            MaybeUndefined::Undefined => {}
        }
        fields.finish()?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        email_accounts::update_smtp(&mut tx, &granted, id.0, &patch)
            .await
            .map_err(write_error)?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("email_account.updated", &client(req, &state.settings))
                .on("email_account", id.0)
                .with(serde_json::json!({ "changed": changed })),
        )
        .await?;
        let account = load(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(Json(account))
    }

    /// Remove an email account
    ///
    /// 409 `email_account_in_use` while broadcasts or deliveries reference it. Needs
    /// `email_accounts.manage` (manager). Audited as `email_account.deleted`.
    #[oai(
        path = "/:id",
        method = "delete",
        operation_id = "email_accounts_delete"
    )]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageEmailAccounts>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        email_accounts::delete(&mut tx, &granted, id.0)
            .await
            .map_err(write_error)?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("email_account.deleted", &client(req, &state.settings))
                .on("email_account", id.0),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Send a test message
    ///
    /// Queues a test message through the account: SMTP, or the Gmail API / Microsoft Graph for
    /// an account connected over OAuth (a job: follow it in the jobs API; a refused login,
    /// address or message discards it with the server's answer, and a refused refresh token also
    /// marks the account `needs_reauth`). Needs `email_accounts.manage` (manager).
    #[oai(
        path = "/:id/test",
        method = "post",
        operation_id = "email_accounts_test"
    )]
    async fn test(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<TestRequest>,
    ) -> Result<TestAccepted, ApiError> {
        let granted = auth.grant::<ManageEmailAccounts>(&state).await?;
        let mut fields = Fields::default();
        let to = match body.0.to.as_deref() {
            Some(raw) => fields
                .take("to", EmailAddress::parse(raw))
                .map(|e| e.to_string()),
            None => None,
        };
        fields.finish()?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let account = load(&mut tx, &granted, id.0).await?;
        let requester = match granted.actor().user_id() {
            Some(user_id) => Some(db::users::profile(&mut tx, user_id).await?),
            None => None,
        };
        let to = to
            .or_else(|| requester.as_ref().map(|p| p.email.clone()))
            .unwrap_or_else(|| account.from_address.clone());
        let requested_by = requester.map_or_else(|| "an API key".to_owned(), |p| p.name);
        let job = zoark_jobs::enqueue(
            &mut tx,
            &SendTestEmail {
                account_id: account.id,
                to: to.clone(),
                requested_by,
            },
            Opts::organization(granted.organization_id()),
        )
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
        tx.commit().await?;
        Ok(TestAccepted::Accepted(Json(TestQueued {
            job_id: job.id,
            to,
        })))
    }
}
