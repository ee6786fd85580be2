//! `zoark-bench agents`: agent runs through the whole path. The API and a worker run as their
//! own processes on a fresh database; a mock LLM (wiremock, in this process) answers every chat
//! request after a fixed delay. One custom agent with the `search_tasks` tool takes three LLM
//! steps per run (two tool calls, then the answer: five steps in all). N runs are started
//! through the API; the clock runs from the first start request until every run has ended.
//!
//! Figures: the wall time beside the ideal (`runs × 3 × delay / slots`: the LLM's time alone,
//! every slot busy); the step overhead (from one step's finish to the next step's start within
//! a run: the engine's and the database's share, with the slot held, so no queueing); and the
//! event stream's commit-to-client latency (a step's `finished_at` to its `agent_step` message
//! on a WebSocket; `finished_at` is written before the commit, so the figure is an upper bound).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use anyhow::Context as _;
use futures_util::{StreamExt as _, stream};
use serde::Serialize;
use serde_json::{Value, json};
use zoark_tests::wiremock::{
    Match, Mock, MockServer, Request, ResponseTemplate,
    matchers::{method, path},
};

use crate::{
    child::Worker,
    db,
    peers::percentile,
    platform::{self, call, free_port},
    report,
};

#[derive(clap::Args, Debug, Clone)]
pub struct AgentsArgs {
    /// The server, without a database: `postgres://user@host:port`.
    #[arg(long)]
    pub server: String,
    /// The `zoark-api` binary.
    #[arg(long)]
    pub api_bin: PathBuf,
    /// The `zoark-worker` binary.
    #[arg(long)]
    pub worker_bin: PathBuf,
    /// Where the JSON report goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Runs started.
    #[arg(long, default_value_t = 1_000)]
    pub runs: usize,
    /// Slots of the worker's `agents` queue.
    #[arg(long, default_value_t = 50)]
    pub slots: usize,
    /// How long the mock LLM takes to answer, in milliseconds.
    #[arg(long, default_value_t = 200)]
    pub llm_delay_ms: u64,
    /// 100 runs: a smoke run whose figures mean little.
    #[arg(long)]
    pub quick: bool,
}

/// LLM calls per run.
const LLM_STEPS: usize = 3;

#[derive(Debug, Serialize)]
struct Report {
    slots: usize,
    runs: usize,
    runs_succeeded: i64,
    llm_delay_ms: u64,
    wall_s: f64,
    ideal_s: f64,
    step_overhead_p50_ms: f64,
    step_overhead_p99_ms: f64,
    event_commit_to_client_p50_ms: f64,
    event_commit_to_client_p99_ms: f64,
    events_received: usize,
    start_requests_s: f64,
    worker_cpu_seconds: Option<f64>,
    worker_rss_mib: Option<f64>,
    machine: Value,
    postgres: Value,
}

/// Matches chat requests carrying exactly `n` tool results: the run's turn.
struct Turn(usize);

impl Match for Turn {
    fn matches(&self, request: &Request) -> bool {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        body["messages"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count())
            == self.0
    }
}

fn completion(message: Value) -> Value {
    json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1_764_806_400,
        "model": "bench-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
}

async fn mock_llm(delay: Duration) -> MockServer {
    let server = MockServer::builder()
        .disable_request_recording()
        .start()
        .await;
    for turn in 0..LLM_STEPS {
        let message = if turn + 1 < LLM_STEPS {
            json!({"role": "assistant", "content": null, "tool_calls": [{
                "id": format!("call_{turn}"), "type": "function",
                "function": {"name": "search_tasks",
                             "arguments": "{\"query\":\"launch\",\"status\":null,\"project_id\":null}"}}]})
        } else {
            json!({"role": "assistant", "content": "Nothing is stuck."})
        };
        Mock::given(method("POST"))
            .and(path("/v1/chat/completions"))
            .and(Turn(turn))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(completion(message))
                    .set_delay(delay),
            )
            .mount(&server)
            .await;
    }
    server
}

