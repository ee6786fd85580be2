//! Zoark and graphile-worker, measured the same way: one worker process on a fresh database,
//! watched idle (queries/s, RSS), then 1,000 sequential insert→start latencies, then a bulk
//! enqueue of N no-op jobs in one transaction and the burn-down until every one of them is
//! committed as done.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgListener};
use tokio::process::Command;
use uuid::Uuid;
use zoark_jobs::{NewJob, Opts, diag};

use crate::{QueueArgs, child::Worker, db, report::Figures};

const WARM_UP: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Zoark,
    Graphile,
}

impl Peer {
    fn name(self) -> &'static str {
        match self {
            Self::Zoark => "zoark",
            Self::Graphile => "graphile-worker",
        }
    }

    fn database(self) -> &'static str {
        match self {
            Self::Zoark => "bench_zoark",
            Self::Graphile => "bench_graphile",
        }
    }

    /// The channel a started latency job notifies, with its id as payload.
    fn ping_channel(self) -> &'static str {
        match self {
            Self::Zoark => "zoark_diag",
            Self::Graphile => "bench_ping",
        }
    }

    /// True while any job of the drain is not committed as done.
    fn unfinished_sql(self) -> &'static str {
        match self {
            Self::Zoark => {
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE kind = 'diag.noop' AND finalized_at IS NULL)"
            }
            // graphile-worker deletes a job when it completes.
            Self::Graphile => "SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs)",
        }
    }

    fn settings(self, args: &QueueArgs) -> String {
        match self {
            Self::Zoark => format!(
                "1 process, diagnostics queue {} slots, claim batch 500, LISTEN/NOTIFY, batched completion",
                args.zoark_concurrency
            ),
            Self::Graphile => format!(
                "1 process, concurrentJobs {}, localQueue.size {}, completeJobBatchDelay 0",
                args.graphile_concurrency, args.graphile_local_queue
            ),
        }
    }

    fn command(self, args: &QueueArgs, url: &str) -> anyhow::Result<Command> {
        let mut cmd = match self {
            Self::Zoark => Command::new(&args.worker_bin),
            Self::Graphile => {
                let script = args
                    .graphile_script
                    .as_ref()
                    .context("--graphile-script is required")?;
                let mut cmd = Command::new(args.node.as_ref().context("--node is required")?);
                cmd.arg(script);
                if let Some(dir) = script.parent() {
                    cmd.current_dir(dir);
                }
                cmd
            }
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", url);
        match self {
            Self::Zoark => {
                let queues = format!(
                    "default=10,email=20,agents=5,indexing=2,maintenance=2,diagnostics={}",
                    args.zoark_concurrency
                );
                cmd.env("ZOARK_WORKER_QUEUES", queues)
                    .env("ZOARK_LOG_FORMAT", "json")
                    .env("RUST_LOG", "info");
            }
            Self::Graphile => {
                cmd.env("BENCH_CONCURRENCY", args.graphile_concurrency.to_string())
                    .env("BENCH_LOCAL_QUEUE", args.graphile_local_queue.to_string());
            }
        }
        Ok(cmd)
    }

    fn ready_line(self) -> &'static str {
        match self {
            Self::Zoark => "zoark-worker started",
            Self::Graphile => "ready",
        }
    }

    /// Enqueues one latency job; returns the payload its start will notify.
    async fn enqueue_ping(self, conn: &mut PgConnection, i: usize) -> anyhow::Result<String> {
        match self {
            Self::Zoark => {
                let job = diag::Record {
                    marker: i.to_string(),
                    sleep_ms: 0,
                    notify: true,
                };
                let done = zoark_jobs::enqueue(conn, &job, Opts::platform()).await?;
                Ok(done.id.to_string())
            }
            Self::Graphile => {
                let id = Uuid::now_v7().to_string();
                sqlx::query(
                    "SELECT graphile_worker.add_job('ping', json_build_object('id', $1::text))",
                )
                .bind(&id)
                .execute(conn)
                .await?;
                Ok(id)
            }
        }
    }

    /// Enqueues `n` no-op jobs in one transaction; returns when it has committed.
    async fn bulk(self, pool: &PgPool, n: usize) -> anyhow::Result<(Instant, Instant)> {
        match self {
            Self::Zoark => {
                let jobs = (0..n)
                    .map(|_| NewJob::new(&diag::Noop {}, Opts::platform()))
                    .collect::<Result<Vec<_>, _>>()?;
                let start = Instant::now();
                let mut tx = pool.begin().await?;
                zoark_jobs::enqueue_many(&mut tx, jobs).await?;
                tx.commit().await?;
                Ok((start, Instant::now()))
            }
            Self::Graphile => {
                // The project's own perfTest method: one add_jobs call.
                let spec = serde_json::json!({ "identifier": "noop", "payload": {} });
                let specs = serde_json::Value::Array(vec![spec; n]);
                let start = Instant::now();
                let added: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(\
                     SELECT json_populate_recordset(NULL::graphile_worker.job_spec, $1::json)))",
                )
                .bind(sqlx::types::Json(specs))
                .fetch_one(pool)
                .await?;
                anyhow::ensure!(
                    usize::try_from(added)? == n,
                    "add_jobs added {added} of {n}"
                );
                Ok((start, Instant::now()))
            }
        }
    }

    /// Removes the drained jobs and vacuums, so every round starts from the same table.
    async fn clear(self, pool: &PgPool) -> anyhow::Result<()> {
        let (delete, vacuum) = match self {
            Self::Zoark => (
                "DELETE FROM jobs WHERE kind = 'diag.noop'",
                "VACUUM ANALYZE jobs",
            ),
            Self::Graphile => (
                "DELETE FROM graphile_worker._private_jobs",
                "VACUUM ANALYZE graphile_worker._private_jobs",
            ),
        };
        sqlx::query(delete).execute(pool).await?;
        sqlx::query(vacuum).execute(pool).await?;
        Ok(())
    }

    /// Checks the drain lost nothing.
    async fn verify(self, pool: &PgPool, n: usize) -> anyhow::Result<()> {
        if self == Self::Zoark {
            let done: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE kind = 'diag.noop' AND state = 'completed'",
            )
            .fetch_one(pool)
            .await?;
            anyhow::ensure!(
                usize::try_from(done)? == n,
                "{done} of {n} jobs are completed"
            );
        }
        Ok(())
    }
}

