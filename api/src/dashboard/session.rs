//! The dashboard's sign-in: a form, then an HttpOnly, SameSite=Strict cookie (Secure when the
//! public URL is https) naming a browser session in the API's `sessions` table, checked on every
//! request like an access token's session. Every state-changing form carries a CSRF token bound
//! to the session (an HMAC of its id); the sign-in form one bound to a nonce cookie.

use std::time::Duration;

use poem::{
    FromRequest, Request, RequestBody, Response,
    http::StatusCode,
    web::{
        Data, Form, Query,
        cookie::{Cookie, CookieJar, SameSite},
    },
};
use serde::{Deserialize, Serialize};
use zoark_core::{
    Settings,
    access::{
        Actor, Granted, OwnAccount, Permission, Principal, ReadAgents, ReadAuditLog, ReadBroadcasts,
    },
    crypto,
    db::{
        audit::{self, Entry},
        organizations::{self, Branding},
        sessions, tenant,
    },
};

use crate::{
    auth::client,
    dashboard::{render_status, see_other},
    error::ApiError,
    routes::auth::{record_login, sign_in as check_sign_in},
    state::AppState,
};

/// The session cookie.
pub const SESSION_COOKIE: &str = "zoark_session";
/// The sign-in form's nonce cookie (its CSRF token is the nonce's HMAC).
const SIGN_IN_COOKIE: &str = "zoark_sign_in";
const CSRF_PURPOSE: &str = "dashboard-csrf";
const SIGN_IN_PURPOSE: &str = "dashboard-sign-in";

fn token(settings: &Settings, purpose: &str, message: &[u8]) -> String {
    hex::encode(crypto::sign(&settings.encryption_key, purpose, message))
}

fn token_matches(settings: &Settings, purpose: &str, message: &[u8], presented: &str) -> bool {
    hex::decode(presented)
        .is_ok_and(|mac| crypto::verify(&settings.encryption_key, purpose, message, &mac))
}

fn cookie(settings: &Settings, name: &str, value: String, max_age: Duration) -> Cookie {
    let mut cookie = Cookie::new_with_str(name, value);
    cookie.set_path("/");
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Strict);
    cookie.set_secure(settings.dashboard.secure_cookie);
    cookie.set_max_age(max_age);
    cookie
}

/// A signed-in person looking at the dashboard.
pub struct Viewer {
    pub principal: Principal,
    pub email: String,
    /// A platform operator (`ZOARK_OPERATORS`).
    pub operator: bool,
    /// The CSRF token of this session, for the forms of the page.
    pub csrf: String,
    pub branding: Branding,
    user_id: uuid::Uuid,
    session_id: uuid::Uuid,
}

/// What the layout shows of the viewer.
#[derive(Serialize)]
pub struct Chrome<'a> {
    pub email: &'a str,
    pub role: String,
    pub operator: bool,
    pub csrf: &'a str,
    pub organization: &'a str,
    pub logo: Option<&'a str>,
    /// The page, for the navigation's `aria-current`.
    pub active: &'a str,
    /// The navigation's entries the role may open.
    pub reads_agents: bool,
    pub reads_broadcasts: bool,
    pub reads_audit_log: bool,
}

impl Viewer {
    /// The proof for `P`.
    ///
    /// # Errors
    /// 403 when the viewer's role lacks `P`.
    pub fn grant<P: Permission>(&self) -> Result<Granted<P>, ApiError> {
        Ok(self.principal.authorize::<P>()?)
    }

    /// Whether the viewer holds `P` (to show or hide an action).
    pub fn may<P: Permission>(&self) -> bool {
        self.principal.role().includes(P::MIN_ROLE)
    }

