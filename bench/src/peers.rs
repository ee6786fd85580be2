//! Zoark, graphile-worker and apalis-postgres, measured the same way, each on a fresh database:
//! for every set of worker processes (slots per process × processes) the rows of the plan that
//! use it; with the headline row's single process first its idle load (queries/s, RSS) and
//! sequential insert→start latencies; then per row, `rounds` times, a bulk enqueue of N jobs in
//! one transaction and the burn-down until every one of them is committed as done.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgListener};
use tokio::process::Command;
use uuid::Uuid;
use zoark_bench::apalis::{self as peer_apalis, BenchJob};
use zoark_jobs::{NewJob, Opts, diag};

use crate::{
    QueueArgs,
    child::Worker,
    db,
    report::{Figures, IdleCost},
    scenario::{JobShape, Plan, SLEEP_MS, Scenario},
};

const WARM_UP: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Zoark,
    Graphile,
    Apalis,
}

/// What a run keeps about its database.
struct Database {
    url: String,
    pool: PgPool,
    /// Where the finish checks are polled (`db::poll_connection`).
    poll: PgPool,
    /// The organization tenant jobs belong to (Zoark only).
    organization: Option<Uuid>,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Self::Zoark => "zoark",
            Self::Graphile => "graphile-worker",
            Self::Apalis => "apalis-postgres",
        }
    }

    fn database(self) -> &'static str {
        match self {
            Self::Zoark => "bench_zoark",
            Self::Graphile => "bench_graphile",
            Self::Apalis => "bench_apalis",
        }
    }

    /// Zoark alone has tenants; the others run the platform rows only.
    fn runs(self, row: &Scenario) -> bool {
        !row.tenant || self == Self::Zoark
    }

    /// The channel a started latency job notifies, with its id as payload.
    fn ping_channel(self) -> &'static str {
        match self {
            Self::Zoark => "zoark_diag",
            Self::Graphile | Self::Apalis => "bench_ping",
        }
    }

    /// Each true while jobs of the drain are not committed as done, each walking an index the
    /// system has (see `db::wait_until_none` and `db::poll_connection`). graphile-worker deletes a job when it completes;
    /// the others keep it. apalis-postgres indexes only the fetchable tasks, so its fetched
    /// ones are looked for once those are gone.
    fn unfinished_sql(self) -> &'static [&'static str] {
        match self {
            // jobs_claim_idx, jobs_scheduled_idx and jobs_running_idx.
            Self::Zoark => &[
                "SELECT EXISTS (SELECT 1 FROM jobs WHERE queue = 'diagnostics' AND state = 'available') \
                 OR EXISTS (SELECT 1 FROM jobs WHERE queue = 'diagnostics' \
                   AND state IN ('scheduled', 'retryable')) \
                 OR EXISTS (SELECT 1 FROM jobs WHERE state = 'running' AND queue = 'diagnostics')",
            ],
            // Its primary key.
            Self::Graphile => {
                &["SELECT EXISTS (SELECT 1 FROM graphile_worker._private_jobs ORDER BY id LIMIT 1)"]
            }
            Self::Apalis => &[peer_apalis::PENDING_SQL, peer_apalis::UNFINISHED_SQL],
        }
    }

    fn settings(self, args: &QueueArgs, row: &Scenario) -> String {
        let processes = match row.processes {
            1 => "1 process".to_owned(),
            n => format!("{n} processes"),
        };
        match self {
            Self::Zoark => format!(
                "{processes}, diagnostics queue {} slots, claim batch {}, LISTEN/NOTIFY, batched completion",
                row.concurrency, args.claim_batch
            ),
            Self::Graphile => format!(
                "{processes}, concurrentJobs {}, localQueue.size {}, completeJobBatchDelay 0, maxPoolSize {}",
                row.concurrency,
                args.claim_batch,
                graphile_pool(row.concurrency)
            ),
            Self::Apalis => format!(
                "{processes}, concurrency {}, batch_size {}, with_pubsub (LISTEN per process) and a \
                 5 s interval poll, lock_tasks and persist_results on (defaults)",
                row.concurrency, args.claim_batch
            ),
        }
    }

    fn command(self, args: &QueueArgs, url: &str, concurrency: usize) -> anyhow::Result<Command> {
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
            Self::Apalis => Command::new(
                args.apalis_bin
                    .as_ref()
                    .context("--apalis-bin is required")?,
            ),
        };
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ZOARK_ENV", "development")
            .env("DATABASE_URL", url);
        match self {
            Self::Zoark => {
                let queues = format!(
                    "default=10,email=20,agents=5,indexing=2,maintenance=2,diagnostics={concurrency}"
                );
                cmd.env("ZOARK_WORKER_QUEUES", queues)
                    .env("ZOARK_WORKER_CLAIM_BATCH", args.claim_batch.to_string())
                    .env("ZOARK_LOG_FORMAT", "json")
                    .env("RUST_LOG", "info");
            }
            Self::Graphile => {
                cmd.env("BENCH_CONCURRENCY", concurrency.to_string())
                    .env("BENCH_LOCAL_QUEUE", args.claim_batch.to_string())
                    .env("BENCH_POOL", graphile_pool(concurrency).to_string());
            }
            Self::Apalis => {
                cmd.env("BENCH_CONCURRENCY", concurrency.to_string())
                    .env("BENCH_BATCH", args.claim_batch.to_string());
            }
        }
        Ok(cmd)
    }

    fn ready_line(self) -> &'static str {
        match self {
            Self::Zoark => "zoark-worker started",
            Self::Graphile | Self::Apalis => "ready",
        }
    }

    /// A fresh database with the system's schema (graphile-worker installs its own on start).
    async fn prepare(self, admin: &PgPool, server: &str) -> anyhow::Result<Database> {
        let url = db::fresh(admin, server, self.database()).await?;
        let pool = db::pool(&url).await?;
        let mut organization = None;
        match self {
            Self::Zoark => {
                zoark_core::db::migrate_all(&pool).await?;
                organization = Some(
                    sqlx::query_scalar(
                        "INSERT INTO organizations (name) VALUES ('Bench') RETURNING id",
                    )
                    .fetch_one(&pool)
                    .await?,
                );
            }
            Self::Graphile => {}
            Self::Apalis => {
                // Its migrations need hstore; the benchmark connects as the cluster's superuser.
                sqlx::query("CREATE EXTENSION IF NOT EXISTS hstore")
                    .execute(&pool)
                    .await?;
                apalis_postgres::PostgresStorage::setup(&pool)
                    .await
                    .context("apalis-postgres migrations")?;
            }
        }
        Ok(Database {
            poll: db::poll_connection(&url).await?,
            url,
            pool,
            organization,
        })
    }

    /// Enqueues one latency job; returns the payload its start will notify.
    async fn enqueue_ping(self, conn: &mut PgConnection, i: usize) -> anyhow::Result<String> {
        let id = Uuid::now_v7().to_string();
        match self {
            Self::Zoark => {
                let job = diag::Record {
                    marker: i.to_string(),
                    sleep_ms: 0,
                    notify: true,
                };
                let done = zoark_jobs::enqueue(conn, &job, Opts::platform()).await?;
                return Ok(done.id.to_string());
            }
            Self::Graphile => {
                sqlx::query(
                    "SELECT graphile_worker.add_job('ping', json_build_object('id', $1::text))",
                )
                .bind(&id)
                .execute(conn)
                .await?;
            }
            Self::Apalis => {
                let task = BenchJob::Ping { id: id.clone() }.task()?;
                apalis_postgres::queries::push_tasks(conn, peer_apalis::QUEUE, vec![task]).await?;
            }
        }
        Ok(id)
    }

    /// Enqueues the row's jobs in one transaction (payloads built beforehand); returns when the
    /// transaction started and when it committed.
    async fn bulk(self, db: &Database, row: &Scenario) -> anyhow::Result<(Instant, Instant)> {
        let n = row.jobs;
        match self {
            Self::Zoark => {
                let opts = || match (row.tenant, db.organization) {
                    (true, Some(org)) => Opts::organization(org),
                    _ => Opts::platform(),
                };
                let jobs = (0..n)
                    .map(|_| match row.job {
                        JobShape::Noop => NewJob::new(&diag::Noop {}, opts()),
                        JobShape::Sleep5ms => NewJob::new(&diag::Sleep { ms: SLEEP_MS }, opts()),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let start = Instant::now();
                let mut tx = db.pool.begin().await?;
                zoark_jobs::enqueue_many(&mut tx, jobs).await?;
                tx.commit().await?;
                Ok((start, Instant::now()))
            }
            Self::Graphile => {
                // The project's own perfTest method: one add_jobs call.
                let spec = match row.job {
                    JobShape::Noop => serde_json::json!({ "identifier": "noop", "payload": {} }),
                    JobShape::Sleep5ms => serde_json::json!({
                        "identifier": "sleep", "payload": { "ms": SLEEP_MS }
                    }),
                };
                let specs = serde_json::Value::Array(vec![spec; n]);
                let start = Instant::now();
                let added: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM graphile_worker.add_jobs(ARRAY(\
                     SELECT json_populate_recordset(NULL::graphile_worker.job_spec, $1::json)))",
                )
                .bind(sqlx::types::Json(specs))
                .fetch_one(&db.pool)
                .await?;
                anyhow::ensure!(
                    usize::try_from(added)? == n,
                    "add_jobs added {added} of {n}"
                );
                Ok((start, Instant::now()))
            }
            Self::Apalis => {
                // Its own bulk path (the README's pub/sub example): push_tasks in one transaction.
                let job = match row.job {
                    JobShape::Noop => BenchJob::Noop,
                    JobShape::Sleep5ms => BenchJob::Sleep { ms: SLEEP_MS },
                };
                let tasks = (0..n)
                    .map(|_| job.task())
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let start = Instant::now();
                let mut tx = db.pool.begin().await?;
                apalis_postgres::queries::push_tasks(&mut *tx, peer_apalis::QUEUE, tasks).await?;
                tx.commit().await?;
                Ok((start, Instant::now()))
            }
        }
    }

    /// Removes the finished jobs and vacuums, so every round starts from the same table.
    async fn clear(self, pool: &PgPool) -> anyhow::Result<()> {
        let (delete, vacuum) = match self {
            Self::Zoark => (
                "DELETE FROM jobs WHERE queue = 'diagnostics'",
                "VACUUM ANALYZE jobs",
            ),
            Self::Graphile => (
                "DELETE FROM graphile_worker._private_jobs",
                "VACUUM ANALYZE graphile_worker._private_jobs",
            ),
            Self::Apalis => (
                "DELETE FROM apalis.jobs WHERE job_type = 'bench'",
                "VACUUM ANALYZE apalis.jobs",
            ),
        };
        sqlx::query(delete).execute(pool).await?;
        sqlx::query(vacuum).execute(pool).await?;
        Ok(())
    }

    /// Checks the drain lost nothing (graphile-worker's finish check already saw an empty table).
    async fn verify(self, pool: &PgPool, n: usize) -> anyhow::Result<()> {
        let sql = match self {
            Self::Zoark => {
                "SELECT count(*) FROM jobs WHERE queue = 'diagnostics' AND state = 'completed'"
            }
            Self::Apalis => {
                "SELECT count(*) FROM apalis.jobs WHERE job_type = 'bench' AND status = 'Done'"
            }
            Self::Graphile => return Ok(()),
        };
        let done: i64 = sqlx::query_scalar(sql).fetch_one(pool).await?;
        anyhow::ensure!(
            usize::try_from(done)? == n,
            "{done} of {n} jobs are completed"
        );
        Ok(())
    }
}

