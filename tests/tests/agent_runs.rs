//! Agent runs end to end: a custom agent created through the API, its runs started, listed,
//! cancelled, driven by the real worker against a wiremock server speaking the OpenAI chat
//! API: tool calls with their effects, structured output, a 429 that snoozes, a 5xx that
//! retries, a 4xx that fails the run, a worker killed mid-run that resumes without repeating a
//! tool or a stored LLM answer, a demoted creator's agent refused a tool, schedule ticks that
//! skip while the previous run is unfinished, and another organization that sees nothing.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt as _;

use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;
use wiremock::{
    Match, Mock, MockServer, Request, ResponseTemplate,
    matchers::{method, path},
};
use zoark_core::access::Role;
use zoark_tests::{TestApp, call, fixtures, fixtures::Account};

/// Matches chat requests carrying exactly `n` tool results: which turn of the run it is.
struct ToolResults(usize);

impl Match for ToolResults {
    fn matches(&self, request: &Request) -> bool {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let results = body["messages"]
            .as_array()
            .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count());
        results == self.0
    }
}

fn completion(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_764_806_400,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": null}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120}
    })
}

fn tool_call(id: &str, name: &str, arguments: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion(
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": id, "type": "function",
            "function": {"name": name, "arguments": arguments.to_string()}}]}),
        "tool_calls",
    ))
}

fn answer(text: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(completion(
        json!({"role": "assistant", "content": text}),
        "stop",
    ))
}

/// Answers the `turn`-th chat request of a run (0: no tool result yet).
async fn on_turn(server: &MockServer, turn: usize, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(ToolResults(turn))
        .respond_with(response)
        .mount(server)
        .await;
}

