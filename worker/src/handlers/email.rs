//! `email.send_system`: opens the sealed parameters, renders the template with the branding of
//! the job's organization (Zoark's own for platform jobs such as password resets), sends it.

use std::sync::Arc;

use anyhow::Context as _;
use uuid::Uuid;
use zoark_core::db::organizations::{self, Branding};
use zoark_jobs::email::SendSystemEmail;

use crate::{
    WorkerContext,
    email::{Mailer, render},
    engine::{JobContext, JobError, Registry},
};

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
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