    /// The layout's part of a page's context.
    pub fn chrome<'a>(&'a self, active: &'a str) -> Chrome<'a> {
        Chrome {
            email: &self.email,
            role: self.principal.role().to_string(),
            operator: self.operator,
            csrf: &self.csrf,
            organization: &self.branding.name,
            logo: self.branding.logo(),
            active,
            reads_agents: self.may::<ReadAgents>(),
            reads_broadcasts: self.may::<ReadBroadcasts>(),
            reads_audit_log: self.may::<ReadAuditLog>(),
        }
    }

    /// The signed-in user.
    pub fn user_id(&self) -> Option<uuid::Uuid> {
        Some(self.user_id)
    }

    /// Refuses anyone but a platform operator.
    ///
    /// # Errors
    /// 403 `operators_only`.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.operator {
            Ok(())
        } else {
            Err(ApiError::Refused {
                code: "operators_only",
                detail: "Only the platform's operators see the whole installation.".into(),
            })
        }
    }

    /// Refuses a form without this session's CSRF token.
    ///
    /// # Errors
    /// 403 `csrf_failed`.
    pub fn check_csrf(&self, state: &AppState, presented: &str) -> Result<(), ApiError> {
        if token_matches(
            &state.settings,
            CSRF_PURPOSE,
            self.session_id.as_bytes(),
            presented,
        ) {
            Ok(())
        } else {
            Err(ApiError::Refused {
                code: "csrf_failed",
                detail: "The form's security token is missing or does not match your session; \
                         reload the page and try again."
                    .into(),
            })
        }
    }
}

/// The principal of a live browser session cookie, for the dashboard and the WebSocket.
///
/// # Errors
/// 401 without a live session.
pub async fn authenticate(
    state: &AppState,
    req: &Request,
) -> Result<(Principal, sessions::BrowserSession), ApiError> {
    let cookie = req
        .cookie()
        .get(SESSION_COOKIE)
        .ok_or(ApiError::Unauthorized)?;
    let mut tx = tenant::system(&state.pool).await?;
    let session = sessions::live_browser(&mut tx, cookie.value_str())
        .await?
        .ok_or(ApiError::Unauthorized)?;
    tx.commit().await?;
    let principal = Principal::authenticated(
        session.organization_id,
        session.role,
        Actor::User {
            user_id: session.user_id,
            session_id: session.session_id,
        },
    );
    Ok((principal, session))
}

impl<'a> FromRequest<'a> for Viewer {
    async fn from_request(req: &'a Request, _body: &mut RequestBody) -> poem::Result<Self> {
        let state = req
            .data::<AppState>()
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no AppState")))?;
        let (principal, session) = authenticate(state, req).await?;
        let mut tx = tenant::system(&state.pool).await.map_err(ApiError::from)?;
        let branding = organizations::branding(&mut tx, session.organization_id)
            .await
            .map_err(ApiError::from)?
            .unwrap_or_else(Branding::zoark);
        tx.commit().await.map_err(ApiError::from)?;
        Ok(Self {
            principal,
            operator: state.settings.dashboard.is_operator(&session.email),
            csrf: token(&state.settings, CSRF_PURPOSE, session.session_id.as_bytes()),
            email: session.email,
            branding,
            user_id: session.user_id,
            session_id: session.session_id,
        })
    }
}

#[derive(Deserialize)]
pub struct SignInQuery {
    #[serde(default)]
    failed: bool,
}

/// The sign-in page: a fresh nonce cookie and its token in the form.
#[poem::handler]
pub async fn sign_in_form(
    state: Data<&AppState>,
    jar: &CookieJar,
    query: Query<SignInQuery>,
) -> Result<Response, ApiError> {
    sign_in_page(&state, jar, StatusCode::OK, query.failed.then_some(FAILED))
}

const FAILED: &str = "The email or password is not right.";

