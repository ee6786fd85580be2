//! Sending accounts. SMTP passwords (and, with OAuth, tokens) are stored only sealed with
//! `ZOARK_ENCRYPTION_KEY`; nothing here returns them except [`smtp_for_sending`],
//! [`oauth_for_sending`] and [`lock_oauth_for_refresh`], for the worker.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageEmailAccounts, ReadEmailAccounts};

/// Whether an account can send, and if not, what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, sqlx::Type)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AccountStatus {
    /// It sends.
    Active,
    /// Gmail or Outlook refused its tokens: someone must connect it again.
    NeedsReauth,
    /// Its SMTP settings cannot work (`status_reason` says why): someone must change them.
    NeedsAttention,
    /// Taken out of service.
    Disabled,
}

impl AccountStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsReauth => "needs_reauth",
            Self::NeedsAttention => "needs_attention",
            Self::Disabled => "disabled",
        }
    }
}

/// An account as shown: never its secrets.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub provider: String,
    pub display_name: String,
    pub from_address: String,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<i32>,
    pub smtp_security: Option<String>,
    pub smtp_username: Option<String>,
    pub has_password: bool,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where SMTP passwords are sealed (bound to their account: [`crate::crypto::Binding`]).
pub const SMTP_PASSWORD: (&str, &str) = ("email_accounts", "smtp_password_ciphertext");
/// Where OAuth access tokens are sealed.
pub const OAUTH_ACCESS_TOKEN: (&str, &str) = ("email_accounts", "oauth_access_token_ciphertext");
/// Where OAuth refresh tokens are sealed.
pub const OAUTH_REFRESH_TOKEN: (&str, &str) = ("email_accounts", "oauth_refresh_token_ciphertext");
/// Where PKCE verifiers of pending connections are sealed.
pub const PKCE_VERIFIER: (&str, &str) = ("oauth_states", "pkce_verifier_ciphertext");

/// An SMTP account's settings, the password still sealed.
#[derive(Debug, Clone)]
pub struct Smtp {
    pub id: Uuid,
    pub display_name: String,
    pub from_address: String,
    pub host: String,
    pub port: u16,
    pub security: String,
    pub username: Option<String>,
    /// `nonce || ciphertext`, or `None` without authentication.
    pub sealed_password: Option<Vec<u8>>,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no such email account")]
    NotFound,
    #[error("another account of this organization already sends from this address")]
    DuplicateAddress,
    #[error("the account is still used by broadcasts or deliveries")]
    InUse,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn write_error(e: sqlx::Error) -> WriteError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            WriteError::DuplicateAddress
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => WriteError::InUse,
        _ => WriteError::Database(e),
    }
}

/// Creates an SMTP account; returns its id.
///
/// # Errors
/// [`WriteError::DuplicateAddress`]; database errors.
pub async fn insert_smtp(
    conn: &mut PgConnection,
    proof: &Granted<ManageEmailAccounts>,
    smtp: &Smtp,
) -> Result<Uuid, WriteError> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO email_accounts (id, organization_id, provider, display_name, from_address,
                                    smtp_host, smtp_port, smtp_security, smtp_username,
                                    smtp_password_ciphertext, created_by)
        VALUES ($10, $1, 'smtp', $2, $3, $4, $5, $6, $7, $8, $9)
        RETURNING id
        "#,
        proof.organization_id(),
        smtp.display_name,
        smtp.from_address,
        smtp.host,
        i32::from(smtp.port),
        smtp.security,
        smtp.username,
        smtp.sealed_password,
        proof.actor().user_id(),
        smtp.id,
    )
    .fetch_one(conn)
    .await
    .map_err(write_error)
}

/// The organization's accounts, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadEmailAccounts>,
) -> sqlx::Result<Vec<Account>> {
    sqlx::query_as!(
        Account,
        r#"
        SELECT id, provider, display_name, from_address, status AS "status: AccountStatus",
               status_reason, smtp_host, smtp_port,
               smtp_security, smtp_username, smtp_password_ciphertext IS NOT NULL AS "has_password!",
               created_by, created_at, updated_at
        FROM email_accounts WHERE organization_id = $1
        ORDER BY created_at DESC, id DESC
        "#,
        proof.organization_id(),
    )
    .fetch_all(conn)
    .await
}

