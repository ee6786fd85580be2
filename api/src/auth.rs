//! Who is calling: `Authorization: Bearer <access JWT>` (a user's session) or
//! `Authorization: Bearer zk_…` (an organization API key), resolved to a [`Principal`]; and
//! [`BearerAuth::grant`], which checks a permission and returns the proof handlers need to
//! reach their organization's rows (see `zoark_core::access`).

use std::net::IpAddr;

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use zoark_core::{
    Settings,
    access::{Actor, Denied, Granted, Permission, Principal, Role},
    db::{audit::Client, tenant},
};

use crate::{error::ApiError, state::AppState, tokens};

/// `Authorization: Bearer <access token or zk_ API key>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT access token, or an API key zk_…")]
pub struct BearerAuth(pub Bearer);

impl BearerAuth {
    /// The authenticated caller.
    ///
    /// # Errors
    /// 401 for a missing, malformed, expired or revoked credential.
    pub async fn principal(&self, state: &AppState) -> Result<Principal, ApiError> {
        authenticate(state, &self.0.token).await
    }

    /// The caller, if they hold `P`.
    ///
    /// # Errors
    /// 401 as [`Self::principal`]; 403 when the caller's role lacks `P`.
    pub async fn grant<P: Permission>(&self, state: &AppState) -> Result<Granted<P>, ApiError> {
        Ok(self.principal(state).await?.authorize::<P>()?)
    }
}

impl From<Denied> for ApiError {
    fn from(denied: Denied) -> Self {
        ApiError::Forbidden(denied.to_string())
    }
}

/// Resolves a bearer token to its principal.
///
/// # Errors
/// 401 for an unknown, revoked or expired token, or one of a session that ended.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    if token.starts_with("zk_") {
        let digest = zoark_core::crypto::token_digest(token);
        let mut tx = tenant::system(&state.pool).await?;
        let key = zoark_core::db::api_keys::authenticate(&mut tx, &digest)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        tx.commit().await?;
        let role: Role = key.role.parse().map_err(|_| ApiError::Unauthorized)?;
        return Ok(Principal::authenticated(
            key.organization_id,
            role,
            Actor::ApiKey { key_id: key.id },
        ));
    }
    let claims = tokens::verify(&state.settings, token).ok_or(ApiError::Unauthorized)?;
    let mut tx = tenant::system(&state.pool).await?;
    let role = zoark_core::db::sessions::live_role(&mut tx, claims.org, claims.sid, claims.sub)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    tx.commit().await?;
    Ok(Principal::authenticated(
        claims.org,
        role,
        Actor::User {
            user_id: claims.sub,
            session_id: claims.sid,
        },
    ))
}

/// The bearer token of a plain poem request (the WebSocket upgrade).
pub fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

/// The client's address and user agent. Behind a proxy (`ZOARK_BEHIND_PROXY`), the address is
/// the last `X-Forwarded-For` entry: the one the proxy itself appended, which the client cannot
/// forge.
pub fn client(req: &Request, settings: &Settings) -> Client {
    let forwarded = settings
        .http
        .behind_proxy
        .then(|| {
            req.header("x-forwarded-for")?
                .rsplit(',')
                .next()?
                .trim()
                .parse::<IpAddr>()
                .ok()
        })
        .flatten();
    let ip = forwarded.or_else(|| req.remote_addr().as_socket_addr().map(|a| a.ip()));
    Client {
        ip,
        user_agent: req.header("user-agent").map(str::to_owned),
    }
}
