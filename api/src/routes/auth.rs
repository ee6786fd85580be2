//! `/api/v1/auth`: registration, sign-in with throttling, rotating refresh tokens, sign-out,
//! the caller's identity and sessions.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde::Deserialize;
use uuid::Uuid;
use zoark_core::{
    access::{Actor, Granted, OwnAccount},
    crypto,
    db::{
        self,
        audit::{self, Entry},
        login_throttle, password_resets, sessions, tenant,
    },
    identity::{EmailAddress, MAX_PASSWORD_BYTES, Name, NewPassword},
};

use zoark_jobs::{
    Opts,
    email::{RequestPasswordReset, SystemTemplate},
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, FieldError, Fields},
    json::JsonBody,
    routes::{ApiTags, NoContent},
    state::AppState,
    system_email, tokens,
};

pub struct AuthApi;

/// `POST /auth/register`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct RegisterRequest {
    /// Your email address; you sign in with it.
    pub email: String,
    /// At least 12 characters and hard to guess (not a common password, not made of your name
    /// or email).
    pub password: String,
    /// Your name.
    pub name: String,
    /// The organization you create; you become its admin.
    pub organization_name: String,
}

impl poem_openapi::types::Example for RegisterRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            password: "correct horse battery staple".into(),
            name: "Ada Lovelace".into(),
            organization_name: "Analytical Engines Ltd".into(),
        }
    }
}

/// `POST /auth/login`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// The organization to sign in to when you belong to several (default: the one you joined
    /// first).
    pub organization_id: Option<Uuid>,
}

impl poem_openapi::types::Example for LoginRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            password: "correct horse battery staple".into(),
            organization_id: None,
        }
    }
}

/// `POST /auth/refresh`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct RefreshRequest {
    /// The refresh token of the last sign-in or refresh. Single use.
    pub refresh_token: String,
}

impl poem_openapi::types::Example for RefreshRequest {
    fn example() -> Self {
        Self {
            refresh_token: "zrt_2b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e".into(),
        }
    }
}

/// `POST /auth/password-reset`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct PasswordResetRequest {
    pub email: String,
}

impl poem_openapi::types::Example for PasswordResetRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
        }
    }
}

/// `POST /auth/verify-email`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct VerifyEmail {
    /// The token from the verification email's link.
    pub token: String,
}

impl poem_openapi::types::Example for VerifyEmail {
    fn example() -> Self {
        Self {
            token: "Q2hlY2sgeW91ciBpbmJveCBmb3IgdGhlIGxpbms".into(),
        }
    }
}

/// `POST /auth/password-reset/confirm`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct PasswordResetConfirm {
    /// The token from the reset email's link.
    pub token: String,
    pub new_password: String,
}

impl poem_openapi::types::Example for PasswordResetConfirm {
    fn example() -> Self {
        Self {
            token: "zpr_6f4e2d1c0b9a8f7e6d5c4b3a2f1e0d9c".into(),
            new_password: "a new long passphrase".into(),
        }
    }
}

/// `POST /auth/accept-invitation`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct AcceptInvitation {
    /// The token from the invitation email's link.
    pub token: String,
    /// Your name (ignored when the address already has an account).
    pub name: String,
    /// A new password; or, when the address already has an account, its password.
    pub password: String,
}

impl poem_openapi::types::Example for AcceptInvitation {
    fn example() -> Self {
        Self {
            token: "zin_9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f".into(),
            name: "Grace Hopper".into(),
            password: "correct horse battery staple".into(),
        }
    }
}

#[derive(ApiResponse)]
pub enum Accepted {
    /// Accepted; an email follows if the address has an account.
    #[oai(status = 202)]
    Accepted,
}

/// A user.
#[derive(Debug, Object)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    /// Whether the address is confirmed (through the link emailed at registration, an accepted
    /// invitation or a password reset). Until it is, the platform sends no invitation on the
    /// account's behalf.
    pub email_verified: bool,
}

impl From<db::users::Profile> for User {
    fn from(p: db::users::Profile) -> Self {
        Self {
            id: p.id,
            email: p.email,
            name: p.name,
            email_verified: p.email_verified,
        }
    }
}