async fn chat_requests(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/v1/chat/completions")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

struct World {
    app: TestApp,
    llm: MockServer,
    admin: Account,
    project: Uuid,
}

/// An organization with an LLM provider pointing at the mock and a project; priced so that
/// costs are visible.
async fn world() -> World {
    world_with_queues("agents=2,maintenance=1,email=2").await
}

/// [`world`] with a worker serving `queues`.
async fn world_with_queues(queues: &str) -> World {
    let llm = MockServer::start().await;
    let app = TestApp::builder()
        .env("ZOARK_LLM_PRICES", "gpt-4o-mini=0.15/0.60")
        .env("ZOARK_WORKER_QUEUES", queues)
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Apollo Inc").await;
    let (status, body) = call(
        &app,
        Method::POST,
        "/api/v1/llm-credentials",
        &admin.access_token,
        Some(
            json!({"name": "Mock", "base_url": format!("{}/v1", llm.uri()),
                    "api_key": "sk-test", "default_model": "gpt-4o-mini"}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let project = fixtures::project(&app.pool, admin.organization_id, "Apollo").await;
    World {
        app,
        llm,
        admin,
        project,
    }
}

/// A custom agent with `tools`, created by `creator`.
async fn agent(world: &World, creator: &Account, tools: &[&str], config: Value) -> String {
    let (status, body) = call(
        &world.app,
        Method::POST,
        "/api/v1/agents",
        &creator.access_token,
        Some(json!({
            "name": "Board keeper", "goal": "Keep the Apollo board tidy.",
            "instructions": "Create the tasks asked for.", "tools": tools, "config": config,
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["kind"], "custom");
    assert_eq!(body["created_by"], creator.user_id.to_string());
    body["id"].as_str().unwrap().to_owned()
}

async fn start_run(world: &World, by: &Account, agent: &str, input: Value) -> String {
    let (status, body) = call(
        &world.app,
        Method::POST,
        &format!("/api/v1/agents/{agent}/runs"),
        &by.access_token,
        Some(json!({ "input": input })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["trigger"], "manual");
    body["id"].as_str().unwrap().to_owned()
}

async fn get_run(world: &World, run: &str) -> Value {
    let (status, body) = call(
        &world.app,
        Method::GET,
        &format!("/api/v1/agent-runs/{run}"),
        &world.admin.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn kinds(run: &Value) -> Vec<(String, String)> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["kind"].as_str().unwrap().to_owned(),
                s["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn task_titles(world: &World) -> Vec<String> {
    sqlx::query_scalar("SELECT title FROM tasks WHERE project_id = $1 ORDER BY created_at")
        .bind(world.project)
        .fetch_all(&world.app.pool)
        .await
        .unwrap()
}

async fn drain(world: &World) {
    world.app.drain_jobs(Duration::from_secs(30)).await.unwrap();
}

#[tokio::test]
async fn a_tool_call_takes_effect_as_the_creator_and_the_answer_ends_the_run_with_every_step() {
    let world = world().await;
    let agent = agent(
        &world,
        &world.admin,
        &["create_task", "search_tasks"],
        json!({}),
    )
    .await;
    on_turn(
        &world.llm,
        0,
        tool_call(
            "call_1",
            "create_task",
            json!({"project_id": world.project, "title": "Write the launch notes",
                   "description": null, "status": null}),
        ),
    )
    .await;
    on_turn(&world.llm, 1, answer("Created the task.")).await;
    let run = start_run(&world, &world.admin, &agent, json!({"ask": "launch notes"})).await;
    drain(&world).await;

    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["output"], json!({"answer": "Created the task."}));
    assert_eq!(
        kinds(&body),
        [
            ("llm_call".into(), "succeeded".into()),
            ("tool_call".into(), "succeeded".into()),
            ("llm_call".into(), "succeeded".into())
        ]
    );
    assert_eq!(
        (body["tokens_in"].as_i64(), body["tokens_out"].as_i64()),
        (Some(200), Some(40))
    );
    // 100 × 0.15 + 20 × 0.60 = 27 millionths per call.
    assert_eq!(body["cost_micros"], 54);
    assert_eq!(body["steps"][0]["cost_micros"], 27);
    assert!(body["steps"][0]["duration_ms"].is_i64());
    assert_eq!(task_titles(&world).await, ["Write the launch notes"]);
    let created_by: Option<Uuid> = sqlx::query_scalar("SELECT created_by FROM tasks")
        .fetch_one(&world.app.pool)
        .await
        .unwrap();
    assert_eq!(created_by, Some(world.admin.user_id));

    // The LLM was offered the agent's tools and read the tool's result.
    let requests = chat_requests(&world.llm).await;
    assert_eq!(requests.len(), 2);
    let offered: Vec<&str> = requests[0]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(offered, ["create_task", "search_tasks"]);
    assert_eq!(
        requests[0]["messages"][1]["content"],
        r#"{"ask":"launch notes"}"#
    );
    let tool_result = &requests[1]["messages"][3];
    assert_eq!(tool_result["role"], "tool");
    assert_eq!(tool_result["tool_call_id"], "call_1");
    assert!(tool_result["content"].as_str().unwrap().contains("task_id"));

    // Billing and the activity feed.
    let usage: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT metric, quantity, cost_micros FROM usage_records ORDER BY metric, created_at",
    )
    .fetch_all(&world.app.pool)
    .await
    .unwrap();
    assert_eq!(
        usage,
        [
            ("llm_tokens_in".into(), 100, 15),
            ("llm_tokens_in".into(), 100, 15),
            ("llm_tokens_out".into(), 20, 12),
            ("llm_tokens_out".into(), 20, 12)
        ]
    );
    let activity: (String, String) =
        sqlx::query_as("SELECT action, status FROM agent_activity WHERE run_id = $1::uuid")
            .bind(&run)
            .fetch_one(&world.app.pool)
            .await
            .unwrap();
    assert_eq!(activity, ("run_finished".into(), "success".into()));

    // Listed with filters.
    let (status, list) = call(
        &world.app,
        Method::GET,
        &format!("/api/v1/agent-runs?agent_id={agent}&status=succeeded&trigger=manual"),
        &world.admin.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(list["items"][0].get("steps").is_none());
    let (_, none) = call(
        &world.app,
        Method::GET,
        "/api/v1/agent-runs?status=failed",
        &world.admin.access_token,
        None,
    )
    .await;
    assert_eq!(none["items"], json!([]));
}

#[tokio::test]
async fn an_output_schema_makes_the_result_structured_and_a_bad_answer_fails_the_run() {
    let world = world().await;
    let schema = json!({"type": "object", "properties": {"stuck": {"type": "integer"}},
                        "required": ["stuck"], "additionalProperties": false});
    let agent = agent(&world, &world.admin, &[], json!({"output_schema": schema})).await;
    on_turn(&world.llm, 0, answer(r#"{"stuck": 3}"#)).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    drain(&world).await;
    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["output"], json!({"stuck": 3}));
    let request = &chat_requests(&world.llm).await[0];
    assert_eq!(request["response_format"]["type"], "json_schema");
    assert_eq!(request["response_format"]["json_schema"]["schema"], schema);
    assert!(request.get("tools").is_none());

    world.llm.reset().await;
    on_turn(&world.llm, 0, answer("three, I think")).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    drain(&world).await;
    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "failed");
    assert!(
        body["error"].as_str().unwrap().contains("output schema"),
        "{body}"
    );
}

#[tokio::test]
async fn a_429_snoozes_the_step_without_spending_an_attempt_and_the_same_step_resumes() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &[], json!({})).await;
    on_turn(
        &world.llm,
        0,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "1")
            .set_body_json(json!({"error": {"message": "Rate limit reached"}})),
    )
    .await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    drain(&world).await;
    let (state, attempt): (String, i32) =
        sqlx::query_as("SELECT state, attempt FROM jobs WHERE kind = 'agents.run'")
            .fetch_one(&world.app.pool)
            .await
            .unwrap();
    assert_eq!(
        (state.as_str(), attempt),
        ("scheduled", 0),
        "a snooze spends no attempt"
    );
    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "running");
    assert_eq!(kinds(&body), [("llm_call".into(), "running".into())]);

    world.llm.reset().await;
    on_turn(&world.llm, 0, answer("Done.")).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    drain(&world).await;
    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(
        kinds(&body),
        [("llm_call".into(), "succeeded".into())],
        "the snoozed step was taken up, not added"
    );
}

#[tokio::test]
async fn a_5xx_retries_the_job_and_a_4xx_fails_the_run_with_the_providers_message() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &[], json!({})).await;
    on_turn(
        &world.llm,
        0,
        ResponseTemplate::new(503).set_body_string("upstream overloaded"),
    )
    .await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    drain(&world).await;
    let (state, attempt, errors): (String, i32, Value) =
        sqlx::query_as("SELECT state, attempt, errors FROM jobs WHERE kind = 'agents.run'")
            .fetch_one(&world.app.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempt), ("retryable", 1));
    assert!(errors.to_string().contains("unavailable"), "{errors}");
    assert_eq!(get_run(&world, &run).await["status"], "running");

    world.llm.reset().await;
    on_turn(
        &world.llm,
        0,
        ResponseTemplate::new(400).set_body_json(json!({"error": {
            "message": "The model `gpt-5-nano` does not exist", "type": "invalid_request_error",
            "param": "model", "code": "model_not_found"}})),
    )
    .await;
    sqlx::query("UPDATE jobs SET run_at = now() WHERE kind = 'agents.run'")
        .execute(&world.app.pool)
        .await
        .unwrap();
    drain(&world).await;
    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "failed", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("does not exist"),
        "{body}"
    );
    assert_eq!(kinds(&body), [("llm_call".into(), "failed".into())]);
    let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE kind = 'agents.run'")
        .fetch_one(&world.app.pool)
        .await
        .unwrap();
    assert_eq!(state, "completed", "a refused request is not retried");
}

#[tokio::test]
async fn a_demoted_creators_agent_is_refused_the_tool_and_the_llm_reads_why() {
    let world = world().await;
    let manager = fixtures::member(
        &world.app,
        world.admin.organization_id,
        "manager@example.com",
        Role::Manager,
    )
    .await;
    let agent = agent(&world, &manager, &["create_task"], json!({})).await;
    sqlx::query("UPDATE memberships SET role = 'viewer' WHERE user_id = $1")
        .bind(manager.user_id)
        .execute(&world.app.pool)
        .await
        .unwrap();
    on_turn(
        &world.llm,
        0,
        tool_call(
            "call_1",
            "create_task",
            json!({"project_id": world.project, "title": "Sneaky", "description": null, "status": null}),
        ),
    )
    .await;
    on_turn(&world.llm, 1, answer("I could not create it.")).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    drain(&world).await;

    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "succeeded", "{body}");
    let step = &body["steps"][1];
    assert_eq!(
        (step["kind"].as_str(), step["status"].as_str()),
        (Some("tool_call"), Some("failed"))
    );
    assert!(
        step["error"].as_str().unwrap().contains("tasks.write"),
        "{step}"
    );
    assert!(task_titles(&world).await.is_empty());
    let told = &chat_requests(&world.llm).await[1]["messages"][3]["content"];
    assert!(told.as_str().unwrap().contains("tasks.write"), "{told}");

    // A tool the agent was not given is refused the same way, whatever the LLM asks.
    world.llm.reset().await;
    sqlx::query("UPDATE memberships SET role = 'manager' WHERE user_id = $1")
        .bind(manager.user_id)
        .execute(&world.app.pool)
        .await
        .unwrap();
    on_turn(
        &world.llm,
        0,
        tool_call(
            "call_2",
            "move_task",
            json!({"task_id": Uuid::nil(), "status": "done"}),
        ),
    )
    .await;
    on_turn(&world.llm, 1, answer("ok")).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    drain(&world).await;
    let body = get_run(&world, &run).await;
    assert!(
        body["steps"][1]["error"]
            .as_str()
            .unwrap()
            .contains("not among this agent's tools"),
        "{body}"
    );

    // Removing the creator disables the agent.
    let (status, _) = call(
        &world.app,
        Method::DELETE,
        &format!("/api/v1/organization/members/{}", manager.user_id),
        &world.admin.access_token,
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, problem) = call(
        &world.app,
        Method::POST,
        &format!("/api/v1/agents/{agent}/runs"),
        &world.admin.access_token,
        Some(json!({})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("agent_disabled"))
    );
}

