//! `zoark-bench dashboard`: how fast the dashboard's pages answer with a million jobs. A fresh
//! database gets `--jobs` jobs (by default 1,000,000: 70 % of the signed-in organization, 20 %
//! of another, 10 % of the platform; 90 % completed, the rest discarded, cancelled, retryable,
//! scheduled, available and running; eight kinds, four queues, created over a week), the
//! engine's counts folded as a worker would, `VACUUM ANALYZE`. Then `zoark-api` (release, its own
//! process) serves the dashboard, and each page is fetched `--requests` times in a row with the
//! session cookie of a platform operator (loopback, one request at a time, after 10 warm-up
//! requests): p50, p95 and max of the whole response (headers and body). With `--chromium`,
//! each page is also loaded in headless Chromium (through chromedriver) and its first
//! contentful paint read from the Paint Timing API (median of 5 loads).

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    child::Worker,
    db,
    peers::percentile,
    platform::{self, free_port},
    report,
};

#[derive(clap::Args, Debug, Clone)]
pub struct DashboardArgs {
    /// The server, without a database: `postgres://user@host:port`.
    #[arg(long)]
    pub server: String,
    /// The `zoark-api` binary.
    #[arg(long)]
    pub api_bin: PathBuf,
    /// Accepted for the shape of the platform benchmarks; the benchmark folds the counts itself.
    #[arg(long)]
    pub worker_bin: Option<PathBuf>,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Jobs in the table.
    #[arg(long, default_value_t = 1_000_000)]
    pub jobs: u32,
    /// Requests per page.
    #[arg(long, default_value_t = 200)]
    pub requests: usize,
    /// Also measure first contentful paint in headless Chromium (`ZOARK_CHROMIUM` and
    /// `ZOARK_CHROMEDRIVER` name the programs).
    #[arg(long)]
    pub chromium: bool,
    /// 100,000 jobs and 30 requests per page: a smoke run.
    #[arg(long)]
    pub quick: bool,
}

/// The target of the dashboard issue: every page's HTML within 50 ms at p95.
const TARGET_P95_MS: f64 = 50.0;
/// And its first contentful paint within 300 ms.
const TARGET_FCP_MS: f64 = 300.0;
const OPERATOR: &str = "bench@example.com";
const PASSWORD: &str = "quietly orbiting walrus 42";

