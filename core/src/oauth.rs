//! The OAuth clients of the email providers (Google for Gmail, Microsoft for Outlook): client
//! construction from the settings, their token endpoint through our reqwest (0.13, rustls), the
//! authorization-code exchange (the API's connect flow) and the refresh (the worker, before
//! sending).

use chrono::{DateTime, Utc};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeVerifier, RedirectUrl, RefreshToken, StandardRevocableToken,
    StandardTokenResponse, TokenResponse as _, TokenUrl,
    basic::{
        BasicErrorResponse, BasicErrorResponseType, BasicRevocationErrorResponse,
        BasicTokenIntrospectionResponse, BasicTokenType,
    },
};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};

use crate::{Settings, settings::OAuthClient};

/// A provider whose accounts connect over OAuth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Gmail,
    Outlook,
}

impl Provider {
    /// As stored in `email_accounts.provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gmail => "gmail",
            Self::Outlook => "outlook",
        }
    }

    /// The OAuth provider of a stored `email_accounts.provider`; `None` for SMTP.
    pub fn from_stored(provider: &str) -> Option<Self> {
        match provider {
            "gmail" => Some(Self::Gmail),
            "outlook" => Some(Self::Outlook),
            _ => None,
        }
    }

    /// Its client credentials and URLs.
    pub fn settings(self, settings: &Settings) -> &OAuthClient {
        match self {
            Self::Gmail => &settings.oauth.google,
            Self::Outlook => &settings.oauth.microsoft,
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

/// An OAuth client with its authorization and token endpoints set.
pub type Client = oauth2::Client<
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
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The provider refused the refresh token (`invalid_grant`: revoked, expired, password
    /// changed): only reconnecting the account helps.
    #[error("the provider refused the refresh token: {0}")]
    InvalidGrant(String),
    /// Anything else (network, timeout, 5xx, another error answer): may pass later.
    #[error("refreshing the access token failed: {0}")]
    Other(String),
}

/// Fresh tokens from the token endpoint.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: SecretString,
    /// Some providers rotate the refresh token; `None` means keep the one stored.
    pub refresh_token: Option<SecretString>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// The provider's client from the settings, its authorization and token endpoints set.
///
/// # Errors
/// When the provider is not configured, or a URL is unusable.
pub fn client(settings: &Settings, provider: Provider) -> Result<Client, OAuthError> {
    let config = provider.settings(settings);
    let (Some(id), Some(secret)) = (&config.client_id, &config.client_secret) else {
        return Err(OAuthError::NotConfigured(provider.as_str()));
    };
    let url = |e: oauth2::url::ParseError| OAuthError::Url(e.to_string());
    Ok(oauth2::Client::new(ClientId::new(id.clone()))
        .set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
        .set_auth_uri(AuthUrl::new(config.authorize_url.to_string()).map_err(url)?)
        .set_token_uri(TokenUrl::new(config.token_url.to_string()).map_err(url)?))
}

/// Exchanges an authorization code (with its PKCE verifier and the redirect URL the
/// authorization request named) for tokens.
///
/// # Errors
/// A refusal or an unreachable provider.
pub async fn exchange_code(
    settings: &Settings,
    http: &reqwest::Client,
    provider: Provider,
    redirect_url: &str,
    code: &str,
    verifier: String,
) -> Result<TokenResponse, OAuthError> {
    let client = client(settings, provider)?.set_redirect_uri(
        RedirectUrl::new(redirect_url.to_owned()).map_err(|e| OAuthError::Url(e.to_string()))?,
    );
    let send = adapter(http);
    client
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&send)
        .await
        .map_err(|e| OAuthError::Exchange(describe(&e)))
}

/// New tokens for `refresh_token`.
///
/// # Errors
/// [`RefreshError::InvalidGrant`] when the provider refuses the grant, [`RefreshError::Other`]
/// for anything else (an unconfigured provider included).
pub async fn refresh(
    settings: &Settings,
    http: &reqwest::Client,
    provider: Provider,
    refresh_token: &str,
) -> Result<Tokens, RefreshError> {
    let client = client(settings, provider).map_err(|e| RefreshError::Other(e.to_string()))?;
    let send = adapter(http);
    let refresh_token = RefreshToken::new(refresh_token.to_owned());
    let response = client
        .exchange_refresh_token(&refresh_token)
        .request_async(&send)
        .await
        .map_err(|e| match &e {
            oauth2::RequestTokenError::ServerResponse(r)
                if *r.error() == BasicErrorResponseType::InvalidGrant =>
            {
                RefreshError::InvalidGrant(r.to_string())
            }
            _ => RefreshError::Other(describe(&e)),
        })?;
    Ok(Tokens {
        access_token: SecretString::from(response.access_token().secret().clone()),
        refresh_token: response
            .refresh_token()
            .map(|t| SecretString::from(t.secret().clone())),
        expires_at: response
            .expires_in()
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d),
    })
}

fn describe(e: &oauth2::RequestTokenError<reqwest::Error, BasicErrorResponse>) -> String {
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

/// oauth2's HTTP client: an owned reqwest client per request keeps the future free of borrowed
/// lifetimes (so it is `Send` for any caller).
fn adapter(
    http: &reqwest::Client,
) -> impl Fn(
    oauth2::HttpRequest,
) -> std::pin::Pin<
    Box<dyn Future<Output = Result<oauth2::HttpResponse, reqwest::Error>> + Send>,
> {
    let http = http.clone();
    move |request| {
        let http = http.clone();
        Box::pin(async move { send(&http, request).await })
    }
}

/// One oauth2 request through reqwest.
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
