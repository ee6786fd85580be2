//! `diag.noop`, `diag.sleep` and `diag.record`: the kinds benchmarks, crash tests and smoke checks enqueue.

use std::time::Duration;

use anyhow::Context as _;
use zoark_jobs::diag::{Noop, Record, Sleep};

use crate::{
    WorkerContext,
    engine::{JobContext, JobResult, Registry},
};

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let ctx = ctx.clone();
    registry
        .register(|_: Noop, _: JobContext| async { Ok(()) })
        .register(|args: Sleep, _: JobContext| async move {
            tokio::time::sleep(Duration::from_millis(args.ms)).await;
            Ok(())
        })
        .register(move |args: Record, job: JobContext| record(ctx.clone(), args, job))
}

async fn record(ctx: WorkerContext, args: Record, job: JobContext) -> JobResult {
    if args.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(args.sleep_ms)).await;
    }
    // The notification first: latency measurements take it as the job's start (the benchmark's
    // method: "the job's first act is pg_notify with its id"), not the committed insert after it.
    if args.notify {
        sqlx::query!("SELECT pg_notify('zoark_diag', $1)", job.id.to_string())
            .execute(&ctx.pool)
            .await
            .context("notifying")?;
    }
    sqlx::query!(
        "INSERT INTO job_diagnostics (job_id, attempt, marker) VALUES ($1, $2, $3)",
        job.id,
        job.attempt,
        args.marker,
    )
    .execute(&ctx.pool)
    .await
    .context("recording the diagnostic row")?;
    Ok(())
}