#[derive(Debug, Serialize)]
struct PageFigures {
    page: String,
    path: String,
    bytes: usize,
    p50_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    first_contentful_paint_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report {
    jobs: u32,
    requests_per_page: usize,
    seed_s: f64,
    pages: Vec<PageFigures>,
    machine: Value,
    postgres: Value,
}

pub async fn run(mut args: DashboardArgs) -> anyhow::Result<()> {
    if args.quick {
        args.jobs = 100_000;
        args.requests = 30;
    }
    zoark_core::telemetry::install_crypto_provider();
    let admin = db::admin_pool(&args.server).await?;
    let url = db::fresh(&admin, &args.server, "zoark_bench_dashboard").await?;
    let pool = db::pool(&url).await?;
    zoark_core::db::migrate_all(&pool)
        .await
        .context("migrating the benchmark database")?;
    let port = free_port()?;
    let mut api_cmd = platform::command(&args.api_bin, &url, port, "default=1");
    api_cmd.env("ZOARK_OPERATORS", OPERATOR).arg("serve");
    let mut api = Worker::spawn("zoark-api", api_cmd)?;
    api.wait_for("zoark-api listening", std::time::Duration::from_secs(60))
        .await?;
    let measured = measure(&args, port, &pool).await;
    api.stop().await?;
    let mut report = measured?;
    report.postgres = report::postgres(&admin).await?;
    print(&report);
    report::write_json(&args.out, &report)?;
    println!("wrote {}", args.out.display());
    pool.close().await;
    admin.close().await;
    Ok(())
}

/// The million jobs, in statements of 100,000 (each fires the counting trigger once).
async fn seed(pool: &sqlx::PgPool, jobs: u32, ours: Uuid, theirs: Uuid) -> anyhow::Result<()> {
    const CHUNK: u32 = 100_000;
    let mut from = 0;
    while from < jobs {
        let to = (from + CHUNK).min(jobs);
        sqlx::query(
            r#"
            INSERT INTO jobs (organization_id, kind, queue, state, args, priority, attempt, max_attempts,
                              run_at, errors, worker_id, attempted_at, finalized_at, created_at)
            SELECT CASE WHEN i / 1000 % 10 < 7 THEN $3::uuid WHEN i / 1000 % 10 < 9 THEN $4::uuid END,
                   (ARRAY['email.send', 'email.broadcast', 'agents.run', 'rag.index_document',
                          'webhooks.deliver', 'reminders.send', 'approvals.notify',
                          'maintenance.prune_jobs'])[1 + i % 8],
                   (ARRAY['email', 'agents', 'rag', 'default'])[1 + i % 4],
                   s.state,
                   jsonb_build_object('customer', 'c-' || i, 'n', i, 'note', 'bench job ' || i),
                   i % 3, CASE WHEN s.state IN ('available', 'scheduled') THEN 0 ELSE 1 END, 5,
                   CASE WHEN s.state IN ('scheduled', 'retryable') THEN now() + interval '1 hour'
                        ELSE now() - make_interval(mins => i % 10080) END,
                   CASE WHEN s.state IN ('discarded', 'retryable')
                        THEN jsonb_build_array(jsonb_build_object('attempt', 1, 'at', now(), 'kind', 'error',
                                                                  'error', 'connection refused'))
                        ELSE '[]'::jsonb END,
                   CASE WHEN s.state = 'running' THEN '00000000-0000-7000-8000-000000000001'::uuid END,
                   CASE WHEN s.state NOT IN ('available', 'scheduled') THEN now() - make_interval(mins => i % 10080) END,
                   CASE WHEN s.state IN ('completed', 'discarded', 'cancelled')
                        THEN now() - make_interval(mins => i % 10080) END,
                   now() - make_interval(mins => i % 10080)
            FROM generate_series($1::int, $2::int - 1) i,
                 LATERAL (SELECT CASE WHEN i % 1000 < 900 THEN 'completed'
                                      WHEN i % 1000 < 930 THEN 'discarded'
                                      WHEN i % 1000 < 940 THEN 'cancelled'
                                      WHEN i % 1000 < 950 THEN 'retryable'
                                      WHEN i % 1000 < 970 THEN 'scheduled'
                                      WHEN i % 1000 < 999 THEN 'available'
                                      ELSE 'running' END AS state) s
            "#,
        )
        .bind(i32::try_from(from)?)
        .bind(i32::try_from(to)?)
        .bind(ours)
        .bind(theirs)
        .execute(pool)
        .await
        .context("seeding jobs")?;
        from = to;
    }
    let mut conn = pool.acquire().await?;
    zoark_jobs::counts::fold(&mut conn, false)
        .await
        .context("folding the counts")?;
    sqlx::query("VACUUM ANALYZE jobs")
        .execute(&mut *conn)
        .await
        .context("vacuuming")?;
    Ok(())
}

async fn measure(args: &DashboardArgs, port: u16, pool: &sqlx::PgPool) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let base = format!("http://127.0.0.1:{port}");
    platform::call(
        &http,
        &base,
        None,
        "/api/v1/auth/register",
        Some(serde_json::json!({"email": OPERATOR, "password": PASSWORD,
                                "name": "Bench", "organization_name": "Bench"})),
    )
    .await?;
    let ours: Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'Bench'")
        .fetch_one(pool)
        .await?;
    let theirs: Uuid =
        sqlx::query_scalar("INSERT INTO organizations (name) VALUES ('Other') RETURNING id")
            .fetch_one(pool)
            .await?;
    let seeding = Instant::now();
    seed(pool, args.jobs, ours, theirs).await?;
    let seed_s = seeding.elapsed().as_secs_f64();
    println!("seeded {} jobs in {seed_s:.1} s", args.jobs);