pub async fn run(args: &QueueArgs, admin: &PgPool, peer: Peer) -> anyhow::Result<Figures> {
    let database = peer.database();
    let url = db::fresh(admin, &args.server, database).await?;
    let pool = db::pool(&url).await?;
    if peer == Peer::Zoark {
        zoark_core::db::migrate_all(&pool).await?;
    }
    let mut worker = Worker::spawn(peer.name(), peer.command(args, &url)?)?;
    worker
        .wait_for(peer.ready_line(), Duration::from_secs(60))
        .await?;

    // Idle: settle, then count the statements the worker sends.
    let source = db::query_source(admin).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = db::queries(admin, source, database).await?;
    let idle_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let after = db::queries(admin, source, database).await?;
    let idle_queries_per_s = (after - before) as f64 / idle_start.elapsed().as_secs_f64();
    let rss_mib = worker.rss_mib()?;
    println!("idle: {idle_queries_per_s:.2} queries/s ({source:?}), RSS {rss_mib:.1} MiB");

    // Pickup latency: insert from another connection, wait for the job's NOTIFY.
    let mut listener = PgListener::connect(&url).await?;
    listener.listen(peer.ping_channel()).await?;
    let mut conn = PgConnection::connect_with(&zoark_core::db::platform_options(&url)?).await?;
    let mut latencies = Vec::with_capacity(args.samples);
    for i in 0..WARM_UP + args.samples {
        let start = Instant::now();
        let id = peer.enqueue_ping(&mut conn, i).await?;
        loop {
            let n = tokio::time::timeout(Duration::from_secs(10), listener.recv())
                .await
                .with_context(|| format!("job {id} did not start within 10 s"))??;
            if n.payload() == id {
                break;
            }
        }
        if i >= WARM_UP {
            latencies.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    drop(listener);
    conn.close().await?;
    latencies.sort_by(f64::total_cmp);
    let p50 = percentile(&latencies, 50.0);
    let p99 = percentile(&latencies, 99.0);
    println!("pickup: p50 {p50:.2} ms, p99 {p99:.2} ms");

    // Bulk enqueue while the worker idles, then the burn-down from the commit on; the median of
    // `rounds`, the table cleared and vacuumed between rounds.
    let mut bulk = Vec::new();
    let mut drain = Vec::new();
    let mut cpu = Vec::new();
    for round in 1..=args.rounds {
        let cpu_before = worker.cpu_seconds()?;
        let (start, committed) = peer.bulk(&pool, args.jobs).await?;
        let done = db::wait_until_none(&pool, peer.unfinished_sql(), Duration::from_secs(600))
            .await
            .map_err(|e| e.context(worker.last_lines()))?;
        let cpu_per_job = (worker.cpu_seconds()? - cpu_before) * 1e6 / args.jobs as f64;
        peer.verify(&pool, args.jobs).await?;
        let bulk_per_s = args.jobs as f64 / (committed - start).as_secs_f64();
        let drain_per_s = args.jobs as f64 / (done - committed).as_secs_f64();
        println!(
            "round {round}: bulk enqueue {bulk_per_s:.0} jobs/s; drain {drain_per_s:.0} jobs/s \
             ({cpu_per_job:.1} µs of worker CPU per job)"
        );
        bulk.push(bulk_per_s);
        drain.push(drain_per_s);
        cpu.push(cpu_per_job);
        peer.clear(&pool).await?;
    }

    worker.stop().await?;
    pool.close().await;
    Ok(Figures {
        system: peer.name(),
        settings: peer.settings(args),
        bulk_enqueue_per_s: median(bulk),
        drain_per_s: median(drain),
        pickup_p50_ms: Some(p50),
        pickup_p99_ms: Some(p99),
        idle_queries_per_s: Some(idle_queries_per_s),
        rss_mib: Some(rss_mib),
        worker_cpu_us_per_job: median(cpu),
    })
}

/// The median of the rounds (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