#[tokio::test]
async fn cancel_stops_a_queued_run_at_once_and_a_finished_one_answers_409() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &[], json!({})).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    let cancel = format!("/api/v1/agent-runs/{run}/cancel");
    let (status, body) = call(
        &world.app,
        Method::POST,
        &cancel,
        &world.admin.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "cancelled");
    assert!(body["cancel_requested_at"].is_string());
    let (status, again) = call(
        &world.app,
        Method::POST,
        &cancel,
        &world.admin.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), &again["status"]),
        (200, &json!("cancelled"))
    );
    drain(&world).await;
    assert!(
        chat_requests(&world.llm).await.is_empty(),
        "a cancelled run calls no LLM"
    );

    on_turn(&world.llm, 0, answer("Done.")).await;
    let done = start_run(&world, &world.admin, &agent, json!({})).await;
    drain(&world).await;
    let (status, problem) = call(
        &world.app,
        Method::POST,
        &format!("/api/v1/agent-runs/{done}/cancel"),
        &world.admin.access_token,
        None,
    )
    .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("agent_run_finished"))
    );
}

#[tokio::test]
async fn a_running_run_cancelled_mid_step_stops_before_its_next_step() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &["create_task"], json!({})).await;
    let create = tool_call(
        "c1",
        "create_task",
        json!({"project_id": world.project, "title": "Never", "description": null, "status": null}),
    );
    on_turn(&world.llm, 0, create.set_delay(Duration::from_millis(1500))).await;
    on_turn(&world.llm, 1, answer("Done.")).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    // Cancelled while its first LLM step waits for the answer.
    let cancel = async {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while chat_requests(&world.llm).await.is_empty() {
            assert!(std::time::Instant::now() < deadline, "the run never asked");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (status, body) = call(
            &world.app,
            Method::POST,
            &format!("/api/v1/agent-runs/{run}/cancel"),
            &world.admin.access_token,
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "running");
        assert!(body["cancel_requested_at"].is_string());
    };
    let (drained, ()) = tokio::join!(world.app.drain_jobs(Duration::from_secs(30)), cancel);
    drained.unwrap();
    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "cancelled", "{body}");
    // The answer is kept; the tool call it asked for is never recorded or done.
    assert_eq!(kinds(&body), [("llm_call".into(), "succeeded".into())]);
    assert!(task_titles(&world).await.is_empty());
    assert_eq!(chat_requests(&world.llm).await.len(), 1);
}

#[tokio::test]
async fn a_schedule_tick_skips_while_its_previous_run_is_unfinished_and_records_the_skip() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &[], json!({})).await;
    let organization_id = world.admin.organization_id;
    let schedule: Uuid = sqlx::query_scalar(
        "INSERT INTO agent_schedules (organization_id, agent_id, cron_expression, next_run_at)
         VALUES ($1, $2::uuid, '0 9 * * *', now()) RETURNING id",
    )
    .bind(organization_id)
    .bind(&agent)
    .fetch_one(&world.app.pool)
    .await
    .unwrap();
    // The previous tick's run, still running (its worker is elsewhere).
    sqlx::query(
        "INSERT INTO agent_runs (organization_id, agent_id, schedule_id, trigger, status, started_at)
         VALUES ($1, $2::uuid, $3, 'schedule', 'running', now())",
    )
    .bind(organization_id)
    .bind(&agent)
    .bind(schedule)
    .execute(&world.app.pool)
    .await
    .unwrap();
    let tick = chrono::Utc::now();
    let mut conn = world.app.pool.acquire().await.unwrap();
    let job = zoark_jobs::agents::RunScheduledAgent {
        schedule_id: schedule,
        agent_id: agent.parse().unwrap(),
        tick,
    };
    zoark_jobs::enqueue(
        &mut conn,
        &job,
        zoark_jobs::Opts::organization(organization_id),
    )
    .await
    .unwrap();
    drop(conn);
    drain(&world).await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM agent_runs")
        .fetch_one(&world.app.pool)
        .await
        .unwrap();
    assert_eq!(runs, 1, "no second run while the first is unfinished");
    let skipped: String = sqlx::query_scalar(
        "SELECT summary FROM agent_activity WHERE action = 'run_skipped' AND agent_id = $1::uuid",
    )
    .bind(&agent)
    .fetch_one(&world.app.pool)
    .await
    .unwrap();
    assert!(skipped.contains("previous run is unfinished"), "{skipped}");

    // Once it has ended, the next tick runs.
    sqlx::query("UPDATE agent_runs SET status = 'succeeded', finished_at = now()")
        .execute(&world.app.pool)
        .await
        .unwrap();
    on_turn(&world.llm, 0, answer("Morning check done.")).await;
    let mut conn = world.app.pool.acquire().await.unwrap();
    let next = zoark_jobs::agents::RunScheduledAgent {
        tick: tick + chrono::Duration::days(1),
        ..job
    };
    zoark_jobs::enqueue(
        &mut conn,
        &next,
        zoark_jobs::Opts::organization(organization_id),
    )
    .await
    .unwrap();
    drop(conn);
    drain(&world).await;
    let (status, list) = call(
        &world.app,
        Method::GET,
        "/api/v1/agent-runs?trigger=schedule&status=succeeded",
        &world.admin.access_token,
        None,
    )
    .await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["schedule_id"], schedule.to_string());
    assert_eq!(items[0]["output"], json!({"answer": "Morning check done."}));
}

