//! Connecting Gmail and Outlook sending accounts: the authorization-code flow with PKCE (the
//! client and its token endpoint live in `zoark_core::oauth`), a `state` bound to the user and
//! organization, and the send scopes (Gmail `gmail.send`; Microsoft `Mail.Send offline_access`)
//! plus `openid email`, whose ID token names the address the account sends from.

use base64::Engine as _;
use oauth2::{CsrfToken, PkceCodeChallenge, RedirectUrl, Scope};
use serde::Deserialize;
use zoark_core::{
    Settings,
    oauth::{self as core_oauth, Provider, TokenResponse},
};

/// The providers connected over OAuth.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum OAuthProvider {
    Gmail,
    Outlook,
}

impl OAuthProvider {
    pub fn as_str(self) -> &'static str {
        self.provider().as_str()
    }

    fn provider(self) -> Provider {
        match self {
            Self::Gmail => Provider::Gmail,
            Self::Outlook => Provider::Outlook,
        }
    }

    fn scopes(self) -> &'static [&'static str] {
        match self {
            Self::Gmail => &[
                "openid",
                "email",
                "https://www.googleapis.com/auth/gmail.send",
            ],
            Self::Outlook => &["openid", "email", "offline_access", "Mail.Send"],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error(transparent)]
    Client(#[from] core_oauth::OAuthError),
    #[error("the provider's ID token names no email address")]
    NoEmail,
}

/// Where the provider sends the browser back.
pub fn redirect_url(settings: &Settings, provider: OAuthProvider) -> String {
    let mut url = settings.http.public_url.clone();
    url.set_path(&format!(
        "/api/v1/email-accounts/oauth/{}/callback",
        provider.as_str()
    ));
    url.to_string()
}

/// The authorization URL to send the user to, the `state` and the PKCE verifier to keep.
///
/// # Errors
/// When the provider is not configured.
pub fn start(
    settings: &Settings,
    provider: OAuthProvider,
) -> Result<(String, String, String), OAuthError> {
    let redirect = RedirectUrl::new(redirect_url(settings, provider))
        .map_err(|e| core_oauth::OAuthError::Url(e.to_string()))?;
    let client = core_oauth::client(settings, provider.provider())?.set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(CsrfToken::new_random)
        .set_pkce_challenge(challenge);
    for scope in provider.scopes() {
        request = request.add_scope(Scope::new((*scope).to_owned()));
    }
    if provider == OAuthProvider::Gmail {
        // A refresh token every time, even when the user connected before.
        request = request
            .add_extra_param("access_type", "offline")
            .add_extra_param("prompt", "consent");
    }
    let (url, state) = request.url();
    Ok((
        url.to_string(),
        state.secret().clone(),
        verifier.secret().clone(),
    ))
}

/// Exchanges the code (with its PKCE verifier) for tokens.
///
/// # Errors
/// A refusal or an unreachable provider.
pub async fn exchange(
    settings: &Settings,
    http: &reqwest::Client,
    provider: OAuthProvider,
    code: &str,
    verifier: String,
) -> Result<TokenResponse, OAuthError> {
    Ok(core_oauth::exchange_code(
        settings,
        http,
        provider.provider(),
        &redirect_url(settings, provider),
        code,
        verifier,
    )
    .await?)
}

/// Who the tokens belong to, from the ID token's claims. The ID token came straight from the
/// provider's token endpoint over TLS, in answer to our own code exchange, so its signature
/// adds nothing (OpenID Connect Core §3.1.3.7).
#[derive(Debug, Clone, Deserialize)]
pub struct Identity {
    pub sub: Option<String>,
    pub email: Option<String>,
    /// Google sends a boolean; some providers a string; Microsoft usually none.
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
}

impl Identity {
    /// Whether the provider vouches for the address: `None` when it says nothing.
    pub fn email_verified(&self) -> Option<bool> {
        match self.email_verified.as_ref()? {
            serde_json::Value::Bool(b) => Some(*b),
            serde_json::Value::String(s) => Some(s.eq_ignore_ascii_case("true")),
            _ => None,
        }
    }
}

/// The identity in `id_token`.
///
/// # Errors
/// When the token is not a JWT or names no email address.
pub fn identity(id_token: Option<&str>) -> Result<(Identity, String), OAuthError> {
    let claims = id_token
        .and_then(|t| t.split('.').nth(1))
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<Identity>(&json).ok())
        .ok_or(OAuthError::NoEmail)?;
    let email = claims
        .email
        .clone()
        .or_else(|| {
            claims
                .preferred_username
                .clone()
                .filter(|u| u.contains('@'))
        })
        .ok_or(OAuthError::NoEmail)?;
    Ok((claims, email))
}
