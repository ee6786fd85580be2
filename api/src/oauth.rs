//! Connecting Gmail and Outlook sending accounts: the authorization-code flow with PKCE
//! (oauth2 crate, HTTP through our reqwest), a `state` bound to the user and organization, and
//! the send scopes (Gmail `gmail.send`; Microsoft `Mail.Send offline_access`) plus `openid
//! email`, whose ID token names the address the account sends from.

use base64::Engine as _;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
    basic::{
        BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
        BasicTokenType,
    },
};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use zoark_core::{Settings, settings::OAuthClient};

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
        match self {
            Self::Gmail => "gmail",
            Self::Outlook => "outlook",
        }
    }

    fn settings(self, settings: &Settings) -> &OAuthClient {
        match self {
            Self::Gmail => &settings.oauth.google,
            Self::Outlook => &settings.oauth.microsoft,
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

/// The OpenID Connect ID token that comes with the tokens.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct IdTokenField {
    pub id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenField {}

pub type TokenResponse = StandardTokenResponse<IdTokenField, BasicTokenType>;

type Client = oauth2::Client<
    BasicErrorResponse,
    TokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("{0} is not configured: set its client id and secret")]
    NotConfigured(&'static str),
    #[error("invalid OAuth URL: {0}")]
    Url(String),
    #[error("the token exchange failed: {0}")]
    Exchange(String),
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

fn client(settings: &Settings, provider: OAuthProvider) -> Result<Client, OAuthError> {
    let config = provider.settings(settings);
    let (Some(id), Some(secret)) = (&config.client_id, &config.client_secret) else {
        return Err(OAuthError::NotConfigured(provider.as_str()));
    };
    let url = |e: oauth2::url::ParseError| OAuthError::Url(e.to_string());
    Ok(oauth2::Client::new(ClientId::new(id.clone()))
        .set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
        .set_auth_uri(AuthUrl::new(config.authorize_url.to_string()).map_err(url)?)
        .set_token_uri(TokenUrl::new(config.token_url.to_string()).map_err(url)?)
        .set_redirect_uri(RedirectUrl::new(redirect_url(settings, provider)).map_err(url)?))
}

/// The authorization URL to send the user to, the `state` and the PKCE verifier to keep.
///
/// # Errors
/// When the provider is not configured.
pub fn start(
    settings: &Settings,
    provider: OAuthProvider,
) -> Result<(String, String, String), OAuthError> {
    let client = client(settings, provider)?;
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
    let client = client(settings, provider)?;
    // An owned client per request keeps the future free of borrowed lifetimes (Send for any).
    let http = http.clone();
    let send = move |request: oauth2::HttpRequest| {
        let http = http.clone();
        async move { send(&http, request).await }
    };
    client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&send)
        .await
        .map_err(|e| OAuthError::Exchange(exchange_error(&e)))
}

fn exchange_error(e: &oauth2::RequestTokenError<reqwest::Error, BasicErrorResponse>) -> String {
    match e {
        oauth2::RequestTokenError::ServerResponse(r) => r.to_string(),
        other => format!(
            "{other}: {}",
            std::error::Error::source(other)
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
    }
}

/// oauth2's HTTP requests through our reqwest (0.13, rustls).
async fn send(
    http: &reqwest::Client,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, reqwest::Error> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await?.to_vec();
    let mut out = oauth2::HttpResponse::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Who the tokens belong to, from the ID token's claims. The ID token came straight from the
/// provider's token endpoint over TLS, in answer to our own code exchange, so its signature
/// adds nothing (OpenID Connect Core §3.1.3.7).
#[derive(Debug, Clone, Deserialize)]
pub struct Identity {
    pub sub: Option<String>,
    pub email: Option<String>,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
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