/// One account of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Account>> {
    sqlx::query_as!(
        Account,
        r#"
        SELECT id, provider, display_name, from_address, status AS "status: AccountStatus",
               status_reason, smtp_host, smtp_port,
               smtp_security, smtp_username, smtp_password_ciphertext IS NOT NULL AS "has_password!",
               created_by, created_at, updated_at
        FROM email_accounts WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// A partial update of an SMTP account: `None` leaves a field alone; the username and password
/// take `Some(None)` to clear them.
#[derive(Debug, Clone, Default)]
pub struct SmtpPatch {
    pub display_name: Option<String>,
    pub from_address: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub security: Option<String>,
    pub username: Option<Option<String>>,
    pub sealed_password: Option<Option<Vec<u8>>>,
}

/// Applies `patch`.
///
/// # Errors
/// [`WriteError::NotFound`], [`WriteError::DuplicateAddress`]; database errors.
pub async fn update_smtp(
    conn: &mut PgConnection,
    proof: &Granted<ManageEmailAccounts>,
    id: Uuid,
    patch: &SmtpPatch,
) -> Result<(), WriteError> {
    let updated = sqlx::query!(
        r#"
        UPDATE email_accounts SET
            display_name = coalesce($3, display_name),
            from_address = coalesce($4, from_address),
            smtp_host = coalesce($5, smtp_host),
            smtp_port = coalesce($6, smtp_port),
            smtp_security = coalesce($7, smtp_security),
            smtp_username = CASE WHEN $8 THEN $9 ELSE smtp_username END,
            smtp_password_ciphertext = CASE WHEN $10 THEN $11 ELSE smtp_password_ciphertext END,
            -- New settings may cure what made the account need attention: try them.
            status = CASE WHEN status = 'needs_attention' THEN 'active' ELSE status END,
            status_reason = CASE WHEN status = 'needs_attention' THEN NULL ELSE status_reason END
        WHERE organization_id = $1 AND id = $2 AND provider = 'smtp'
        "#,
        proof.organization_id(),
        id,
        patch.display_name,
        patch.from_address,
        patch.host,
        patch.port.map(i32::from),
        patch.security,
        patch.username.is_some(),
        patch.username.clone().flatten(),
        patch.sealed_password.is_some(),
        patch.sealed_password.clone().flatten(),
    )
    .execute(conn)
    .await
    .map_err(write_error)?;
    if updated.rows_affected() == 0 {
        return Err(WriteError::NotFound);
    }
    Ok(())
}

/// Deletes an account.
///
/// # Errors
/// [`WriteError::NotFound`], [`WriteError::InUse`]; database errors.
pub async fn delete(
    conn: &mut PgConnection,
    proof: &Granted<ManageEmailAccounts>,
    id: Uuid,
) -> Result<(), WriteError> {
    let deleted = sqlx::query!(
        "DELETE FROM email_accounts WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map_err(write_error)?;
    if deleted.rows_affected() == 0 {
        return Err(WriteError::NotFound);
    }
    Ok(())
}

/// An SMTP account's settings for sending (worker side, platform connection).
///
/// # Errors
/// Database errors.
pub async fn smtp_for_sending(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Smtp>> {
    let row = sqlx::query!(
        r#"
        SELECT display_name, from_address, smtp_host AS "host!", smtp_port AS "port!",
               smtp_security AS "security!", smtp_username, smtp_password_ciphertext
        FROM email_accounts
        WHERE organization_id = $1 AND id = $2 AND provider = 'smtp'
        "#,
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Smtp {
        id,
        display_name: r.display_name,
        from_address: r.from_address,
        host: r.host,
        port: u16::try_from(r.port).unwrap_or(587),
        security: r.security,
        username: r.smtp_username,
        sealed_password: r.smtp_password_ciphertext,
    }))
}

/// A pending OAuth connection: the PKCE verifier sealed, the state stored as SHA-256.
///
/// # Errors
/// Database errors.
pub async fn insert_oauth_state(
    conn: &mut PgConnection,
    proof: &Granted<ManageEmailAccounts>,
    id: Uuid,
    (user_id, session_id): (Uuid, Uuid),
    provider: &str,
    state: &str,
    sealed_verifier: &[u8],
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        INSERT INTO oauth_states (id, organization_id, user_id, session_id, provider, state_hash,
                                  pkce_verifier_ciphertext, expires_at)
        VALUES ($7, $1, $2, $3, $4, $5, $6, now() + interval '10 minutes')
        "#,
        proof.organization_id(),
        user_id,
        session_id,
        provider,
        crate::crypto::token_digest(state),
        sealed_verifier,
        id,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// A consumed OAuth state: whose connection it was.
#[derive(Debug, Clone)]
pub struct OAuthState {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub user_id: Uuid,
    pub sealed_verifier: Vec<u8>,
}

/// Spends a live state of `provider` (single use, 10 minutes) issued to this organization's
/// user in this session; `None` for any other.
///
/// # Errors
/// Database errors.
pub async fn consume_oauth_state(
    conn: &mut PgConnection,
    proof: &Granted<ManageEmailAccounts>,
    (user_id, session_id): (Uuid, Uuid),
    provider: &str,
    state: &str,
) -> sqlx::Result<Option<OAuthState>> {
    sqlx::query_as!(
        OAuthState,
        r#"
        UPDATE oauth_states SET consumed_at = now()
        WHERE state_hash = $1 AND provider = $2 AND consumed_at IS NULL AND expires_at > now()
          AND organization_id = $3 AND user_id = $4 AND session_id = $5
        RETURNING id, organization_id, user_id, pkce_verifier_ciphertext AS sealed_verifier
        "#,
        crate::crypto::token_digest(state),
        provider,
        proof.organization_id(),
        user_id,
        session_id,
    )
    .fetch_optional(conn)
    .await
}

/// A connected OAuth account's tokens, sealed.
#[derive(Debug, Clone)]
pub struct OAuthTokens {
    /// The account's id: [`oauth_account_id`]'s, or a new one.
    pub id: Uuid,
    pub provider: String,
    pub display_name: String,
    pub from_address: String,
    pub subject: Option<String>,
    pub sealed_access_token: Vec<u8>,
    pub sealed_refresh_token: Vec<u8>,
    pub expires_at: Option<DateTime<Utc>>,
    pub scopes: Vec<String>,
}

/// The id of the organization's `provider` account for `address`, if there is one; the address
/// stays locked for the transaction (a concurrent connection of it waits), so that tokens sealed
/// for this id are stored in this row.
///
/// # Errors
/// Database errors.
pub async fn oauth_account_id(
    conn: &mut PgConnection,
    organization_id: Uuid,
    provider: &str,
    address: &str,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query!(
        "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
        format!(
            "oauth:{organization_id}:{provider}:{}",
            address.to_lowercase()
        ),
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar!(
        r#"
        SELECT id FROM email_accounts
        WHERE organization_id = $1 AND provider = $2 AND lower(from_address) = lower($3)
        "#,
        organization_id,
        provider,
        address,
    )
    .fetch_optional(conn)
    .await
}

/// Stores a connected account, or refreshes the tokens of the one with the same provider and
/// address (a reconnection makes it active again). Returns its id; `None` when that address is
/// connected to another account of the provider (another OAuth subject): never overwritten.
///
/// # Errors
/// Database errors.
pub async fn upsert_oauth(
    conn: &mut PgConnection,
    organization_id: Uuid,
    created_by: Uuid,
    tokens: &OAuthTokens,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO email_accounts (id, organization_id, provider, display_name, from_address,
                                    oauth_subject, oauth_access_token_ciphertext,
                                    oauth_refresh_token_ciphertext, oauth_expires_at, oauth_scopes,
                                    created_by)
        VALUES ($11, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        ON CONFLICT (organization_id, provider, lower(from_address)) DO UPDATE SET
            oauth_subject = EXCLUDED.oauth_subject,
            oauth_access_token_ciphertext = EXCLUDED.oauth_access_token_ciphertext,
            oauth_refresh_token_ciphertext = EXCLUDED.oauth_refresh_token_ciphertext,
            oauth_expires_at = EXCLUDED.oauth_expires_at,
            oauth_scopes = EXCLUDED.oauth_scopes,
            status = 'active',
            status_reason = NULL
        WHERE email_accounts.oauth_subject IS NULL
           OR email_accounts.oauth_subject = EXCLUDED.oauth_subject
        RETURNING id
        "#,
        organization_id,
        tokens.provider,
        tokens.display_name,
        tokens.from_address,
        tokens.subject,
        tokens.sealed_access_token,
        tokens.sealed_refresh_token,
        tokens.expires_at,
        &tokens.scopes,
        created_by,
        tokens.id,
    )
    .fetch_optional(conn)
    .await
}

/// An OAuth account as the worker sends through it, its tokens still sealed.
#[derive(Debug, Clone)]
pub struct OAuthSending {
    /// `gmail` or `outlook`.
    pub provider: String,
    pub display_name: String,
    pub from_address: String,
    pub status: AccountStatus,
    pub status_reason: Option<String>,
    pub sealed_access_token: Option<Vec<u8>>,
    pub sealed_refresh_token: Option<Vec<u8>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// An OAuth account's settings and tokens for sending (worker side, platform connection).
///
/// # Errors
/// Database errors.
pub async fn oauth_for_sending(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<OAuthSending>> {
    sqlx::query_as!(
        OAuthSending,
        r#"
        SELECT provider, display_name, from_address, status AS "status: AccountStatus",
               status_reason,
               oauth_access_token_ciphertext AS sealed_access_token,
               oauth_refresh_token_ciphertext AS sealed_refresh_token,
               oauth_expires_at AS expires_at
        FROM email_accounts
        WHERE organization_id = $1 AND id = $2 AND provider IN ('gmail', 'outlook')
        "#,
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// [`oauth_for_sending`], the row locked until the transaction ends: one worker refreshes the
/// tokens while the others wait, then see the new ones.
///
/// # Errors
/// Database errors.
pub async fn lock_oauth_for_refresh(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<OAuthSending>> {
    sqlx::query_as!(
        OAuthSending,
        r#"
        SELECT provider, display_name, from_address, status AS "status: AccountStatus",
               status_reason,
               oauth_access_token_ciphertext AS sealed_access_token,
               oauth_refresh_token_ciphertext AS sealed_refresh_token,
               oauth_expires_at AS expires_at
        FROM email_accounts
        WHERE organization_id = $1 AND id = $2 AND provider IN ('gmail', 'outlook')
        FOR UPDATE
        "#,
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Stores refreshed tokens; `sealed_refresh_token` is `None` when the provider kept the old
/// refresh token (then it stays).
///
/// # Errors
/// Database errors.
pub async fn store_refreshed_tokens(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    sealed_access_token: &[u8],
    sealed_refresh_token: Option<&[u8]>,
    expires_at: Option<DateTime<Utc>>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        UPDATE email_accounts SET
            oauth_access_token_ciphertext = $3,
            oauth_refresh_token_ciphertext = coalesce($4, oauth_refresh_token_ciphertext),
            oauth_expires_at = $5
        WHERE organization_id = $1 AND id = $2 AND provider IN ('gmail', 'outlook')
        "#,
        organization_id,
        id,
        sealed_access_token,
        sealed_refresh_token,
        expires_at,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Takes an account out of service, saying why: `needs_reauth` (OAuth tokens refused) until it
/// is reconnected, `needs_attention` (SMTP settings that cannot work) until its settings change.
///
/// # Errors
/// Database errors.
pub async fn take_out_of_service(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    status: AccountStatus,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        UPDATE email_accounts SET status = $3, status_reason = $4
        WHERE organization_id = $1 AND id = $2 AND status = 'active'
        "#,
        organization_id,
        id,
        status as AccountStatus,
        reason,
    )
    .execute(conn)
    .await
    .map(|_| ())
}