/// Emails `user_id` a link confirming their address, in `tx`.
async fn send_verification(
    tx: &mut sqlx::PgConnection,
    state: &AppState,
    user_id: Uuid,
) -> Result<(), ApiError> {
    let (token, expires_at) = db::email_verifications::create(tx, user_id).await?;
    let profile = db::users::profile(tx, user_id).await?;
    system_email::enqueue(
        tx,
        &state.settings,
        &profile.email,
        SystemTemplate::EmailVerification,
        &serde_json::json!({
            "name": profile.name,
            "verify_url": system_email::link(&state.settings, "/verify-email", &token),
            "expires_at": system_email::when(expires_at),
        }),
        Opts::platform(),
    )
    .await
}

/// An organization, briefly.
#[derive(Debug, Object)]
pub struct OrganizationRef {
    pub id: Uuid,
    pub name: String,
}

/// A new access token and its refresh token.
#[derive(Debug, Object)]
pub struct TokenPair {
    pub user: User,
    pub organization: OrganizationRef,
    /// Your role in the organization: `admin`, `manager`, `lead`, `member` or `viewer`.
    pub role: String,
    /// `Authorization: Bearer <access_token>` on every request.
    pub access_token: String,
    /// Exchange it at `POST /api/v1/auth/refresh` before the access token expires. Single use:
    /// presenting it twice ends the session.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// When the refresh token (and the session, unless refreshed) expires.
    pub refresh_token_expires_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
pub enum Registered {
    /// The account, its organization and a first session.
    #[oai(status = 201)]
    Created(Json<TokenPair>),
}

/// Who is calling.
#[derive(Debug, Object)]
pub struct Me {
    /// The signed-in user; absent for an API key.
    pub user: Option<User>,
    /// The API key making the request; absent for a user.
    pub api_key_id: Option<Uuid>,
    /// The session of the access token; absent for an API key.
    pub session_id: Option<Uuid>,
    pub organization: OrganizationRef,
    pub role: String,
}

/// A live session of the signed-in user.
#[derive(Debug, Object)]
pub struct Session {
    pub id: Uuid,
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The session of the token making this request.
    pub current: bool,
}

#[derive(Debug, Object)]
pub struct SessionList {
    pub items: Vec<Session>,
}

/// The one answer to every failed sign-in, whatever the reason.
fn bad_credentials() -> ApiError {
    ApiError::Unauthorized
}

fn user_of(granted: &Granted<OwnAccount>) -> Result<(Uuid, Uuid), ApiError> {
    match granted.actor() {
        Actor::User {
            user_id,
            session_id,
        } => Ok((user_id, session_id)),
        Actor::ApiKey { .. } | Actor::Agent { .. } => Err(ApiError::InvalidParameter(FieldError {
            field: "authorization".into(),
            message: "this needs a user's access token; API keys have no session (revoke them \
                      with DELETE /api/v1/api-keys/{id})"
                .into(),
        })),
    }
}

/// A reference hash to verify against when the email is unknown, so that an unknown address
/// costs the same time as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        // argon2 fails only on invalid parameters, which the defaults are not.
        crypto::hash_password(&crypto::random_token(24)).unwrap_or_default()
    })
}

async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        let hash = hash.as_deref().unwrap_or_else(|| decoy_hash());
        crypto::verify_password(&password, hash)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

async fn hash_password(password: NewPassword) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || crypto::hash_password(password.expose()))
        .await
        .map_err(|e| ApiError::Internal(e.into()))?
        .map_err(|e| ApiError::Internal(e.into()))
}

fn invalid_token(what: &str) -> ApiError {
    ApiError::Validation(vec![FieldError {
        field: "token".into(),
        message: format!("is not a live {what} token: it is unknown, used or expired"),
    }])
}

fn retry_after(until: DateTime<Utc>) -> ApiError {
    let secs = (until - Utc::now()).num_milliseconds().max(0);
    ApiError::RateLimited {
        retry_after: u64::try_from((secs + 999) / 1000).unwrap_or(1).max(1),
    }
}

/// A user whose password was right, and the membership they sign in to.
pub(crate) struct SignedIn {
    pub user: db::users::LoginUser,
    pub membership: db::memberships::LoginMembership,
}