    let cookie = zoark_tests::cookies::sign_in(&http, &base, OPERATOR, PASSWORD).await?;
    let some_job: Uuid = sqlx::query_scalar(
        "SELECT id FROM jobs WHERE organization_id = $1 AND state = 'discarded' LIMIT 1",
    )
    .bind(ours)
    .fetch_one(pool)
    .await?;
    let customer = format!("c-{}", args.jobs / 2 + 10);
    let first_page = get(&http, &base, "/dashboard/jobs", &cookie).await?;
    let next = first_page
        .split("rel=\"next\"")
        .next()
        .and_then(|before| before.rsplit("href=\"").next())
        .map(|href| {
            href.split('"')
                .next()
                .unwrap_or_default()
                .replace("&#x2f;", "/")
                .replace("&amp;", "&")
        })
        .context("no next page link on the jobs page")?;
    let pages: Vec<(&str, String)> = vec![
        ("overview", "/dashboard".into()),
        ("jobs", "/dashboard/jobs".into()),
        ("jobs, second page", next),
        ("jobs: discarded", "/dashboard/jobs?state=discarded".into()),
        (
            "jobs: running (0.1 %)",
            "/dashboard/jobs?state=running".into(),
        ),
        (
            "jobs: queue and state",
            "/dashboard/jobs?queue=email&state=completed".into(),
        ),
        ("jobs: kind", "/dashboard/jobs?kind=agents.run".into()),
        ("jobs: last hour", "/dashboard/jobs?since=1h".into()),
        (
            "jobs: value in args",
            format!("/dashboard/jobs?q={customer}"),
        ),
        ("job detail", format!("/dashboard/jobs/{some_job}")),
        (
            "platform job detail",
            format!("/dashboard/platform/jobs/{some_job}"),
        ),
        ("queues", "/dashboard/queues".into()),
        ("schedules", "/dashboard/schedules".into()),
        ("agent runs", "/dashboard/agent-runs".into()),
        ("broadcasts", "/dashboard/broadcasts".into()),
        ("audit log", "/dashboard/audit-log".into()),
        ("platform overview", "/dashboard/platform".into()),
        ("platform jobs", "/dashboard/platform/jobs".into()),
        (
            "platform jobs: platform only",
            "/dashboard/platform/jobs?org=platform".into(),
        ),
        (
            "platform jobs: discarded",
            "/dashboard/platform/jobs?state=discarded".into(),
        ),
        ("platform queues", "/dashboard/platform/queues".into()),
    ];
    let mut figures = Vec::new();
    for (page, path) in &pages {
        let mut bytes = 0;
        for _ in 0..10 {
            bytes = get(&http, &base, path, &cookie).await?.len();
        }
        let mut ms = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            let started = Instant::now();
            get(&http, &base, path, &cookie).await?;
            ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        ms.sort_by(f64::total_cmp);
        figures.push(PageFigures {
            page: (*page).to_owned(),
            path: path.clone(),
            bytes,
            p50_ms: percentile(&ms, 50.0),
            p95_ms: percentile(&ms, 95.0),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
            first_contentful_paint_ms: None,
        });
    }
    if args.chromium {
        paint(&base, &mut figures).await?;
    }
    Ok(Report {
        jobs: args.jobs,
        requests_per_page: args.requests,
        seed_s,
        pages: figures,
        machine: report::machine(),
        postgres: Value::Null,
    })
}

/// One page's HTML, which must answer 200.
async fn get(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    cookie: &str,
) -> anyhow::Result<String> {
    let response = http
        .get(format!("{base}{path}"))
        .header(reqwest::header::COOKIE, cookie)
        .send()
        .await
        .with_context(|| format!("fetching {path}"))?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "{path} answered {status}");
    Ok(body)
}

/// First contentful paint of every page in headless Chromium, signed in through the form.
async fn paint(base: &str, figures: &mut [PageFigures]) -> anyhow::Result<()> {
    let browser = zoark_tests::browser::Browser::start().await;
    browser.open(&format!("{base}/dashboard/sign-in")).await;
    browser.fill("#email", OPERATOR).await;
    browser.fill("#password", PASSWORD).await;
    browser.follow("#sign-in").await;
    for page in figures.iter_mut() {
        let mut samples = Vec::new();
        for _ in 0..5 {
            browser.open(&format!("{base}{}", page.path)).await;
            let fcp = browser
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1]; \
                     new PerformanceObserver(list => { \
                         const e = list.getEntriesByName('first-contentful-paint')[0]; \
                         if (e) { done(e.startTime); } \
                     }).observe({ type: 'paint', buffered: true }); \
                     setTimeout(() => done(null), 5000);",
                    vec![],
                )
                .await
                .with_context(|| format!("reading the paint timing of {}", page.path))?;
            samples.push(
                fcp.as_f64()
                    .with_context(|| format!("no first contentful paint on {}", page.path))?,
            );
        }
        samples.sort_by(f64::total_cmp);
        page.first_contentful_paint_ms = Some(percentile(&samples, 50.0));
    }
    browser.close().await;
    Ok(())
}

fn print(r: &Report) {
    println!();
    println!(
        "dashboard pages: {} jobs, {} requests per page, one at a time (seeded in {:.1} s)",
        r.jobs, r.requests_per_page, r.seed_s
    );
    println!(
        "  {:<30} {:>8} {:>8} {:>8} {:>9} {:>7}",
        "page", "p50 ms", "p95 ms", "max ms", "FCP ms", "KiB"
    );
    for p in &r.pages {
        let fcp = p
            .first_contentful_paint_ms
            .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
        let over = if p.p95_ms > TARGET_P95_MS
            || p.first_contentful_paint_ms
                .is_some_and(|v| v > TARGET_FCP_MS)
        {
            "  over target"
        } else {
            ""
        };
        println!(
            "  {:<30} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>7.1}{over}",
            p.page,
            p.p50_ms,
            p.p95_ms,
            p.max_ms,
            fcp,
            p.bytes as f64 / 1024.0
        );
    }
    println!("  (targets: p95 < {TARGET_P95_MS} ms, first contentful paint < {TARGET_FCP_MS} ms)");
}