/// graphile-worker's pool: a slot holds a connection only while its task queries, and no
/// benchmark task does except `ping`; capped so that four processes of 1,000 slots fit the
/// server's `max_connections`.
fn graphile_pool(concurrency: usize) -> usize {
    concurrency.min(24) + 2
}

/// Idle load, RSS and pickup latency of one process.
struct Extras {
    idle_queries_per_s: f64,
    idle_exec_ms_per_s: Option<f64>,
    idle_with_history: Option<IdleCost>,
    rss_mib: f64,
    p50: f64,
    p99: f64,
}

pub async fn run(
    args: &QueueArgs,
    plan: &Plan,
    admin: &PgPool,
    peer: Peer,
    bounds: &[(Scenario, f64)],
) -> anyhow::Result<Vec<Figures>> {
    let db = peer.prepare(admin, &args.server).await?;
    let mut figures = Vec::new();
    for (concurrency, processes) in plan.worker_sets() {
        let rows: Vec<Scenario> = plan
            .rows
            .iter()
            .filter(|r| r.workers() == (concurrency, processes) && peer.runs(r))
            .copied()
            .collect();
        if rows.is_empty() {
            continue;
        }
        println!("-- {concurrency} slots × {processes}");
        // One after the other, so that a system migrating its schema on start does it once.
        let mut workers = Vec::with_capacity(processes);
        for _ in 0..processes {
            let mut worker = Worker::spawn(peer.name(), peer.command(args, &db.url, concurrency)?)?;
            worker
                .wait_for(peer.ready_line(), Duration::from_secs(60))
                .await?;
            workers.push(worker);
        }
        let mut extras = None;
        if plan.headline().is_some_and(|h| rows.contains(&h))
            && let Some(worker) = workers.first()
        {
            extras = Some(idle_and_pickup(plan, admin, peer, &db, worker).await?);
            peer.clear(&db.pool).await?;
        }
        for row in rows {
            let mut row_figures = drain(args, plan, peer, &db, &workers, &row).await?;
            row_figures.bound_per_s = bounds.iter().find(|(r, _)| *r == row).map(|(_, b)| *b);
            if let (Some(e), true) = (&extras, plan.headline() == Some(row)) {
                row_figures.idle_queries_per_s = Some(e.idle_queries_per_s);
                row_figures.idle_exec_ms_per_s = e.idle_exec_ms_per_s;
                row_figures.idle_with_history = e.idle_with_history.clone();
                row_figures.rss_mib = Some(e.rss_mib);
                row_figures.pickup_p50_ms = Some(e.p50);
                row_figures.pickup_p99_ms = Some(e.p99);
            }
            println!("{}", serde_json::to_string(&row_figures)?);
            figures.push(row_figures);
        }
        for worker in workers {
            worker.stop().await?;
        }
    }
    db.poll.close().await;
    db.pool.close().await;
    Ok(figures)
}