pub async fn run(mut args: AgentsArgs) -> anyhow::Result<()> {
    if args.quick {
        args.runs = 100;
    }
    zoark_core::telemetry::install_crypto_provider();
    let admin = db::admin_pool(&args.server).await?;
    let url = db::fresh(&admin, &args.server, "zoark_bench_agents").await?;
    let pool = db::pool(&url).await?;
    zoark_core::db::migrate_all(&pool)
        .await
        .context("migrating the benchmark database")?;
    let llm = mock_llm(Duration::from_millis(args.llm_delay_ms)).await;
    let port = free_port()?;
    let queues = format!("agents={},maintenance=1", args.slots);
    let mut api_cmd = platform::command(&args.api_bin, &url, port, &queues);
    api_cmd.arg("serve");
    let mut api = Worker::spawn("zoark-api", api_cmd)?;
    api.wait_for("zoark-api listening", Duration::from_secs(60))
        .await?;
    let mut worker_cmd = platform::command(&args.worker_bin, &url, port, &queues);
    // Every slot may hold a connection at once.
    worker_cmd.env(
        "ZOARK_DATABASE_MAX_CONNECTIONS",
        (args.slots + 10).to_string(),
    );
    let mut worker = Worker::spawn("zoark-worker", worker_cmd)?;
    worker
        .wait_for("zoark-worker started", Duration::from_secs(60))
        .await?;
    let measured = measure(&args, port, &llm, &pool, &worker).await;
    let worker_rss_mib = worker.rss_mib().ok();
    worker.stop().await?;
    api.stop().await?;
    let mut report = measured?;
    report.worker_rss_mib = worker_rss_mib;
    report.postgres = report::postgres(&admin).await?;
    print(&report);
    report::write_json(&args.out, &report)?;
    println!("wrote {}", args.out.display());
    pool.close().await;
    admin.close().await;
    Ok(())
}

/// Step messages received on the event stream: (step id, when).
type Received = Arc<Mutex<Vec<(String, SystemTime)>>>;

async fn listen(base: &str, token: &str, received: Received) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut request =
        format!("{}/api/v1/events", base.replace("http://", "ws://")).into_client_request()?;
    request.headers_mut().insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    tokio::spawn(async move {
        while let Some(Ok(message)) = socket.next().await {
            let at = SystemTime::now();
            let Ok(text) = message.to_text() else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if event["type"] == "agent_step" && event["status"] == "succeeded" {
                let id = event["id"].as_str().unwrap_or_default().to_owned();
                if let Ok(mut received) = received.lock() {
                    received.push((id, at));
                }
            }
        }
    });
    Ok(())
}

