//! `email.send_test`: a test message through one of an organization's SMTP accounts.

use anyhow::Context as _;
use zoark_core::{crypto, db::email_accounts, settings::SmtpSecurity};
use zoark_jobs::email::{SendTestEmail, SystemTemplate};

use crate::{
    WorkerContext,
    email::{Mailer, render},
    engine::{JobContext, JobError, JobResult, Registry},
};

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let ctx = ctx.clone();
    registry.register(move |job: SendTestEmail, run: JobContext| send(ctx.clone(), job, run))
}

async fn send(ctx: WorkerContext, job: SendTestEmail, run: JobContext) -> JobResult {
    let organization_id = run
        .organization_id
        .ok_or_else(|| JobError::Fatal(anyhow::anyhow!("a test email needs an organization")))?;
    let mut conn = ctx.pool.acquire().await.context("acquiring a connection")?;
    let account = email_accounts::smtp_for_sending(&mut conn, organization_id, job.account_id)
        .await
        .context("loading the email account")?
        .ok_or_else(|| JobError::Fatal(anyhow::anyhow!("the SMTP account no longer exists")))?;
    drop(conn);
    let password = account
        .sealed_password
        .as_deref()
        .map(|sealed| crypto::open(&ctx.settings.encryption_key, sealed))
        .transpose()
        .map_err(|e| JobError::Fatal(anyhow::anyhow!("the stored password cannot be opened: {e}")))?
        .map(|p| String::from_utf8_lossy(&p).into_owned());
    let security: SmtpSecurity = account
        .security
        .parse()
        .map_err(|e: String| JobError::Fatal(anyhow::anyhow!(e)))?;
    let from = format!("{} <{}>", account.display_name, account.from_address)
        .parse()
        .or_else(|_| account.from_address.parse())
        .map_err(|e| JobError::Fatal(anyhow::anyhow!("the sender address is unusable: {e}")))?;
    let credentials = account.username.clone().zip(password);
    let mailer = Mailer::smtp(from, &account.host, account.port, security, credentials)
        .map_err(JobError::Fatal)?;
    let message = render(
        SystemTemplate::AccountTest,
        &serde_json::json!({
            "display_name": account.display_name,
            "from_address": account.from_address,
            "requested_by": job.requested_by,
        }),
    )
    .map_err(JobError::Fatal)?;
    match mailer.send(&job.to, &message).await {
        Ok(message_id) => {
            tracing::info!(email.account_id = %job.account_id, email.message_id = %message_id, "test email sent");
            Ok(())
        }
        Err(e) => Err(e.into_job_error()),
    }
}