async fn idle_and_pickup(
    plan: &Plan,
    admin: &PgPool,
    peer: Peer,
    db: &Database,
    worker: &Worker,
) -> anyhow::Result<Extras> {
    // Idle: settle, then count the statements the worker sends.
    let database = peer.database();
    let source = db::query_source(admin).await;
    let idle = idle_cost(plan, admin, source, database, 0).await?;
    let idle_queries_per_s = idle.queries_per_s;
    let rss_mib = worker.rss_mib()?;
    println!(
        "idle: {idle_queries_per_s:.2} queries/s ({source:?}), {:.3} ms of execution/s, RSS {rss_mib:.1} MiB",
        idle.exec_ms_per_s
    );
    // Zoark keeps finished jobs for its API: its idle cost must not grow with them.
    let mut idle_with_history = None;
    if peer == Peer::Zoark && plan.finished_rows > 0 {
        add_history(&db.pool, plan.finished_rows).await?;
        let cost = idle_cost(plan, admin, source, database, plan.finished_rows).await?;
        println!(
            "idle with {} finished jobs: {:.2} queries/s, {:.3} ms of execution/s",
            cost.finished_rows, cost.queries_per_s, cost.exec_ms_per_s
        );
        idle_with_history = Some(cost);
        sqlx::query("DELETE FROM jobs WHERE queue = 'bench_history'")
            .execute(&db.pool)
            .await?;
        sqlx::query("VACUUM ANALYZE jobs").execute(&db.pool).await?;
    }

    // Pickup latency: insert from another connection, wait for the job's NOTIFY.
    let mut listener = PgListener::connect(&db.url).await?;
    listener.listen(peer.ping_channel()).await?;
    let mut conn = PgConnection::connect_with(&zoark_core::db::platform_options(&db.url)?).await?;
    let mut latencies = Vec::with_capacity(plan.samples);
    for i in 0..WARM_UP + plan.samples {
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
    let has_exec = db::query_source(admin).await == db::QuerySource::PgStatStatements;
    Ok(Extras {
        idle_queries_per_s,
        idle_exec_ms_per_s: has_exec.then_some(idle.exec_ms_per_s),
        idle_with_history: idle_with_history.filter(|_| has_exec),
        rss_mib,
        p50,
        p99,
    })
}

/// Settles for 5 s, then watches the idle worker's statements for `idle_secs`; `finished_rows`
/// is how many finished jobs the table holds meanwhile (Zoark's history).
async fn idle_cost(
    plan: &Plan,
    admin: &PgPool,
    source: db::QuerySource,
    database: &str,
    finished_rows: usize,
) -> anyhow::Result<IdleCost> {
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = db::queries(admin, source, database).await?;
    let exec_before = db::exec_ms(admin, database).await.unwrap_or(0.0);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(plan.idle_secs)).await;
    let after = db::queries(admin, source, database).await?;
    let exec_after = db::exec_ms(admin, database).await.unwrap_or(0.0);
    let secs = start.elapsed().as_secs_f64();
    Ok(IdleCost {
        finished_rows,
        queries_per_s: (after - before) as f64 / secs,
        exec_ms_per_s: (exec_after - exec_before) / secs,
    })
}

