//! Access tokens: HS256 JWTs of `ZOARK_ACCESS_TOKEN_TTL_SECS` (15 minutes) naming the user, the
//! organization and the session. Issuer, audience, expiry and the `typ` claim are all checked;
//! refresh tokens are opaque (`zr_…`) and can never pass as access tokens. Every request also
//! checks the session is still live, so logout and revocation take effect at once.

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::Settings;

/// The audience every access token is issued for and checked against.
pub const AUDIENCE: &str = "zoark-api";
/// The `typ` claim of an access token.
pub const ACCESS_TYPE: &str = "access";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user.
    pub sub: Uuid,
    /// The organization the session is in.
    pub org: Uuid,
    /// The session (refresh-token family).
    pub sid: Uuid,
    pub typ: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

fn issuer(settings: &Settings) -> String {
    settings
        .http
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned()
}

/// A signed access token and its lifetime in seconds.
///
/// # Errors
/// Only if signing fails.
pub fn issue(
    settings: &Settings,
    user_id: Uuid,
    organization_id: Uuid,
    session_id: Uuid,
) -> anyhow::Result<(String, i64)> {
    let ttl = i64::try_from(settings.auth.access_token_ttl.as_secs()).unwrap_or(900);
    let now = Utc::now().timestamp();
    let claims = AccessClaims {
        iss: issuer(settings),
        aud: AUDIENCE.into(),
        sub: user_id,
        org: organization_id,
        sid: session_id,
        typ: ACCESS_TYPE.into(),
        iat: now,
        exp: now + ttl,
        jti: Uuid::now_v7(),
    };
    let key = EncodingKey::from_secret(settings.auth.jwt_secret.expose_secret().as_bytes());
    let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)?;
    Ok((token, ttl))
}

/// The claims of a valid access token: signature, algorithm, issuer, audience, expiry (no
/// leeway) and type all checked. `None` for anything else.
pub fn verify(settings: &Settings, token: &str) -> Option<AccessClaims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[AUDIENCE]);
    validation.set_issuer(&[issuer(settings)]);
    validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
    validation.leeway = 0;
    let key = DecodingKey::from_secret(settings.auth.jwt_secret.expose_secret().as_bytes());
    let data = jsonwebtoken::decode::<AccessClaims>(token, &key, &validation).ok()?;
    (data.claims.typ == ACCESS_TYPE).then_some(data.claims)
}
