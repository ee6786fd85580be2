//! The raw-SQL ceiling: Zoark's own statements with no worker process — the enqueue's `COPY` fed
//! pre-encoded rows, and pgbench running the claim and complete statements (the very files the
//! engine compiles in, wrapped in SQL functions).

use std::{path::Path, time::Instant};

use anyhow::Context as _;
use sqlx::AssertSqlSafe;
use uuid::Uuid;

use crate::{
    QueueArgs, db,
    peers::median,
    report::Figures,
    scenario::{JobShape, Plan},
};

const DATABASE: &str = "bench_raw";

/// Claim a batch, then write it completed: two transactions, as the engine does.
const DRAIN_SCRIPT: &str = "\
SELECT coalesce(array_agg(o_id)::text, '{}') AS ids,
       coalesce(array_agg(o_attempt)::text, '{}') AS attempts,
       count(*) AS n
FROM bench_claim('diagnostics', :batch, ':worker', '{diag.noop}', '{60000}', 20000) \\gset
SELECT bench_complete(':ids'::uuid[], ':attempts'::int4[],
  array_fill('completed'::text, ARRAY[:n]), array_fill(NULL::timestamptz, ARRAY[:n]),
  array_fill(NULL::jsonb, ARRAY[:n]), array_fill(0, ARRAY[:n]), ':worker'::uuid);
";

/// On the headline row's job count, with no-op jobs.
pub async fn run(args: &QueueArgs, plan: &Plan, admin: &sqlx::PgPool) -> anyhow::Result<Figures> {
    let pgbench = args.pgbench.as_ref().context("--pgbench is required")?;
    let url = db::fresh(admin, &args.server, DATABASE).await?;
    let pool = db::pool(&url).await?;
    zoark_core::db::migrate_all(&pool).await?;
    for (name, params, returns, body) in [
        (
            "bench_claim",
            "text, int8, uuid, text[], int8[], int8",
            "TABLE (o_id uuid, o_organization_id uuid, o_kind text, o_args jsonb, o_attempt int4, \
             o_max_attempts int4, o_run_at timestamptz, o_priority int2, o_timeout_ms int4)",
            zoark_worker::engine::sql::CLAIM,
        ),
        (
            "bench_complete",
            "uuid[], int4[], text[], timestamptz[], jsonb[], int4[], uuid",
            "void",
            zoark_worker::engine::sql::COMPLETE,
        ),
    ] {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE FUNCTION {name}({params}) RETURNS {returns} LANGUAGE sql AS $bench$\n{body}\n$bench$"
        )))
        .execute(&pool)
        .await
        .with_context(|| format!("creating {name}"))?;
    }
    let worker: Uuid = sqlx::query_scalar(
        "INSERT INTO job_workers (hostname, pid, queues) VALUES ('pgbench', 0, '{diagnostics}') RETURNING id",
    )
    .fetch_one(&pool)
    .await?;

    let dir = args
        .out
        .parent()
        .map_or_else(|| Path::new(".").to_path_buf(), Path::to_path_buf);
    std::fs::create_dir_all(&dir)?;
    let drain_script = dir.join("raw-drain.sql");
    std::fs::write(&drain_script, DRAIN_SCRIPT)?;

    let jobs = plan.headline().map_or(100_000, |row| row.jobs);
    let per_client = jobs.div_ceil(args.raw_batch * args.raw_clients);
    let mut bulk = Vec::new();
    let mut drain = Vec::new();
    for round in 1..=plan.rounds {
        // The engine's COPY statement, fed rows encoded beforehand.
        let rows: String = (0..jobs)
            .map(|_| format!("{},\\N,diag.noop,diagnostics,{{}},0,20\n", Uuid::now_v7()))
            .collect();
        let start = Instant::now();
        let mut tx = pool.begin().await?;
        let mut copy = tx.copy_in_raw(zoark_jobs::sql::COPY_JOBS).await?;
        for piece in rows.as_bytes().chunks(1 << 20) {
            copy.send(piece).await?;
        }
        copy.finish().await?;
        tx.commit().await?;
        let bulk_per_s = jobs as f64 / start.elapsed().as_secs_f64();
        let start = Instant::now();
        pgbench_run(
            pgbench,
            &url,
            &drain_script,
            args.raw_clients,
            per_client,
            &[
                ("batch", args.raw_batch.to_string()),
                ("worker", worker.to_string()),
            ],
        )?;
        let drain_per_s = jobs as f64 / start.elapsed().as_secs_f64();
        let done: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs WHERE state = 'completed'")
            .fetch_one(&pool)
            .await?;
        anyhow::ensure!(
            usize::try_from(done)? == jobs,
            "pgbench completed {done} of {jobs} jobs"
        );
        println!(
            "round {round}: bulk enqueue {bulk_per_s:.0} jobs/s; drain {drain_per_s:.0} jobs/s"
        );
        bulk.push(bulk_per_s);
        drain.push(drain_per_s);
        sqlx::query("DELETE FROM jobs").execute(&pool).await?;
        sqlx::query("VACUUM ANALYZE jobs").execute(&pool).await?;
    }
    pool.close().await;
    Ok(Figures {
        system: "raw-sql",
        settings: format!(
            "enqueue: the engine's COPY, rows encoded beforehand; drain: pgbench, {} clients, claim {} per statement",
            args.raw_clients, args.raw_batch
        ),
        // pgbench clients as processes, each holding a claim's worth of jobs at a time.
        concurrency: args.raw_batch,
        processes: args.raw_clients,
        jobs,
        tenant: false,
        job: JobShape::Noop,
        bulk_enqueue_per_s: median(bulk),
        drain_per_s: median(drain.clone()),
        bound_per_s: None,
        drain_rounds_per_s: drain,
        pickup_p50_ms: None,
        pickup_p99_ms: None,
        idle_queries_per_s: None,
        idle_exec_ms_per_s: None,
        idle_with_history: None,
        rss_mib: None,
        worker_cpu_us_per_job: None,
    })
}

fn pgbench_run(
    pgbench: &Path,
    url: &str,
    script: &Path,
    clients: usize,
    transactions: usize,
    vars: &[(&str, String)],
) -> anyhow::Result<()> {
    let mut cmd = std::process::Command::new(pgbench);
    // A platform connection, like the worker's (row-level security bypassed).
    cmd.env("PGOPTIONS", "-c zoark.rls=bypass")
        .args(["--no-vacuum", "--protocol=simple", "--client"])
        .arg(clients.to_string())
        .arg("--jobs")
        .arg(clients.to_string())
        .arg("--transactions")
        .arg(transactions.to_string())
        .arg("--file")
        .arg(script);
    for (name, value) in vars {
        cmd.arg("--define").arg(format!("{name}={value}"));
    }
    cmd.arg(url);
    let out = cmd.output().context("running pgbench")?;
    anyhow::ensure!(
        out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("aborted"),
        "pgbench failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
