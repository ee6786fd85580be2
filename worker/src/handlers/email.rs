//! `email.send_system`: opens the sealed parameters, renders the template with the branding of
//! the job's organization (Zoark's own for platform jobs such as password resets), sends it.
//! `auth.password_reset`: a reset link requested for an address, sent when it has an account.

use std::sync::Arc;

use anyhow::Context as _;
use uuid::Uuid;
use zoark_core::db::organizations::{self, Branding};
use zoark_jobs::{
    Opts,
    email::{RequestPasswordReset, SendSystemEmail, SystemTemplate},
};

use crate::{
    WorkerContext,
    email::{Mailer, render},
    engine::{JobContext, JobError, Registry},
};

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let resets = ctx.clone();
    let registry = registry.register(move |job: RequestPasswordReset, _run: JobContext| {
        password_reset(resets.clone(), job)
    });
    // One transport (and SMTP connection pool) per worker process.
    let mailer = Mailer::from_settings(&ctx.settings.email).map(Arc::new);
    let ctx = ctx.clone();
    registry.register(move |job: SendSystemEmail, run: JobContext| {
        let ctx = ctx.clone();
        let mailer = mailer
            .as_ref()
            .map(Arc::clone)
            .map_err(|e| anyhow::anyhow!("the email transport is misconfigured: {e:#}"));
        async move {
            let mailer = mailer.map_err(JobError::Fatal)?;
            let params = zoark_core::crypto::open_text(&ctx.settings.encryption_key, &job.sealed_params)
                .map_err(|e| JobError::Fatal(anyhow::anyhow!("the parameters cannot be opened: {e}")))?;
            let params: serde_json::Value =
                serde_json::from_slice(&params).context("the parameters are not JSON").map_err(JobError::Fatal)?;
            let branding = branding(&ctx.pool, run.organization_id).await?;
            let message = render(job.template, &params, &branding).map_err(JobError::Fatal)?;
            match mailer.send(&job.to, &message).await {
                Ok(message_id) => {
                    tracing::info!(email.template = job.template.as_str(), email.message_id = %message_id, "system email sent");
                    Ok(())
                }
                Err(e) => Err(e.into_job_error()),
            }
        }
    })
}

/// The branding a message of `organization_id` carries: the organization's, or Zoark's when
/// there is no organization (or it was deleted since).
///
/// # Errors
/// Database errors (the job retries).
pub(crate) async fn branding(
    pool: &sqlx::PgPool,
    organization_id: Option<Uuid>,
) -> anyhow::Result<Branding> {
    let Some(organization_id) = organization_id else {
        return Ok(Branding::zoark());
    };
    let mut conn = pool.acquire().await.context("acquiring a connection")?;
    Ok(organizations::branding(&mut conn, organization_id)
        .await
        .context("loading the organization's branding")?
        .unwrap_or_else(Branding::zoark))
}

/// Sends a reset link when the address has an enabled account (at most one a minute); an
/// unknown address ends the job quietly, as the request's answer did.
async fn password_reset(ctx: WorkerContext, job: RequestPasswordReset) -> crate::engine::JobResult {
    use zoark_core::db::{audit, memberships, password_resets, users};
    let Ok(email) = zoark_core::identity::EmailAddress::parse(&job.email) else {
        return Ok(());
    };
    let mut tx = ctx.pool.begin().await.context("beginning a transaction")?;
    let user = users::for_login(&mut tx, email.as_str())
        .await
        .context("looking the account up")?;
    let Some(user) = user.filter(|u| !u.disabled) else {
        return Ok(());
    };
    let Some((token, expires_at)) = password_resets::create(&mut tx, user.id)
        .await
        .context("creating the reset link")?
    else {
        // One was sent less than a minute ago.
        return Ok(());
    };
    let profile = users::profile(&mut tx, user.id)
        .await
        .context("loading the account")?;
    let params = serde_json::json!({
        "name": profile.name,
        "reset_url": zoark_jobs::email::link(&ctx.settings.http.public_url, "/reset-password", &token),
        "expires_at": zoark_jobs::email::when(expires_at),
    });
    zoark_jobs::email::enqueue_system(
        &mut tx,
        &ctx.settings.encryption_key,
        &profile.email,
        SystemTemplate::PasswordReset,
        &params,
        Opts::platform(),
    )
    .await
    .context("enqueueing the reset email")?;
    if let Some(home) = memberships::for_login(&mut tx, user.id, None)
        .await
        .context("finding the account's organization")?
    {
        let client = audit::Client {
            ip: job.ip,
            user_agent: job.user_agent.clone(),
        };
        audit::record(
            &mut tx,
            home.organization_id,
            None,
            audit::Entry::new("auth.password_reset_requested", &client).on("user", user.id),
        )
        .await
        .context("recording the request")?;
    }
    tx.commit().await.context("committing")?;
    Ok(())
}
