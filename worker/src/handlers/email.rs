//! `email.send_system`: opens the sealed parameters, renders the template, sends it.

use std::sync::Arc;

use anyhow::Context as _;
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
    registry.register(move |job: SendSystemEmail, _: JobContext| {
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
            let message = render(job.template, &params).map_err(JobError::Fatal)?;
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