async fn measure(
    args: &AgentsArgs,
    port: u16,
    llm: &MockServer,
    pool: &sqlx::PgPool,
    worker: &Worker,
) -> anyhow::Result<Report> {
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let token = platform::register(&http, &base).await?;
    let auth = Some(token.as_str());
    call(
        &http,
        &base,
        auth,
        "/api/v1/llm-credentials",
        Some(
            json!({"name": "Mock", "base_url": format!("{}/v1", llm.uri()),
                    "api_key": "sk-bench", "default_model": "bench-model"}),
        ),
    )
    .await?;
    let agent = call(
        &http,
        &base,
        auth,
        "/api/v1/agents",
        Some(json!({"name": "Bench", "goal": "Find stuck tasks.",
                    "instructions": "Search the tasks, then answer.", "tools": ["search_tasks"]})),
    )
    .await?;
    let agent_id = agent["id"].as_str().context("no agent id")?.to_owned();
    let received: Received = Arc::default();
    listen(&base, &token, received.clone()).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let cpu_before = worker.cpu_seconds().ok();
    let started = Instant::now();
    let path = format!("/api/v1/agents/{agent_id}/runs");
    let starts: Vec<anyhow::Result<Value>> = stream::iter(0..args.runs)
        .map(|n| call(&http, &base, auth, &path, Some(json!({"input": {"n": n}}))))
        .buffer_unordered(16)
        .collect()
        .await;
    for start in starts {
        start?;
    }
    let start_requests = started.elapsed();
    let limit = Duration::from_secs(1800);
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM agent_runs WHERE status IN ('queued', 'running')",
        )
        .fetch_one(pool)
        .await?;
        if unfinished == 0 {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < limit,
            "{unfinished} runs unfinished after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let wall = started.elapsed();
    let cpu = worker
        .cpu_seconds()
        .ok()
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    // Let the last events arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agent_runs WHERE status = 'succeeded'")
            .fetch_one(pool)
            .await?;
    let mut overheads: Vec<f64> = sqlx::query_scalar::<_, Option<f64>>(
        "SELECT extract(epoch FROM started_at - lag(finished_at)
                        OVER (PARTITION BY run_id ORDER BY position))::float8 * 1000
         FROM agent_run_steps",
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .flatten()
    .collect();
    overheads.sort_by(f64::total_cmp);
    let finished: Vec<(String, f64)> = sqlx::query_as(
        "SELECT id::text, extract(epoch FROM finished_at)::float8 FROM agent_run_steps
         WHERE status = 'succeeded'",
    )
    .fetch_all(pool)
    .await?;
    let finished: std::collections::HashMap<String, f64> = finished.into_iter().collect();
    let events = received
        .lock()
        .map_err(|_| anyhow::anyhow!("the event listener panicked"))?
        .clone();
    let mut latencies: Vec<f64> = events
        .iter()
        .filter_map(|(id, at)| {
            let committed = finished.get(id)?;
            let at = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .ok()?
                .as_secs_f64();
            Some((at - committed) * 1000.0)
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    let delay_s = Duration::from_millis(args.llm_delay_ms).as_secs_f64();
    Ok(Report {
        slots: args.slots,
        runs: args.runs,
        runs_succeeded: succeeded,
        llm_delay_ms: args.llm_delay_ms,
        wall_s: wall.as_secs_f64(),
        ideal_s: args.runs as f64 * LLM_STEPS as f64 * delay_s / args.slots as f64,
        step_overhead_p50_ms: percentile(&overheads, 50.0),
        step_overhead_p99_ms: percentile(&overheads, 99.0),
        event_commit_to_client_p50_ms: percentile(&latencies, 50.0),
        event_commit_to_client_p99_ms: percentile(&latencies, 99.0),
        events_received: latencies.len(),
        start_requests_s: start_requests.as_secs_f64(),
        worker_cpu_seconds: cpu,
        worker_rss_mib: None,
        machine: report::machine(),
        postgres: Value::Null,
    })
}

fn print(r: &Report) {
    println!();
    println!(
        "agent runs: {} runs × {LLM_STEPS} LLM steps (mock LLM {} ms), {} agents slots",
        r.runs, r.llm_delay_ms, r.slots
    );
    println!(
        "  wall                         {:>10.2} s   (ideal {:.2} s: {:.2}×)",
        r.wall_s,
        r.ideal_s,
        r.wall_s / r.ideal_s
    );
    println!("  succeeded                    {:>10}", r.runs_succeeded);
    println!(
        "  step overhead p50 / p99      {:>7.1} / {:.1} ms   (target p99 ≤ 20 ms)",
        r.step_overhead_p50_ms, r.step_overhead_p99_ms
    );
    println!(
        "  event commit→client p50/p99  {:>7.1} / {:.1} ms   (target p99 ≤ 50 ms, {} events)",
        r.event_commit_to_client_p50_ms, r.event_commit_to_client_p99_ms, r.events_received
    );
    println!(
        "  start requests               {:>10.2} s",
        r.start_requests_s
    );
    if let Some(cpu) = r.worker_cpu_seconds {
        println!("  worker CPU                   {cpu:>10.1} s");
    }
}