#[tokio::test]
async fn another_organization_sees_none_of_the_runs_and_cannot_start_or_cancel_them() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &[], json!({})).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    let other = fixtures::register(&world.app, "other@example.com", "Other Inc").await;
    let token = other.access_token.as_str();
    let (status, list) = call(&world.app, Method::GET, "/api/v1/agent-runs", token, None).await;
    assert_eq!((status.as_u16(), &list["items"]), (200, &json!([])));
    for (method, path) in [
        (Method::GET, format!("/api/v1/agent-runs/{run}")),
        (Method::POST, format!("/api/v1/agent-runs/{run}/cancel")),
        (Method::POST, format!("/api/v1/agents/{agent}/runs")),
        (Method::PATCH, format!("/api/v1/agents/{agent}")),
        (Method::DELETE, format!("/api/v1/agents/{agent}")),
    ] {
        let body = (method != Method::GET && method != Method::DELETE).then(|| json!({}));
        let (status, problem) = call(&world.app, method.clone(), &path, token, body).await;
        assert_eq!(status, 404, "{method} {path}: {problem}");
    }
    let activity: i64 =
        sqlx::query_scalar("SELECT count(*) FROM agent_activity WHERE organization_id = $1")
            .bind(other.organization_id)
            .fetch_one(&world.app.pool)
            .await
            .unwrap();
    assert_eq!(activity, 0);
}

#[tokio::test]
async fn custom_agents_are_validated_built_in_ones_keep_their_code_and_tools_are_listed() {
    let world = world().await;
    let token = world.admin.access_token.as_str();
    let (status, problem) = call(
        &world.app,
        Method::POST,
        "/api/v1/agents",
        token,
        Some(
            json!({"name": " ", "goal": "g", "instructions": "i", "tools": ["run_shell"],
                    "max_steps": 0}),
        ),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["errors"][0]["field"], "tools[0]");
    assert!(problem["detail"].as_str().unwrap().contains("run_shell"));
    let (status, problem) = call(
        &world.app,
        Method::POST,
        "/api/v1/agents",
        token,
        Some(
            json!({"name": " ", "goal": "g", "instructions": "i", "max_steps": 0,
                    "llm_credential_id": Uuid::nil(), "config": {"output_schema": 3}}),
        ),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        zoark_tests::field_names(&problem),
        ["name", "config", "max_steps"]
    );

    let (_, agents) = call(&world.app, Method::GET, "/api/v1/agents", token, None).await;
    let monitor = agents["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "task_monitor")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = format!("/api/v1/agents/{monitor}");
    let (status, problem) = call(
        &world.app,
        Method::PATCH,
        &one,
        token,
        Some(json!({"instructions": "x"})),
    )
    .await;
    assert_eq!(
        (status.as_u16(), zoark_tests::field_names(&problem)),
        (422, vec!["instructions".to_owned()])
    );
    let (status, changed) = call(
        &world.app,
        Method::PATCH,
        &one,
        token,
        Some(json!({"enabled": false, "config": {"threshold_hours": 24}})),
    )
    .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(
        (changed["enabled"].as_bool(), &changed["config"]),
        (Some(false), &json!({"threshold_hours": 24}))
    );
    let (status, problem) = call(&world.app, Method::DELETE, &one, token, None).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (409, Some("agent_built_in"))
    );

    let custom = agent(&world, &world.admin, &["log_work"], json!({})).await;
    let (status, _) = call(
        &world.app,
        Method::DELETE,
        &format!("/api/v1/agents/{custom}"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 204);

    let (status, tools) = call(&world.app, Method::GET, "/api/v1/agent-tools", token, None).await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = tools["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "search_tasks",
            "create_task",
            "log_work",
            "move_task",
            "email_team_member",
            "search_documents"
        ]
    );
    assert_eq!(tools["items"][1]["permission"], "tasks.write");
}

#[tokio::test]
async fn a_worker_killed_mid_run_resumes_at_the_unfinished_step_repeating_no_tool_and_no_stored_answer()
 {
    let world = world().await;
    let agent = agent(&world, &world.admin, &["create_task"], json!({})).await;
    let create = |id: &str, title: &str| {
        tool_call(
            id,
            "create_task",
            json!({"project_id": world.project, "title": title, "description": null, "status": null}),
        )
    };
    on_turn(&world.llm, 0, create("call_a", "First")).await;
    on_turn(&world.llm, 1, create("call_b", "Second")).await;
    // The fifth step's first answer never comes: the worker is killed while it waits.
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(ToolResults(2))
        .respond_with(answer("too late").set_delay(Duration::from_secs(120)))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&world.llm)
        .await;
    on_turn(&world.llm, 2, answer("Both created.")).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;

    let env = [
        ("DATABASE_URL", world.app.database.url.as_str()),
        ("ZOARK_ENV", "development"),
        ("ZOARK_WORKER_QUEUES", "agents=2"),
        ("ZOARK_WORKER_HEARTBEAT_SECS", "1"),
        ("ZOARK_WORKER_RESCUE_AFTER_SECS", "3"),
    ];
    let mut first = zoark_tests::process::start("zoark-worker", &[], &env);
    first.wait_for_line("job engine started", Duration::from_secs(20));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while chat_requests(&world.llm).await.len() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not reach its fifth step"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "running");
    assert_eq!(
        kinds(&body),
        [
            ("llm_call".into(), "succeeded".into()),
            ("tool_call".into(), "succeeded".into()),
            ("llm_call".into(), "succeeded".into()),
            ("tool_call".into(), "succeeded".into()),
            ("llm_call".into(), "running".into())
        ]
    );

    // Another worker rescues the job once the first one's lease has lapsed, and finishes.
    let second = zoark_tests::process::start("zoark-worker", &[], &env);
    second.wait_for_line("job engine started", Duration::from_secs(20));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let body = loop {
        let body = get_run(&world, &run).await;
        if body["status"] != "running" {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "not resumed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    drop(second);
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["output"], json!({"answer": "Both created."}));
    assert_eq!(body["steps"].as_array().unwrap().len(), 5, "{body}");
    assert_eq!(
        task_titles(&world).await,
        ["First", "Second"],
        "no tool effect repeated"
    );
    let turns: Vec<usize> = chat_requests(&world.llm)
        .await
        .iter()
        .map(|r| {
            r["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["role"] == "tool")
                .count()
        })
        .collect();
    assert_eq!(
        turns,
        [0, 1, 2, 2],
        "the stored answers were not asked again; only the unanswered one was"
    );
}

#[tokio::test]
async fn runs_and_activity_past_their_retention_are_pruned_and_unfinished_runs_stay() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &[], json!({})).await;
    let organization_id = world.admin.organization_id;
    for (status, finished_days_ago) in [
        ("succeeded", Some(91)),
        ("failed", Some(89)),
        ("running", None),
    ] {
        sqlx::query(
            "INSERT INTO agent_runs (organization_id, agent_id, trigger, status, started_at, finished_at)
             VALUES ($1, $2::uuid, 'manual', $3, now(), now() - make_interval(days => $4))",
        )
        .bind(organization_id)
        .bind(&agent)
        .bind(status)
        .bind(finished_days_ago)
        .execute(&world.app.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO agent_activity (organization_id, action, status, summary, created_at)
         VALUES ($1, 'custom', 'success', 'old', now() - interval '91 days'),
                ($1, 'custom', 'success', 'recent', now() - interval '1 day')",
    )
    .bind(organization_id)
    .execute(&world.app.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO inbound_emails (organization_id, subject, raw, received_at)
         VALUES ($1, 'old', 'Subject: old', now() - interval '91 days'),
                ($1, 'recent', 'Subject: recent', now() - interval '1 day')",
    )
    .bind(organization_id)
    .execute(&world.app.pool)
    .await
    .unwrap();
    let mut conn = world.app.pool.acquire().await.unwrap();
    zoark_jobs::enqueue(
        &mut conn,
        &zoark_jobs::maintenance::PruneJobs {},
        zoark_jobs::Opts::platform(),
    )
    .await
    .unwrap();
    drop(conn);
    drain(&world).await;
    let left: Vec<String> = sqlx::query_scalar("SELECT status FROM agent_runs ORDER BY status")
        .fetch_all(&world.app.pool)
        .await
        .unwrap();
    assert_eq!(left, ["failed", "running"]);
    let summaries: Vec<String> = sqlx::query_scalar("SELECT summary FROM agent_activity")
        .fetch_all(&world.app.pool)
        .await
        .unwrap();
    assert_eq!(summaries, ["recent"]);
    let messages: Vec<String> = sqlx::query_scalar("SELECT subject FROM inbound_emails")
        .fetch_all(&world.app.pool)
        .await
        .unwrap();
    assert_eq!(
        messages,
        ["recent"],
        "raw inbound messages go with the retention"
    );
}

