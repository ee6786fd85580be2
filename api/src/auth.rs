//! Who is calling. For now an organization API key (`Authorization: Bearer zk_…`); the identity
//! issue adds user access tokens behind the same [`Caller`].

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// `Authorization: Bearer <token>`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "zk_ API key")]
pub struct BearerAuth(pub Bearer);

/// An authenticated caller, always inside one organization.
#[derive(Debug, Clone)]
pub struct Caller {
    pub organization_id: Uuid,
    pub role: Role,
}

/// The five roles, most powerful first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Manager,
    Lead,
    Member,
    Viewer,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Self::Admin,
            "manager" => Self::Manager,
            "lead" => Self::Lead,
            "member" => Self::Member,
            "viewer" => Self::Viewer,
            _ => return None,
        })
    }
}

impl Caller {
    /// At least `role` (admin ≥ manager ≥ lead ≥ member ≥ viewer).
    ///
    /// # Errors
    /// 403 when the caller's role is below.
    pub fn require(&self, role: Role, action: &'static str) -> Result<(), ApiError> {
        if self.role <= role {
            Ok(())
        } else {
            Err(ApiError::Forbidden(action))
        }
    }
}

/// Resolves a bearer token to its caller.
///
/// # Errors
/// 401 for an unknown, revoked or expired token.
pub async fn authenticate(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if !token.starts_with("zk_") {
        return Err(ApiError::Unauthorized);
    }
    let digest = zoark_core::crypto::token_digest(token);
    let mut conn = state.pool.acquire().await.map_err(anyhow::Error::from)?;
    let key = zoark_core::db::api_keys::authenticate(&mut conn, &digest)
        .await
        .map_err(anyhow::Error::from)?
        .ok_or(ApiError::Unauthorized)?;
    let role = Role::parse(&key.role).ok_or(ApiError::Unauthorized)?;
    Ok(Caller {
        organization_id: key.organization_id,
        role,
    })
}

/// The bearer token of a plain poem request (the WebSocket upgrade).
pub fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}