/// `n` completed jobs of another queue, spread over the last 30 days, as a busy installation
/// keeps them for the jobs API; analyzed, as autovacuum would have.
async fn add_history(pool: &PgPool, n: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO jobs (kind, queue, args, max_attempts, state, attempt, run_at, attempted_at, finalized_at) \
         SELECT 'diag.noop', 'bench_history', '{}', 1, 'completed', 1, t, t, t \
         FROM (SELECT now() - random() * interval '30 days' AS t FROM generate_series(1, $1)) g",
    )
    .bind(i64::try_from(n)?)
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE jobs").execute(pool).await?;
    println!(
        "added {n} finished jobs in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Bulk enqueue while the workers idle, then the burn-down from the commit on; the median of
/// the rounds, the table cleared and vacuumed between rounds.
async fn drain(
    args: &QueueArgs,
    plan: &Plan,
    peer: Peer,
    db: &Database,
    workers: &[Worker],
    row: &Scenario,
) -> anyhow::Result<Figures> {
    let cpu_seconds = || -> anyhow::Result<f64> {
        workers
            .iter()
            .map(Worker::cpu_seconds)
            .sum::<anyhow::Result<f64>>()
    };
    let last_lines = || {
        workers
            .iter()
            .map(Worker::last_lines)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut bulk = Vec::new();
    let mut drains = Vec::new();
    let mut cpu = Vec::new();
    for round in 1..=plan.rounds {
        let cpu_before = cpu_seconds()?;
        let (start, committed) = peer.bulk(db, row).await?;
        if round == 1 {
            db::explain(&db.poll, peer.unfinished_sql()).await?;
        }
        let done = db::wait_until_none(&db.poll, peer.unfinished_sql(), Duration::from_secs(600))
            .await
            .map_err(|e| e.context(last_lines()))?;
        let cpu_per_job = (cpu_seconds()? - cpu_before) * 1e6 / row.jobs as f64;
        peer.verify(&db.pool, row.jobs).await?;
        let bulk_per_s = row.jobs as f64 / (committed - start).as_secs_f64();
        let drain_per_s = row.jobs as f64 / (done - committed).as_secs_f64();
        println!(
            "{} round {round}: bulk enqueue {bulk_per_s:.0} jobs/s; drain {drain_per_s:.0} jobs/s \
             ({cpu_per_job:.1} µs of worker CPU per job)",
            row.label()
        );
        bulk.push(bulk_per_s);
        drains.push(drain_per_s);
        cpu.push(cpu_per_job);
        peer.clear(&db.pool).await?;
    }
    Ok(Figures {
        system: peer.name(),
        settings: peer.settings(args, row),
        concurrency: row.concurrency,
        processes: row.processes,
        jobs: row.jobs,
        tenant: row.tenant,
        job: row.job,
        bulk_enqueue_per_s: median(bulk),
        drain_per_s: median(drains.clone()),
        bound_per_s: None,
        pickup_p50_ms: None,
        pickup_p99_ms: None,
        idle_queries_per_s: None,
        idle_exec_ms_per_s: None,
        idle_with_history: None,
        rss_mib: None,
        worker_cpu_us_per_job: median(cpu),
        drain_rounds_per_s: drains,
    })
}

/// The median of the rounds (the upper one of an even count).
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