#[tokio::test]
async fn two_runs_racing_for_the_last_of_the_monthly_budget_one_asks_and_one_stops_before_asking() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &[], json!({})).await;
    // One step's estimate (its request's tokens and a full 1,024-token answer at 0.15/0.60 USD
    // per million) is about 630 millionths: room for one, not two.
    let (status, body) = call(
        &world.app,
        Method::PATCH,
        "/api/v1/organization",
        &world.admin.access_token,
        Some(json!({"settings": {"llm_monthly_budget_micros": 1000}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["settings"]["llm_monthly_budget_micros"], 1000);
    on_turn(
        &world.llm,
        0,
        answer("Done.").set_delay(Duration::from_millis(1500)),
    )
    .await;
    let first = start_run(&world, &world.admin, &agent, json!({"n": 1})).await;
    let second = start_run(&world, &world.admin, &agent, json!({"n": 2})).await;
    drain(&world).await;

    let mut statuses = Vec::new();
    for run in [&first, &second] {
        let body = get_run(&world, run).await;
        statuses.push(body["status"].as_str().unwrap().to_owned());
        if body["status"] == "budget_exhausted" {
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains("monthly LLM budget of $0.001000 is spent"),
                "{error}"
            );
            assert_eq!(
                body["steps"],
                json!([]),
                "stopped before a step, not in one"
            );
        }
    }
    statuses.sort();
    assert_eq!(statuses, ["budget_exhausted", "succeeded"]);
    assert_eq!(
        chat_requests(&world.llm).await.len(),
        1,
        "only one run asked"
    );
    let (reserved, spent): (i64, i64) =
        sqlx::query_as("SELECT reserved_micros, spent_micros FROM llm_budget_months")
            .fetch_one(&world.app.pool)
            .await
            .unwrap();
    assert_eq!(
        (reserved, spent),
        (0, 27),
        "the reservation became the actual cost"
    );
    let exhausted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agent_activity WHERE action = 'budget_exhausted' AND status = 'failed'",
    )
    .fetch_one(&world.app.pool)
    .await
    .unwrap();
    assert_eq!(exhausted, 1);

    // With the budget lifted, runs ask again.
    call(
        &world.app,
        Method::PATCH,
        "/api/v1/organization",
        &world.admin.access_token,
        Some(json!({"settings": {"llm_monthly_budget_micros": null}})),
    )
    .await;
    let third = start_run(&world, &world.admin, &agent, json!({"n": 3})).await;
    drain(&world).await;
    assert_eq!(get_run(&world, &third).await["status"], "succeeded");
}