/// Checks a sign-in (throttled; the same failure, in about the same time, whether the account
/// exists or not) and returns the open transaction the caller opens the session in, then hands
/// to [`record_login`].
///
/// The attempt is counted as a failure before the password is checked, and no pooled
/// connection is held while argon2 runs (a burst of sign-ins cannot drain the pool); a right
/// password takes the count back.
///
/// # Errors
/// 401 for wrong credentials; 429 while the account (from this address) or the address is
/// throttled.
pub(crate) async fn sign_in(
    state: &AppState,
    client: &audit::Client,
    email: &str,
    password: String,
    organization_id: Option<Uuid>,
) -> Result<(sqlx::Transaction<'static, sqlx::Postgres>, SignedIn), ApiError> {
    let account_key = login_throttle::account_key(email, client.ip);
    let client_key = client.ip.map(login_throttle::client_key);
    let mut keys = vec![(account_key.clone(), login_throttle::ACCOUNT)];
    keys.extend(client_key.clone().map(|k| (k, login_throttle::CLIENT)));

    let user = {
        let mut tx = tenant::system(&state.pool).await?;
        if let Some(until) = login_throttle::attempt(&mut tx, &keys).await? {
            tx.commit().await?;
            return Err(retry_after(until));
        }
        let user = match EmailAddress::parse(email) {
            Ok(email) => db::users::for_login(&mut tx, email.as_str()).await?,
            Err(_) => None,
        };
        tx.commit().await?;
        user
    };
    let password_ok = if password.len() > MAX_PASSWORD_BYTES {
        false
    } else {
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        // Unknown account: verify against a decoy so the time is the same.
        verify_password(password, hash).await? && user.is_some()
    };
    let mut tx = tenant::system(&state.pool).await?;
    let membership = match &user {
        Some(u) if password_ok && !u.disabled => {
            db::memberships::for_login(&mut tx, u.id, organization_id).await?
        }
        _ => None,
    };
    let known_user = user.as_ref().map(|u| u.id);
    let (Some(user), Some(membership)) = (user.filter(|_| password_ok), membership) else {
        // The failure is already counted. One against a real account goes to the log of its
        // (first) organization.
        if let Some(user_id) = known_user
            && let Some(home) = db::memberships::for_login(&mut tx, user_id, None).await?
        {
            audit::record(
                &mut tx,
                home.organization_id,
                None,
                Entry::new("auth.login_failed", client).on("user", user_id),
            )
            .await?;
        }
        tx.commit().await?;
        return Err(bad_credentials());
    };
    login_throttle::succeeded(&mut tx, &account_key, client_key.as_slice()).await?;
    Ok((tx, SignedIn { user, membership }))
}

/// Records a sign-in in the transaction [`sign_in`] returned: the user's last login and the audit
/// entry for the new session.
pub(crate) async fn record_login(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    client: &audit::Client,
    membership: &db::memberships::LoginMembership,
    user_id: Uuid,
    session_id: Uuid,
) -> Result<(), ApiError> {
    db::users::touch_login(tx, user_id).await?;
    audit::record(
        tx,
        membership.organization_id,
        Some(Actor::User {
            user_id,
            session_id,
        }),
        Entry::new("auth.login", client).on("session", session_id),
    )
    .await?;
    Ok(())
}

fn token_pair(
    state: &AppState,
    user: User,
    organization: OrganizationRef,
    role: &str,
    refresh: sessions::IssuedRefresh,
) -> Result<TokenPair, ApiError> {
    let (access_token, expires_in) = tokens::issue(
        &state.settings,
        user.id,
        organization.id,
        refresh.session_id,
    )?;
    Ok(TokenPair {
        user,
        organization,
        role: role.to_owned(),
        access_token,
        refresh_token: refresh.token,
        token_type: "Bearer".into(),
        expires_in,
        refresh_token_expires_at: refresh.expires_at,
    })
}

