//! `/dashboard`: the job status dashboard, server-rendered HTML (minijinja templates in
//! `templates/`) with one small script (`static/app.js`) for live updates.
//!
//! - [`session`]: the sign-in form, the cookie session (the API's sessions table, so sign-out and
//!   revocation apply at once) and the CSRF token every state-changing form carries;
//! - [`pages`]: what each page shows and the actions it offers, through the same queries and
//!   permissions as `/api/v1`.
//!
//! Every response carries a Content-Security-Policy without inline script or style (the
//! organization's color comes from `brand.css`), and errors are HTML pages, not problem+json.

pub mod activity;
pub mod charts;
pub mod pages;
pub mod session;

use std::sync::OnceLock;

use minijinja::{Environment, UndefinedBehavior};
use poem::{
    Endpoint, EndpointExt, IntoResponse, Middleware, Request, Response, Route,
    http::{HeaderValue, StatusCode, header},
};
use serde::Serialize;

use crate::{error::ApiError, middleware::RequestId};

pub use session::Viewer;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("templates/layout.html")),
    ("macros.html", include_str!("templates/macros.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("error.html", include_str!("templates/error.html")),
    ("backups.html", include_str!("templates/backups.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("jobs.html", include_str!("templates/jobs.html")),
    ("job.html", include_str!("templates/job.html")),
    ("queues.html", include_str!("templates/queues.html")),
    ("bulk.html", include_str!("templates/bulk.html")),
    ("schedules.html", include_str!("templates/schedules.html")),
    ("agent_runs.html", include_str!("templates/agent_runs.html")),
    ("agent_run.html", include_str!("templates/agent_run.html")),
    ("broadcasts.html", include_str!("templates/broadcasts.html")),
    ("audit_log.html", include_str!("templates/audit_log.html")),
];

const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

/// No inline script or style anywhere; the WebSocket goes to the same origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' https: data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn templates() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_filter("when", when);
        for (name, source) in TEMPLATES {
            // The templates are part of the binary; a broken one fails the dashboard's tests.
            if let Err(error) = env.add_template(name, source) {
                tracing::error!(%error, template = name, "dashboard template does not parse");
            }
        }
        env
    })
}

/// An RFC 3339 time as the pages show times: `2026-12-04 10:00:00 UTC`.
fn when(value: String) -> String {
    chrono::DateTime::parse_from_rfc3339(&value).map_or(value, |t| {
        t.with_timezone(&chrono::Utc)
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    })
}

/// A page rendered from template `name` with `context`.
///
/// # Errors
/// A template error (a bug: every page is rendered by the tests).
pub fn render(name: &str, context: impl Serialize) -> Result<Response, ApiError> {
    render_status(StatusCode::OK, name, context)
}

pub(crate) fn render_status(
    status: StatusCode,
    name: &str,
    context: impl Serialize,
) -> Result<Response, ApiError> {
    let html = templates()
        .get_template(name)
        .and_then(|t| t.render(context))
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("rendering {name}: {e:#}")))?;
    Ok(Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .body(html))
}

/// A redirect after a form (303: the browser follows with a GET).
pub fn see_other(location: &str) -> Response {
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, location)
        .finish()
}

fn asset(content_type: &'static str, body: &'static str) -> impl Endpoint<Output = Response> {
    poem::endpoint::make_sync(move |_| {
        Response::builder()
            .content_type(content_type)
            .header(header::CACHE_CONTROL, "public, max-age=300")
            .body(body)
    })
}

/// The dashboard's routes, to nest at `/dashboard`.
pub fn routes() -> impl Endpoint<Output = Response> {
    Route::new()
        .at("/", poem::get(pages::overview))
        .at(
            "/sign-in",
            poem::get(session::sign_in_form).post(session::sign_in),
        )
        .at("/sign-out", poem::post(session::sign_out))
        .at("/jobs", poem::get(pages::jobs_page))
        .at("/jobs/bulk", poem::post(pages::bulk))
        .at("/jobs/:id", poem::get(pages::job_page))
        .at("/jobs/:id/:action", poem::post(pages::job_action))
        .at("/queues", poem::get(pages::queues_page))
        .at("/queues/:name/:action", poem::post(pages::queue_action))
        .at("/platform", poem::get(pages::platform_overview))
        .at("/platform/jobs", poem::get(pages::platform_jobs))
        .at("/platform/jobs/:id", poem::get(pages::platform_job_page))
        .at(
            "/platform/jobs/:id/:action",
            poem::post(pages::platform_job_action),
        )
        .at("/platform/queues", poem::get(pages::platform_queues))
        .at("/platform/backups", poem::get(pages::platform_backups))
        .at(
            "/platform/queues/:name/:action",
            poem::post(pages::platform_queue_action),
        )
        .at("/schedules", poem::get(activity::schedules))
        .at("/agent-runs", poem::get(activity::agent_runs))
        .at("/agent-runs/:id", poem::get(activity::agent_run))
        .at("/broadcasts", poem::get(activity::broadcasts))
        .at("/audit-log", poem::get(activity::audit_log))
        .at("/brand.css", poem::get(pages::brand_css))
        .at(
            "/static/app.js",
            asset("text/javascript; charset=utf-8", APP_JS),
        )
        .at("/static/app.css", asset("text/css; charset=utf-8", APP_CSS))
        .with(Html)
}

/// Security headers on every dashboard response, and errors as HTML pages.
struct Html;

impl<E: Endpoint> Middleware<E> for Html {
    type Output = HtmlEndpoint<E>;

    fn transform(&self, ep: E) -> Self::Output {
        HtmlEndpoint(ep)
    }
}

struct HtmlEndpoint<E>(E);

impl<E: Endpoint> Endpoint for HtmlEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let request_id = req.data::<RequestId>().map(|r| r.0.clone());
        let mut response = match self.0.call(req).await {
            Ok(output) => output.into_response(),
            Err(err) => error_page(&ApiError::from_poem(err), request_id.as_deref()),
        };
        let headers = response.headers_mut();
        for (name, value) in [
            ("content-security-policy", CSP),
            ("x-content-type-options", "nosniff"),
            ("x-frame-options", "DENY"),
            ("referrer-policy", "same-origin"),
            ("cross-origin-opener-policy", "same-origin"),
        ] {
            headers.insert(name, HeaderValue::from_static(value));
        }
        if !headers.contains_key(header::CACHE_CONTROL) {
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        Ok(response)
    }
}

/// An error as a page: sign-in for 401, else the status and what went wrong.
fn error_page(error: &ApiError, request_id: Option<&str>) -> Response {
    if matches!(error, ApiError::Unauthorized) {
        return see_other("/dashboard/sign-in");
    }
    if error.is_pool_exhausted() {
        return error_page(&ApiError::busy(), request_id);
    }
    if let ApiError::Internal(cause) = error {
        tracing::error!(error = format!("{cause:#}"), "dashboard request failed");
    }
    let problem = error.to_problem();
    let context = minijinja::context! {
        status => problem.status,
        title => problem.title,
        detail => problem.detail,
        request_id => request_id,
    };
    let mut page = render_status(error.status(), "error.html", context).unwrap_or_else(|_| {
        Response::builder()
            .status(error.status())
            .content_type("text/plain; charset=utf-8")
            .body(problem.title)
    });
    if matches!(error, ApiError::Unavailable { .. }) {
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    page
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic)]

    #[test]
    fn every_template_parses() {
        let env = super::templates();
        for (name, _) in super::TEMPLATES {
            env.get_template(name)
                .unwrap_or_else(|e| panic!("{name}: {e:#}"));
        }
    }
}