#[tokio::test]
async fn the_event_stream_carries_typed_run_and_step_changes_and_the_activity_feed_pages() {
    let world = world().await;
    let agent = agent(&world, &world.admin, &[], json!({})).await;
    let viewer = fixtures::member(
        &world.app,
        world.admin.organization_id,
        "viewer@example.com",
        Role::Viewer,
    )
    .await;
    let mut socket = zoark_tests::event_socket(&world.app, &world.admin.access_token).await;
    let mut viewers = zoark_tests::event_socket(&world.app, &viewer.access_token).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    on_turn(&world.llm, 0, answer("Done.")).await;
    let run = start_run(&world, &world.admin, &agent, json!({})).await;
    drain(&world).await;

    let mut seen = Vec::new();
    while !seen.contains(&("agent_run".to_owned(), "succeeded".to_owned())) {
        let msg = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("an event within 5 s")
            .unwrap()
            .unwrap();
        let event: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        let kind = event["type"].as_str().unwrap().to_owned();
        if kind == "job" {
            assert_eq!(event["kind"], "agents.run");
            continue;
        }
        if kind == "agent_run" {
            assert_eq!(event["id"], run);
        } else {
            assert_eq!(
                (event["run_id"].as_str(), event["kind"].as_str()),
                (Some(run.as_str()), Some("llm_call"))
            );
        }
        seen.push((kind, event["status"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        seen,
        [
            ("agent_run".to_owned(), "queued".to_owned()),
            ("agent_run".to_owned(), "running".to_owned()),
            ("agent_step".to_owned(), "running".to_owned()),
            ("agent_step".to_owned(), "succeeded".to_owned()),
            ("agent_run".to_owned(), "succeeded".to_owned())
        ]
    );
    // A viewer reads jobs, not agents.
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(Duration::from_millis(500), viewers.next()).await
    {
        let event: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        assert_eq!(event["type"], "job", "a viewer received {event}");
    }

    // The activity feed, filtered and paged.
    let token = world.admin.access_token.as_str();
    for n in 0..3 {
        sqlx::query(
            "INSERT INTO agent_activity (organization_id, agent_id, action, status, summary)
             VALUES ($1, $2::uuid, 'custom', 'success', $3)",
        )
        .bind(world.admin.organization_id)
        .bind(&agent)
        .bind(format!("note {n}"))
        .execute(&world.app.pool)
        .await
        .unwrap();
    }
    let (status, page) = call(
        &world.app,
        Method::GET,
        &format!("/api/v1/agent-activity?agent_id={agent}&action=custom&limit=2"),
        token,
        None,
    )
    .await;
    assert_eq!(status, 200, "{page}");
    let summaries = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["summary"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(summaries(&page), ["note 2", "note 1"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = call(
        &world.app,
        Method::GET,
        &format!("/api/v1/agent-activity?agent_id={agent}&action=custom&limit=2&cursor={cursor}"),
        token,
        None,
    )
    .await;
    assert_eq!(summaries(&next), ["note 0"]);
    assert!(next["next_cursor"].is_null());
    let (_, finished) = call(
        &world.app,
        Method::GET,
        &format!("/api/v1/agent-activity?run_id={run}"),
        token,
        None,
    )
    .await;
    assert_eq!(finished["items"][0]["action"], "run_finished");
    assert_eq!(finished["items"][0]["status"], "success");
    let (status, _) = call(
        &world.app,
        Method::GET,
        "/api/v1/agent-activity",
        &viewer.access_token,
        None,
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_task_monitor_alerts_assignees_and_leads_once_a_day_with_an_llm_summary_or_a_template()
{
    let world = world().await;
    let org = world.admin.organization_id;
    let lead = fixtures::member(&world.app, org, "lead@example.com", Role::Lead).await;
    let pool = &world.app.pool;
    let member: Uuid = sqlx::query_scalar(
        "INSERT INTO team_members (organization_id, name, email) VALUES ($1, 'Ada', 'ada@example.com')
         RETURNING id",
    )
    .bind(org)
    .fetch_one(pool)
    .await
    .unwrap();
    let task = |title: &'static str, idle_hours: i32| async move {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO tasks (organization_id, project_id, title, status, position, last_activity_at)
             VALUES ($1, $2, $3, 'active', 1, now() - make_interval(hours => $4)) RETURNING id",
        )
        .bind(org)
        .bind(world.project)
        .bind(title)
        .bind(idle_hours)
        .fetch_one(pool)
        .await
        .unwrap();
        id
    };
    let stuck = task("Sign the lease", 72).await;
    task("Fresh work", 1).await;
    sqlx::query("INSERT INTO task_assignments (organization_id, task_id, team_member_id) VALUES ($1, $2, $3)")
        .bind(org)
        .bind(stuck)
        .bind(member)
        .execute(pool)
        .await
        .unwrap();
    let monitor: String = sqlx::query_scalar(
        "SELECT id::text FROM agents WHERE organization_id = $1 AND kind = 'task_monitor'",
    )
    .bind(org)
    .fetch_one(pool)
    .await
    .unwrap();
    on_turn(
        &world.llm,
        0,
        answer(r#"{"summary": "Waiting on the landlord since Monday.", "next_step": "Call the landlord."}"#),
    )
    .await;
    let run = start_run(&world, &world.admin, &monitor, json!({})).await;
    drain(&world).await;

    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["output"]["alerted_tasks"], json!([stuck]));
    assert_eq!(body["output"]["summaries"], "llm");
    assert_eq!(
        kinds(&body),
        [
            ("llm_call".into(), "succeeded".into()),
            ("email".into(), "succeeded".into())
        ]
    );
    assert_eq!(
        body["steps"][0]["request"]["metadata"]["task_id"],
        stuck.to_string()
    );
    let request = &chat_requests(&world.llm).await[0];
    assert_eq!(
        request["response_format"]["json_schema"]["name"],
        "task_summary"
    );
    // The key stays with the step: OpenAI refuses `metadata` without `store: true`.
    assert!(request.get("metadata").is_none(), "{request}");
    assert!(
        request["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Sign the lease")
    );
    let recipients = || async {
        let mut to: Vec<String> = sqlx::query_scalar(
            "SELECT args->>'to' FROM jobs WHERE kind = 'email.send_system' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        to.sort();
        to
    };
    assert_eq!(recipients().await, ["ada@example.com", lead.email.as_str()]);
    let alerts: Vec<Value> =
        sqlx::query_scalar("SELECT context FROM agent_activity WHERE action = 'task_stuck_alert'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["task_id"], stuck.to_string());

    // Once a day per task: a second run alerts nobody.
    let again = start_run(&world, &world.admin, &monitor, json!({})).await;
    drain(&world).await;
    let body = get_run(&world, &again).await;
    assert_eq!(body["output"]["alerted_tasks"], json!([]), "{body}");
    assert_eq!(recipients().await.len(), 2);

    // A day later, without an LLM: the template, and the run says so.
    sqlx::query("UPDATE agent_activity SET created_at = now() - interval '25 hours'")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM llm_credentials")
        .execute(pool)
        .await
        .unwrap();
    let templated = start_run(&world, &world.admin, &monitor, json!({})).await;
    drain(&world).await;
    let body = get_run(&world, &templated).await;
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["output"]["summaries"], "template");
    assert!(
        body["output"]["note"]
            .as_str()
            .unwrap()
            .contains("no LLM provider")
    );
    assert_eq!(kinds(&body), [("email".into(), "succeeded".into())]);
    assert!(
        body["steps"][0]["response"]["summary"]
            .as_str()
            .unwrap()
            .contains("No activity for 3 days"),
        "{body}"
    );
    assert_eq!(recipients().await.len(), 4);
    assert_eq!(
        chat_requests(&world.llm).await.len(),
        1,
        "no LLM asked without a provider"
    );
}

#[tokio::test]
async fn the_task_escalator_climbs_one_role_per_day_for_critical_stuck_tasks_and_stops_at_admins() {
    let world = world().await;
    let org = world.admin.organization_id;
    let pool = &world.app.pool;
    let lead = fixtures::member(&world.app, org, "lead@example.com", Role::Lead).await;
    let manager = fixtures::member(&world.app, org, "manager@example.com", Role::Manager).await;
    let task = |title: &'static str, idle_hours: i32, health: &'static str| async move {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO tasks (organization_id, project_id, title, status, position, health_status,
                                last_activity_at)
             VALUES ($1, $2, $3, 'active', 1, $5, now() - make_interval(hours => $4)) RETURNING id",
        )
        .bind(org)
        .bind(world.project)
        .bind(title)
        .bind(idle_hours)
        .bind(health)
        .fetch_one(pool)
        .await
        .unwrap();
        id
    };
    let critical = task("Pour the foundations", 72, "critical").await;
    task("Order paint", 72, "at_risk").await;
    task("Fresh and critical", 1, "critical").await;
    on_turn(
        &world.llm,
        0,
        answer(r#"{"summary": "Blocked on the concrete delivery.", "next_step": "Call the supplier."}"#),
    )
    .await;
    let recipients = || async {
        let to: Vec<String> = sqlx::query_scalar(
            "SELECT args->>'to' FROM jobs WHERE kind = 'email.send_system' ORDER BY 1",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        to
    };
    let day_passes = || async {
        sqlx::query("UPDATE agent_activity SET created_at = created_at - interval '25 hours'")
            .execute(pool)
            .await
            .unwrap();
    };

    let mut reached = Vec::new();
    for (level, to) in [
        ("lead", lead.email.clone()),
        ("manager", manager.email.clone()),
        ("admin", world.admin.email.clone()),
    ] {
        let run = zoark_tests::agents::tick(&world.app, org, "task_escalator")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(run.status, "succeeded", "{:?}", run.error);
        let output = run.output.unwrap();
        assert_eq!(
            output["escalated"],
            json!([{"task_id": critical, "level": level}]),
            "{output}"
        );
        assert_eq!(output["summaries"], "llm");
        reached.push(to);
        let mut sent = recipients().await;
        sent.sort();
        let mut expected = reached.clone();
        expected.sort();
        assert_eq!(
            sent, expected,
            "one email per level, to that level's holders"
        );
        // Within the day, nothing to do: no run recorded.
        assert!(
            zoark_tests::agents::tick(&world.app, org, "task_escalator")
                .await
                .unwrap()
                .is_none()
        );
        day_passes().await;
    }
    // The admins were the last level: the ladder ends.
    assert!(
        zoark_tests::agents::tick(&world.app, org, "task_escalator")
            .await
            .unwrap()
            .is_none()
    );
    let levels: Vec<String> = sqlx::query_scalar(
        "SELECT context->>'level' FROM agent_activity WHERE action = 'task_escalated'
         ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(levels, ["lead", "manager", "admin"]);
    let asked = chat_requests(&world.llm).await;
    assert_eq!(asked.len(), 3, "one summary per escalation");
    assert!(
        asked[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("Pour the foundations")
    );
}

#[tokio::test]
async fn the_document_indexer_takes_up_documents_left_waiting_and_records_no_run_without_any() {
    // The indexing queue is served: the jobs the indexer enqueues run (and fail: the test's
    // documents have no bytes in storage), so the drain ends.
    let app = TestApp::builder()
        .env("ZOARK_WORKER_QUEUES", "agents=2,maintenance=1,indexing=1")
        .spawn()
        .await;
    let admin = fixtures::register(&app, "admin@example.com", "Apollo Inc").await;
    let org = admin.organization_id;
    let pool = &app.pool;
    assert!(
        zoark_tests::agents::tick(&app, org, "document_indexer")
            .await
            .unwrap()
            .is_none(),
        "nothing waiting: no run"
    );
    let document = |title: &'static str, waiting_minutes: i32| async move {
        let id: Uuid = sqlx::query_scalar(
            "WITH f AS (INSERT INTO stored_files (organization_id, storage_key, filename,
                                                  content_type, size_bytes, sha256)
                        VALUES ($1, gen_random_uuid()::text, 'a.txt', 'text/plain', 1,
                                sha256(gen_random_uuid()::text::bytea))
                        RETURNING id)
             INSERT INTO rag_documents (organization_id, title, source_type, file_id, content_type,
                                        content_sha256, updated_at)
             SELECT $1, $2, 'knowledge', f.id, 'text/plain', sha256(f.id::text::bytea),
                    now() - make_interval(mins => $3)
             FROM f RETURNING id",
        )
        .bind(org)
        .bind(title)
        .bind(waiting_minutes)
        .fetch_one(pool)
        .await
        .unwrap();
        id
    };
    // Its job was lost an hour ago; the other was just uploaded (its own job is on the way).
    let lost = document("Lease", 60).await;
    document("Fresh upload", 0).await;
    let run = zoark_tests::agents::tick(&app, org, "document_indexer")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.status, "succeeded", "{:?}", run.error);
    assert_eq!(run.output.unwrap()["documents_queued"], json!([lost]));
    let jobs: Vec<Value> =
        sqlx::query_scalar("SELECT args FROM jobs WHERE kind = 'rag.index_document'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(jobs, [json!({"document_id": lost})]);
    let entries: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM agent_activity WHERE action = 'document_indexed' AND agent_id IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(entries, 1);
}

/// A knowledge base document about the north gate, uploaded and indexed.
async fn gate_document(world: &World) -> Value {
    let form = zoark_tests::multipart::Form::new().file(
        "file",
        "gate.md",
        "text/markdown",
        b"# North gate\n\nThe north gate hinge is model HX-4; the spare is in shed B.",
    );
    let response = world
        .app
        .upload(
            Method::POST,
            "/api/v1/knowledge",
            Some(world.admin.access_token.as_str()),
            &form,
            None,
        )
        .await;
    assert_eq!(response.status(), 201);
    let document: Value = response.json().await.unwrap();
    drain(world).await;
    document
}

#[tokio::test]
async fn an_agent_searches_the_documents_it_may_read_and_emails_a_team_member_once() {
    let world = world_with_queues("agents=2,maintenance=1,email=2,indexing=1").await;
    let org = world.admin.organization_id;
    let document = gate_document(&world).await;
    let ada: Uuid = sqlx::query_scalar(
        "INSERT INTO team_members (organization_id, name, email) VALUES ($1, 'Ada', 'ada@example.com')
         RETURNING id",
    )
    .bind(org)
    .fetch_one(&world.app.pool)
    .await
    .unwrap();
    let keeper = agent(
        &world,
        &world.admin,
        &["search_documents", "email_team_member"],
        json!({}),
    )
    .await;
    on_turn(
        &world.llm,
        0,
        tool_call(
            "c1",
            "search_documents",
            json!({"query": "north gate hinge spare"}),
        ),
    )
    .await;
    on_turn(
        &world.llm,
        1,
        tool_call(
            "c2",
            "email_team_member",
            json!({"team_member_id": ada, "subject": "Gate spare",
                   "message": "The HX-4 spare hinge is in shed B."}),
        ),
    )
    .await;
    on_turn(&world.llm, 2, answer("Ada knows where the spare is.")).await;
    let run = start_run(
        &world,
        &world.admin,
        &keeper,
        json!({"ask": "Tell Ada about the gate."}),
    )
    .await;
    drain(&world).await;
    let body = get_run(&world, &run).await;
    assert_eq!(body["status"], "succeeded", "{body}");
    let passages = &body["steps"][1]["response"]["passages"];
    assert_eq!(passages[0]["document_id"], document["id"], "{body}");
    assert!(
        passages[0]["passage"].as_str().unwrap().contains("HX-4"),
        "{passages}"
    );
    assert_eq!(passages[0]["chunk"], 0);
    assert_eq!(body["steps"][3]["response"]["sent_to"], ada.to_string());
    let sent: Vec<(String, Value)> =
        sqlx::query_as("SELECT args->>'to', args FROM jobs WHERE kind = 'email.send_system'")
            .fetch_all(&world.app.pool)
            .await
            .unwrap();
    assert_eq!(sent.len(), 1, "one email, to Ada");
    assert_eq!(sent[0].0, "ada@example.com");
    // The LLM read the passage it was given.
    let asked = chat_requests(&world.llm).await;
    assert!(asked[1]["messages"].to_string().contains("HX-4"));
}

/// Posts `question` to `/ask` with `prefer` (if any).
async fn ask(world: &World, by: &Account, body: Value, prefer: Option<&str>) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .post(world.app.url("/api/v1/ask"))
        .bearer_auth(&by.access_token)
        .json(&body);
    if let Some(prefer) = prefer {
        request = request.header("Prefer", prefer);
    }
    request.send().await.unwrap()
}

/// Waits until a question answerer's run is recorded (the API commits it before waiting).
async fn question_recorded(world: &World, runs: i64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let recorded: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM agent_runs r JOIN agents a ON a.id = r.agent_id
             WHERE a.kind = 'question_answerer'",
        )
        .fetch_one(&world.app.pool)
        .await
        .unwrap();
        if recorded >= runs {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no question recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn asking_answers_from_the_documents_citing_document_and_chunk_metered_as_an_llm_step() {
    let world = world_with_queues("agents=2,maintenance=1,indexing=1").await;
    let document = gate_document(&world).await;
    let reply = json!({
        "answer": "The spare HX-4 hinge is in shed B.",
        "claims": [
            {"text": "The north gate hinge is model HX-4.", "passages": [1]},
            {"text": "Gates are painted green.", "passages": [7]},
        ],
    });
    on_turn(&world.llm, 0, answer(&reply.to_string())).await;

    // The request waits for the run, which a worker takes meanwhile.
    let asking = {
        let world_url = world.app.url("/api/v1/ask");
        let token = world.admin.access_token.clone();
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(world_url)
                .bearer_auth(token)
                .header("Prefer", "wait=30")
                .json(&json!({"question": "Where is the spare hinge of the north gate?"}))
                .send()
                .await
                .unwrap()
        })
    };
    question_recorded(&world, 1).await;
    drain(&world).await;
    let response = asking.await.unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "succeeded", "{body}");
    assert_eq!(body["answer"], "The spare HX-4 hinge is in shed B.");
    // The claim citing a passage the search never returned is left out.
    assert_eq!(body["claims"].as_array().unwrap().len(), 1, "{body}");
    let source = &body["claims"][0]["sources"][0];
    assert_eq!(source["document_id"], document["id"]);
    assert_eq!(source["source_type"], "knowledge");
    assert_eq!(source["citation"]["chunk_ordinal"], 0);
    assert_eq!(
        (body["tokens_in"].as_i64(), body["tokens_out"].as_i64()),
        (Some(100), Some(20))
    );
    assert!(body["cost_micros"].as_i64().unwrap() > 0, "{body}");

    // The LLM read the chunk's text and was held to the answer's schema.
    let requests = chat_requests(&world.llm).await;
    assert_eq!(requests.len(), 1);
    assert!(
        requests[0]["messages"][1]["content"]
            .as_str()
            .unwrap()
            .contains("shed B")
    );
    assert_eq!(
        requests[0]["response_format"]["json_schema"]["name"],
        "answer"
    );
    let run = get_run(&world, body["run_id"].as_str().unwrap()).await;
    assert_eq!(
        kinds(&run),
        [
            ("tool_call".into(), "succeeded".into()),
            ("llm_call".into(), "succeeded".into())
        ]
    );
    assert_eq!(run["trigger"], "manual");

    // Over the month's budget: the run stops before asking, and says why.
    sqlx::query("UPDATE organizations SET llm_monthly_budget_micros = 1 WHERE id = $1")
        .bind(world.admin.organization_id)
        .execute(&world.app.pool)
        .await
        .unwrap();
    let response = ask(
        &world,
        &world.admin,
        json!({"question": "Which hinge does the north gate have?"}),
        Some("respond-async"),
    )
    .await;
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    drain(&world).await;
    let run = get_run(&world, body["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "budget_exhausted", "{run}");
    assert_eq!(chat_requests(&world.llm).await.len(), 1);
}

#[tokio::test]
async fn a_question_nothing_matches_is_answered_without_the_llm_and_bad_ones_are_refused() {
    let world = world_with_queues("agents=2,maintenance=1,indexing=1").await;
    let response = ask(
        &world,
        &world.admin,
        json!({"question": "Where is the spare hinge?", "source_type": "knowledge"}),
        Some("respond-async"),
    )
    .await;
    assert_eq!(response.status(), 202);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "queued");
    assert_eq!(
        location,
        format!("/api/v1/agent-runs/{}", body["run_id"].as_str().unwrap())
    );
    drain(&world).await;
    let run = get_run(&world, body["run_id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(
        run["output"]["answer"],
        "Nothing in the documents you may read matches the question."
    );
    assert!(chat_requests(&world.llm).await.is_empty());

    // Nothing waits on a run no worker takes: after the wait, 202.
    let response = ask(
        &world,
        &world.admin,
        json!({"question": "Anything?"}),
        Some("wait=1"),
    )
    .await;
    assert_eq!(response.status(), 202);

    for (bad, field) in [
        (json!({"question": "  "}), "question"),
        (json!({"question": "x".repeat(1001)}), "question"),
        (
            json!({"question": "Where?", "language": "klingon"}),
            "language",
        ),
    ] {
        let response = ask(&world, &world.admin, bad, None).await;
        assert_eq!(response.status(), 400);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let viewer = fixtures::member(
        &world.app,
        world.admin.organization_id,
        "viewer@example.com",
        Role::Viewer,
    )
    .await;
    let response = ask(&world, &viewer, json!({"question": "Where?"}), None).await;
    assert_eq!(response.status(), 403);
    let disabled: i32 = sqlx::query_scalar(
        "UPDATE agents SET enabled = false WHERE kind = 'question_answerer' RETURNING 1",
    )
    .fetch_one(&world.app.pool)
    .await
    .unwrap();
    assert_eq!(disabled, 1);
    let response = ask(&world, &world.admin, json!({"question": "Where?"}), None).await;
    assert_eq!(response.status(), 409);
}
