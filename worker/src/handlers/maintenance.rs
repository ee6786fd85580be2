//! `maintenance.prune_jobs` (finished jobs, sign-in bookkeeping, idempotency keys, agent runs
//! and activity past their retention, unreferenced files), `maintenance.rescue_jobs` and
//! `maintenance.backup_database`.

use std::time::Duration;

use anyhow::Context as _;
use zoark_core::db::stored_files;
use zoark_jobs::{
    admin,
    maintenance::{BackupDatabase, PruneJobs, RescueJobs},
};

use crate::{
    WorkerContext,
    engine::{JobContext, JobResult, Registry, rescue},
};

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let prune_ctx = ctx.clone();
    let rescue_ctx = ctx.clone();
    let backup_ctx = ctx.clone();
    registry
        .register(move |_: PruneJobs, job: JobContext| prune(prune_ctx.clone(), job))
        .register(move |_: RescueJobs, _: JobContext| {
            let ctx = rescue_ctx.clone();
            async move {
                let rescued = rescue(&ctx.pool, ctx.settings.worker.rescue_after).await?;
                tracing::info!(jobs = rescued, "rescue pass");
                Ok(())
            }
        })
        .register(move |_: BackupDatabase, _: JobContext| {
            let ctx = backup_ctx.clone();
            async move {
                let report = crate::backup::run(&ctx.settings, &ctx.pool).await?;
                tracing::info!(
                    backup.key = %report.key,
                    backup.dump_bytes = report.dump_bytes,
                    backup.expired_deleted = report.deleted,
                    "backup done"
                );
                Ok(())
            }
        })
}

/// Deletes finished jobs past their retention, a bounded batch at a time so one run never
/// holds long locks; stops early when cancelled.
async fn prune(ctx: WorkerContext, job: JobContext) -> JobResult {
    let retention = &ctx.settings.job_retention;
    let mut total = 0u64;
    loop {
        let mut conn = ctx.pool.acquire().await.context("pruning finished jobs")?;
        let deleted = admin::prune_finished(
            &mut conn,
            admin::PruneScope::default(),
            retention.finished,
            retention.discarded,
            10_000,
        )
        .await
        .context("pruning finished jobs")?;
        total += deleted;
        if deleted < 10_000 || job.cancelled.is_cancelled() {
            break;
        }
    }
    tracing::info!(jobs = total, "pruned finished jobs");
    // Sign-in bookkeeping that can no longer matter: counters past their window and lock,
    // reset tokens a day past expiry.
    let throttles = sqlx::query!(
        "DELETE FROM login_throttle WHERE updated_at < now() - interval '1 day'
           AND (locked_until IS NULL OR locked_until < now())"
    )
    .execute(&ctx.pool)
    .await
    .context("pruning sign-in throttles")?
    .rows_affected();
    let resets = sqlx::query!(
        "DELETE FROM password_reset_tokens WHERE expires_at < now() - interval '1 day'"
    )
    .execute(&ctx.pool)
    .await
    .context("pruning password reset tokens")?
    .rows_affected();
    tracing::info!(
        login_throttle = throttles,
        password_reset_tokens = resets,
        "pruned sign-in bookkeeping"
    );
    let idempotency = sqlx::query!("DELETE FROM idempotency_keys WHERE expires_at < now()")
        .execute(&ctx.pool)
        .await
        .context("pruning idempotency keys")?
        .rows_affected();
    let mut conn = ctx.pool.acquire().await.context("acquiring a connection")?;
    let orphans = zoark_core::db::deliveries::fail_orphans(&mut conn)
        .await
        .context("failing orphaned deliveries")?;
    if orphans > 0 {
        tracing::warn!(
            deliveries = orphans,
            "deliveries whose send job ended without a result marked failed"
        );
    }
    tracing::info!(idempotency_keys = idempotency, "pruned idempotency keys");
    let (runs, activity) =
        zoark_core::db::agent_runs::prune(&mut conn, ctx.settings.agents.retention)
            .await
            .context("pruning agent runs")?;
    tracing::info!(
        agent_runs = runs,
        agent_activity = activity,
        "pruned agent runs and activity"
    );
    sweep_files(&ctx, &job).await
}

/// How old an unreferenced file must be before the sweep takes it: longer than any upload
/// stays in flight.
pub const FILE_SWEEP_GRACE: Duration = Duration::from_secs(3600);

/// The most files one sweep looks at.
const FILE_SWEEP_BATCH: i64 = 500;

/// Deletes uploaded files no document or invoice names any more (their member, project or
/// organization deleted): the object first, then the row. A missing object counts as deleted;
/// a storage error keeps the row for the next run.
async fn sweep_files(ctx: &WorkerContext, job: &JobContext) -> JobResult {
    let uploads = &ctx.uploads;
    let mut conn = ctx.pool.acquire().await.context("acquiring a connection")?;
    let files = stored_files::unreferenced(&mut conn, FILE_SWEEP_GRACE, FILE_SWEEP_BATCH)
        .await
        .context("listing unreferenced files")?;
    let (mut deleted, mut failed) = (0u64, 0u64);
    for file in files {
        if job.cancelled.is_cancelled() {
            break;
        }
        if let Err(error) = uploads.delete(&file.storage_key).await {
            failed += 1;
            tracing::warn!(file.id = %file.id, error = %error, "an unreferenced file's object could not be deleted; kept for the next run");
            continue;
        }
        if stored_files::delete_unreferenced(&mut conn, file.id)
            .await
            .context("deleting an unreferenced file's row")?
        {
            deleted += 1;
        }
    }
    if failed > 0 {
        tracing::warn!(files = failed, "unreferenced files left for the next run");
    }
    tracing::info!(files = deleted, "swept unreferenced files");
    Ok(())
}