#[OpenApi(tag = "ApiTags::Auth", prefix_path = "/api/v1/auth")]
impl AuthApi {
    /// Register
    ///
    /// Creates an account and its organization, with you as the organization's admin, and signs
    /// you in. 409 `email_taken` when the address already has an account.
    #[oai(path = "/register", method = "post", operation_id = "auth_register")]
    async fn register(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<RegisterRequest>,
    ) -> Result<Registered, ApiError> {
        let body = body.0;
        let mut fields = Fields::default();
        let email = fields.take("email", EmailAddress::parse(&body.email));
        let name = fields.take("name", Name::parse(&body.name));
        let organization_name =
            fields.take("organization_name", Name::parse(&body.organization_name));
        let password = fields.take(
            "password",
            NewPassword::parse(
                &body.password,
                &[&body.email, &body.name, &body.organization_name],
            ),
        );
        fields.finish()?;
        let (Some(email), Some(name), Some(organization_name), Some(password)) =
            (email, name, organization_name, password)
        else {
            return Err(ApiError::Internal(anyhow::anyhow!("parsed fields missing")));
        };
        let hash = hash_password(password).await?;
        let client = client(req, &state.settings);

        let mut tx = tenant::system(&state.pool).await?;
        let user_id = match db::users::insert(&mut tx, email.as_str(), name.as_str(), &hash).await {
            Ok(id) => id,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                return Err(ApiError::Conflict {
                    code: "email_taken",
                    detail: "An account with this email already exists; sign in instead.".into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let organization_id =
            db::organizations::insert(&mut tx, organization_name.as_str()).await?;
        db::memberships::insert(&mut tx, organization_id, user_id, "admin").await?;
        let refresh = sessions::create(
            &mut tx,
            organization_id,
            user_id,
            &client,
            state.settings.auth.refresh_token_ttl,
        )
        .await?;
        db::users::touch_login(&mut tx, user_id).await?;
        send_verification(&mut tx, &state, user_id).await?;
        let actor = Actor::User {
            user_id,
            session_id: refresh.session_id,
        };
        audit::record(
            &mut tx,
            organization_id,
            Some(actor),
            Entry::new("auth.registered", &client).on("user", user_id),
        )
        .await?;
        tx.commit().await?;
        let pair = token_pair(
            &state,
            User {
                id: user_id,
                email: email.to_string(),
                name: name.as_str().to_owned(),
                email_verified: false,
            },
            OrganizationRef {
                id: organization_id,
                name: organization_name.as_str().to_owned(),
            },
            "admin",
            refresh,
        )?;
        Ok(Registered::Created(Json(pair)))
    }

    /// Sign in
    ///
    /// Exchanges an email and password for an access token and a refresh token. Every failure is
    /// the same 401 in about the same time, whether the account exists or not. After 5 failures
    /// for an account (20 for a client address) within 15 minutes each attempt must wait,
    /// doubling from 1 s; after 10 (50) the account (address) is locked for 15 minutes: 429 with
    /// `Retry-After`.
    #[oai(path = "/login", method = "post", operation_id = "auth_login")]
    async fn login(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<LoginRequest>,
    ) -> Result<Json<TokenPair>, ApiError> {
        let body = body.0;
        let client = client(req, &state.settings);
        let (mut tx, signed_in) = sign_in(
            &state,
            &client,
            &body.email,
            body.password,
            body.organization_id,
        )
        .await?;
        let (user, membership) = (signed_in.user, signed_in.membership);
        let refresh = sessions::create(
            &mut tx,
            membership.organization_id,
            user.id,
            &client,
            state.settings.auth.refresh_token_ttl,
        )
        .await?;
        record_login(&mut tx, &client, &membership, user.id, refresh.session_id).await?;
        let profile = db::users::profile(&mut tx, user.id).await?;
        tx.commit().await?;
        let pair = token_pair(
            &state,
            User::from(profile),
            OrganizationRef {
                id: membership.organization_id,
                name: membership.organization_name,
            },
            membership.role.as_str(),
            refresh,
        )?;
        Ok(Json(pair))
    }

    /// Refresh
    ///
    /// Spends a refresh token for a new access token and a new refresh token. A refresh token
    /// works once: presenting a spent one again revokes the whole session (it was copied), and
    /// is 401 like an unknown, expired or revoked one.
    #[oai(path = "/refresh", method = "post", operation_id = "auth_refresh")]
    async fn refresh(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<RefreshRequest>,
    ) -> Result<Json<TokenPair>, ApiError> {
        let client = client(req, &state.settings);
        let mut tx = tenant::system(&state.pool).await?;
        let refreshed = sessions::refresh(
            &mut tx,
            &body.0.refresh_token,
            state.settings.auth.refresh_token_ttl,
            state.settings.auth.session_max_age,
        )
        .await?;
        match refreshed {
            sessions::Refreshed::Rotated {
                organization_id,
                user_id,
                role,
                refresh,
            } => {
                let profile = db::users::profile(&mut tx, user_id).await?;
                let organization =
                    db::memberships::for_login(&mut tx, user_id, Some(organization_id))
                        .await?
                        .ok_or(ApiError::Unauthorized)?;
                tx.commit().await?;
                let pair = token_pair(
                    &state,
                    User::from(profile),
                    OrganizationRef {
                        id: organization_id,
                        name: organization.organization_name,
                    },
                    role.as_str(),
                    refresh,
                )?;
                Ok(Json(pair))
            }
            sessions::Refreshed::Reused {
                organization_id,
                user_id,
                session_id,
            } => {
                audit::record(
                    &mut tx,
                    organization_id,
                    None,
                    Entry::new("auth.refresh_token_reused", &client)
                        .on("session", session_id)
                        .with(serde_json::json!({ "user_id": user_id })),
                )
                .await?;
                tx.commit().await?;
                tracing::warn!(session.id = %session_id, "a spent refresh token was presented; the session is revoked");
                Err(ApiError::Unauthorized)
            }
            sessions::Refreshed::Invalid => Err(ApiError::Unauthorized),
        }
    }

    /// Request a password reset
    ///
    /// Always 202, whether the address has an account or not. For an account, an email with a
    /// single-use link valid 30 minutes follows (at most one per minute).
    #[oai(
        path = "/password-reset",
        method = "post",
        operation_id = "auth_password_reset"
    )]
    async fn password_reset(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<PasswordResetRequest>,
    ) -> Result<Accepted, ApiError> {
        // The same work for every address, known or not: one job, which the worker looks up.
        let client = client(req, &state.settings);
        let job = RequestPasswordReset {
            email: body.0.email.trim().chars().take(320).collect(),
            ip: client.ip,
            user_agent: client.user_agent().map(str::to_owned),
        };
        let mut conn = state.pool.acquire().await?;
        zoark_jobs::enqueue(&mut conn, &job, Opts::platform())
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        Ok(Accepted::Accepted)
    }

    /// Confirm your email address
    ///
    /// Spends the token of the link emailed at registration (or by `verify-email/resend`) and
    /// marks the address it was sent to as confirmed. 422 naming `token` for an unknown, used or
    /// expired token, or one sent to an address the account no longer has.
    #[oai(
        path = "/verify-email",
        method = "post",
        operation_id = "auth_verify_email"
    )]
    async fn verify_email(
        &self,
        state: Data<&AppState>,
        body: JsonBody<VerifyEmail>,
    ) -> Result<NoContent, ApiError> {
        let mut tx = tenant::system(&state.pool).await?;
        db::email_verifications::consume(&mut tx, &body.0.token)
            .await?
            .ok_or_else(|| invalid_token("email verification"))?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Email me a new confirmation link
    ///
    /// Sends a new link confirming the signed-in user's address (links live 48 hours). 409
    /// `email_already_verified` when it is confirmed. Not for API keys.
    #[oai(
        path = "/verify-email/resend",
        method = "post",
        operation_id = "auth_verify_email_resend"
    )]
    async fn verify_email_resend(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Accepted, ApiError> {
        let granted = auth.grant::<OwnAccount>(&state).await?;
        let Some(user_id) = granted.actor().user_id() else {
            return Err(ApiError::Forbidden(
                "an API key has no email address to confirm".into(),
            ));
        };
        let mut tx = tenant::system(&state.pool).await?;
        if db::email_verifications::is_verified(&mut tx, user_id).await? {
            return Err(ApiError::Conflict {
                code: "email_already_verified",
                detail: "Your address is already confirmed.".into(),
            });
        }
        send_verification(&mut tx, &state, user_id).await?;
        tx.commit().await?;
        Ok(Accepted::Accepted)
    }

    /// Set a new password
    ///
    /// Spends the reset token, sets the new password and signs the account out everywhere
    /// (every session, in every organization). 422 naming `token` for an unknown, used or
    /// expired token, or `new_password` for a weak one (the token then stays usable).
    #[oai(
        path = "/password-reset/confirm",
        method = "post",
        operation_id = "auth_password_reset_confirm"
    )]
    async fn password_reset_confirm(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<PasswordResetConfirm>,
    ) -> Result<NoContent, ApiError> {
        let body = body.0;
        let client = client(req, &state.settings);
        // Look, hash without holding a connection, then use the token up (once).
        let (user_id, profile) = {
            let mut tx = tenant::system(&state.pool).await?;
            let user_id = password_resets::user_of(&mut tx, &body.token)
                .await?
                .ok_or_else(|| invalid_token("password reset"))?;
            let profile = db::users::profile(&mut tx, user_id).await?;
            tx.commit().await?;
            (user_id, profile)
        };
        let mut fields = Fields::default();
        let password = fields.take(
            "new_password",
            NewPassword::parse(&body.new_password, &[&profile.email, &profile.name]),
        );
        fields.finish()?;
        let Some(password) = password else {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "parsed password missing"
            )));
        };
        let hash = hash_password(password).await?;
        let mut tx = tenant::system(&state.pool).await?;
        if password_resets::consume(&mut tx, &body.token).await? != Some(user_id) {
            return Err(invalid_token("password reset"));
        }
        db::users::set_password(&mut tx, user_id, &hash).await?;
        // The link reached the mailbox: the address is the user's.
        db::email_verifications::mark_verified(&mut tx, user_id).await?;
        let revoked = sessions::revoke_all_of_user(&mut tx, user_id, "password_reset").await?;
        login_throttle::clear_account(&mut tx, &profile.email).await?;
        if let Some(home) = db::memberships::for_login(&mut tx, user_id, None).await? {
            audit::record(
                &mut tx,
                home.organization_id,
                None,
                Entry::new("auth.password_reset", &client)
                    .on("user", user_id)
                    .with(serde_json::json!({ "sessions_revoked": revoked })),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Accept an invitation
    ///
    /// Joins the organization with the invited role and signs you in to it. A new address gets
    /// an account with `name` and `password`; an address that already has an account proves it
    /// with that account's password (401 otherwise). 422 naming `token` for an unknown, used,
    /// revoked or expired invitation.
    #[oai(
        path = "/accept-invitation",
        method = "post",
        operation_id = "auth_accept_invitation"
    )]
    async fn accept_invitation(
        &self,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<AcceptInvitation>,
    ) -> Result<Registered, ApiError> {
        let body = body.0;
        let client = client(req, &state.settings);
        // Look, check or hash the password without holding a connection, then accept.
        let (invitation, existing) = {
            let mut tx = tenant::system(&state.pool).await?;
            let invitation = db::invitations::pending(&mut tx, &body.token)
                .await?
                .ok_or_else(|| invalid_token("invitation"))?;
            let existing = db::users::for_login(&mut tx, &invitation.email).await?;
            tx.commit().await?;
            (invitation, existing)
        };
        let new_user = match &existing {
            Some(existing) => {
                let ok = body.password.len() <= MAX_PASSWORD_BYTES
                    && verify_password(body.password.clone(), existing.password_hash.clone())
                        .await?;
                if !ok || existing.disabled {
                    return Err(bad_credentials());
                }
                None
            }
            None => {
                let mut fields = Fields::default();
                let name = fields.take("name", Name::parse(&body.name));
                let password = fields.take(
                    "password",
                    NewPassword::parse(
                        &body.password,
                        &[&invitation.email, &body.name, &invitation.organization_name],
                    ),
                );
                fields.finish()?;
                let (Some(name), Some(password)) = (name, password) else {
                    return Err(ApiError::Internal(anyhow::anyhow!("parsed fields missing")));
                };
                Some((name, hash_password(password).await?))
            }
        };
        let mut tx = tenant::system(&state.pool).await?;
        // The invitation may have been accepted, revoked or expired meanwhile.
        if db::invitations::pending(&mut tx, &body.token)
            .await?
            .is_none_or(|again| again.id != invitation.id)
        {
            return Err(invalid_token("invitation"));
        }
        let user_id = match (existing, new_user) {
            (Some(existing), _) => existing.id,
            (None, Some((name, hash))) => {
                match db::users::insert(&mut tx, &invitation.email, name.as_str(), &hash).await {
                    Ok(id) => id,
                    Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                        return Err(ApiError::Conflict {
                            code: "email_taken",
                            detail: "An account with this address was created meanwhile; \
                                     accept the invitation with its password."
                                .into(),
                        });
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            (None, None) => {
                return Err(ApiError::Internal(anyhow::anyhow!(
                    "no user to accept with"
                )));
            }
        };
        match db::memberships::insert(
            &mut tx,
            invitation.organization_id,
            user_id,
            invitation.role.as_str(),
        )
        .await
        {
            Ok(()) => {}
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
                return Err(ApiError::Conflict {
                    code: "already_member",
                    detail: "You are already a member of this organization; sign in instead."
                        .into(),
                });
            }
            Err(e) => return Err(e.into()),
        }
        db::invitations::mark_accepted(&mut tx, invitation.id, user_id).await?;
        // The invitation reached the mailbox: the address is the user's.
        db::email_verifications::mark_verified(&mut tx, user_id).await?;
        let refresh = sessions::create(
            &mut tx,
            invitation.organization_id,
            user_id,
            &client,
            state.settings.auth.refresh_token_ttl,
        )
        .await?;
        db::users::touch_login(&mut tx, user_id).await?;
        audit::record(
            &mut tx,
            invitation.organization_id,
            Some(Actor::User {
                user_id,
                session_id: refresh.session_id,
            }),
            Entry::new("member.joined", &client)
                .on("invitation", invitation.id)
                .with(serde_json::json!({ "role": invitation.role.as_str() })),
        )
        .await?;
        let profile = db::users::profile(&mut tx, user_id).await?;
        tx.commit().await?;
        let pair = token_pair(
            &state,
            User::from(profile),
            OrganizationRef {
                id: invitation.organization_id,
                name: invitation.organization_name,
            },
            invitation.role.as_str(),
            refresh,
        )?;
        Ok(Registered::Created(Json(pair)))
    }

    /// Sign out
    ///
    /// Ends the session of the access token: its refresh token stops working and its access
    /// tokens are refused from now on.
    #[oai(path = "/logout", method = "post", operation_id = "auth_logout")]
    async fn logout(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<OwnAccount>(&state).await?;
        let (user_id, session_id) = user_of(&granted)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        sessions::revoke_own(&mut tx, &granted, user_id, session_id, "logout").await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("auth.logout", &client(req, &state.settings)).on("session", session_id),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Who am I
    ///
    /// The caller: the signed-in user (or the API key), the organization and the role.
    #[oai(path = "/me", method = "get", operation_id = "auth_me")]
    async fn me(&self, auth: BearerAuth, state: Data<&AppState>) -> Result<Json<Me>, ApiError> {
        let granted = auth.grant::<OwnAccount>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let organization = db::organizations::get(&mut tx, &granted).await?;
        let (user, session_id) = match granted.actor() {
            Actor::User {
                user_id,
                session_id,
            } => {
                let p = db::users::profile(&mut tx, user_id).await?;
                (Some(User::from(p)), Some(session_id))
            }
            Actor::ApiKey { .. } | Actor::Agent { .. } => (None, None),
        };
        tx.commit().await?;
        Ok(Json(Me {
            user,
            api_key_id: granted.actor().api_key_id(),
            session_id,
            organization: OrganizationRef {
                id: organization.id,
                name: organization.name,
            },
            role: granted.role().to_string(),
        }))
    }

    /// List my sessions
    ///
    /// Your live sessions in this organization, newest first.
    #[oai(
        path = "/sessions",
        method = "get",
        operation_id = "auth_sessions_list"
    )]
    async fn sessions(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<SessionList>, ApiError> {
        let granted = auth.grant::<OwnAccount>(&state).await?;
        let (user_id, current) = user_of(&granted)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let items = sessions::list_live(&mut tx, &granted, user_id)
            .await?
            .into_iter()
            .map(|s| Session {
                current: s.id == current,
                id: s.id,
                user_agent: s.user_agent,
                ip_address: s.ip_address,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                expires_at: s.expires_at,
            })
            .collect();
        tx.commit().await?;
        Ok(Json(SessionList { items }))
    }

    /// Revoke one of my sessions
    ///
    /// Signs one of your sessions out (another device, or this one). 404 `session_not_found`
    /// for a session that is not yours or already ended.
    #[oai(
        path = "/sessions/:id",
        method = "delete",
        operation_id = "auth_sessions_revoke"
    )]
    async fn revoke_session(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<OwnAccount>(&state).await?;
        let (user_id, _) = user_of(&granted)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !sessions::revoke_own(&mut tx, &granted, user_id, id.0, "logout").await? {
            return Err(ApiError::NotFound {
                code: "session_not_found",
                detail: "You have no live session with this id.".into(),
            });
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("auth.session_revoked", &client(req, &state.settings)).on("session", id.0),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}