fn sign_in_page(
    state: &AppState,
    jar: &CookieJar,
    status: StatusCode,
    error: Option<&str>,
) -> Result<Response, ApiError> {
    let nonce = crypto::random_token(16);
    let csrf = token(&state.settings, SIGN_IN_PURPOSE, nonce.as_bytes());
    jar.add(cookie(
        &state.settings,
        SIGN_IN_COOKIE,
        nonce,
        Duration::from_secs(3600),
    ));
    render_status(
        status,
        "sign_in.html",
        minijinja::context! { csrf => csrf, error => error },
    )
}

#[derive(Deserialize)]
pub struct SignInForm {
    email: String,
    password: String,
    #[serde(default)]
    csrf: String,
}

/// Signs in with the API's checks and throttling, then sets the session cookie.
#[poem::handler]
pub async fn sign_in(
    state: Data<&AppState>,
    req: &Request,
    jar: &CookieJar,
    form: Form<SignInForm>,
) -> Result<Response, ApiError> {
    let form = form.0;
    let nonce_ok = jar.get(SIGN_IN_COOKIE).is_some_and(|nonce| {
        token_matches(
            &state.settings,
            SIGN_IN_PURPOSE,
            nonce.value_str().as_bytes(),
            &form.csrf,
        )
    });
    if !nonce_ok {
        let message = "The sign-in form expired; please try again.";
        return sign_in_page(&state, jar, StatusCode::FORBIDDEN, Some(message));
    }
    let client = client(req, &state.settings);
    if let Err(retry_after) = state.rate_limits.check_sign_in(&client) {
        let message = format!("Too many attempts; try again in {retry_after} seconds.");
        return sign_in_page(&state, jar, StatusCode::TOO_MANY_REQUESTS, Some(&message));
    }
    let (mut tx, signed_in) =
        match check_sign_in(&state, &client, &form.email, form.password, None).await {
            Ok(ok) => ok,
            Err(ApiError::Unauthorized) => {
                return sign_in_page(&state, jar, StatusCode::UNAUTHORIZED, Some(FAILED));
            }
            Err(ApiError::RateLimited { retry_after }) => {
                let message = format!("Too many attempts; try again in {retry_after} seconds.");
                return sign_in_page(&state, jar, StatusCode::TOO_MANY_REQUESTS, Some(&message));
            }
            Err(other) => return Err(other),
        };
    let ttl = state.settings.dashboard.session_ttl;
    let issued = sessions::create_browser(
        &mut tx,
        signed_in.membership.organization_id,
        signed_in.user.id,
        &client,
        ttl,
    )
    .await?;
    record_login(
        &mut tx,
        &client,
        &signed_in.membership,
        signed_in.user.id,
        issued.session_id,
    )
    .await?;
    tx.commit().await?;
    jar.add(cookie(
        &state.settings,
        SIGN_IN_COOKIE,
        String::new(),
        Duration::ZERO,
    ));
    jar.add(cookie(&state.settings, SESSION_COOKIE, issued.cookie, ttl));
    Ok(see_other("/dashboard"))
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub csrf: String,
}

/// Ends the session (for the API too) and forgets the cookie.
#[poem::handler]
pub async fn sign_out(
    state: Data<&AppState>,
    req: &Request,
    jar: &CookieJar,
    viewer: Viewer,
    form: Form<CsrfForm>,
) -> Result<Response, ApiError> {
    viewer.check_csrf(&state, &form.csrf)?;
    let granted = viewer.grant::<OwnAccount>()?;
    let mut tx = tenant::begin(&state.pool, &granted).await?;
    sessions::revoke_own(
        &mut tx,
        &granted,
        viewer.user_id,
        viewer.session_id,
        "logout",
    )
    .await?;
    audit::record_granted(
        &mut tx,
        &granted,
        Entry::new("auth.logout", &client(req, &state.settings)).on("session", viewer.session_id),
    )
    .await?;
    tx.commit().await?;
    jar.add(cookie(
        &state.settings,
        SESSION_COOKIE,
        String::new(),
        Duration::ZERO,
    ));
    Ok(see_other("/dashboard/sign-in"))
}
