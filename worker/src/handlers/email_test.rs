//! `email.send_test`: a test message through one of an organization's sending accounts, over
//! SMTP or, for Gmail and Outlook, through the provider's API with the account's OAuth tokens;
//! the message carries the organization's branding.

use anyhow::Context as _;
use lettre::message::Mailbox;
use uuid::Uuid;
use zoark_core::db::{email_accounts, organizations::Branding};
use zoark_jobs::email::{SendTestEmail, SystemTemplate};

use crate::{
    WorkerContext,
    email::{Mailer, Rendered, SendError, build, mailbox, render},
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
    let branding = super::email::branding(&ctx.pool, Some(organization_id)).await?;
    let mut conn = ctx.pool.acquire().await.context("acquiring a connection")?;
    if let Some(account) =
        email_accounts::smtp_for_sending(&mut conn, organization_id, job.account_id)
            .await
            .context("loading the email account")?
    {
        drop(conn);
        return send_smtp(&ctx, organization_id, &job, account, &branding).await;
    }
    let account = email_accounts::oauth_for_sending(&mut conn, organization_id, job.account_id)
        .await
        .context("loading the email account")?
        .ok_or_else(|| JobError::Fatal(anyhow::anyhow!("the email account no longer exists")))?;
    drop(conn);
    let from =
        mailbox(&account.display_name, &account.from_address).map_err(SendError::into_job_error)?;
    let to: Mailbox = job
        .to
        .parse()
        .map_err(|e| JobError::Fatal(anyhow::anyhow!("`{}` is not an address: {e}", job.to)))?;
    let message = test_message(
        &job,
        &account.display_name,
        &account.from_address,
        &branding,
    )?;
    let message_id = format!("<{}@zoark>", Uuid::now_v7());
    let email = build(from, to, &message, &message_id, &[]).map_err(SendError::into_job_error)?;
    let sent = ctx
        .oauth
        .send(organization_id, job.account_id, email)
        .await
        .map_err(SendError::into_job_error)?;
    tracing::info!(
        email.account_id = %job.account_id,
        email.provider = %account.provider,
        email.message_id = %sent,
        "test email sent"
    );
    Ok(())
}

async fn send_smtp(
    ctx: &WorkerContext,
    organization_id: Uuid,
    job: &SendTestEmail,
    account: email_accounts::Smtp,
    branding: &Branding,
) -> JobResult {
    let mailer = Mailer::for_account(&ctx.settings, organization_id, &account)
        .map_err(SendError::into_job_error)?;
    let message = test_message(job, &account.display_name, &account.from_address, branding)?;
    match mailer.send(&job.to, &message).await {
        Ok(message_id) => {
            tracing::info!(email.account_id = %job.account_id, email.message_id = %message_id, "test email sent");
            Ok(())
        }
        Err(e) => {
            crate::email::needs_attention(ctx, organization_id, job.account_id, &e).await;
            Err(e.into_job_error())
        }
    }
}

fn test_message(
    job: &SendTestEmail,
    display_name: &str,
    from_address: &str,
    branding: &Branding,
) -> Result<Rendered, JobError> {
    render(
        SystemTemplate::AccountTest,
        &serde_json::json!({
            "display_name": display_name,
            "from_address": from_address,
            "requested_by": job.requested_by,
        }),
        branding,
    )
    .map_err(JobError::Fatal)
}
