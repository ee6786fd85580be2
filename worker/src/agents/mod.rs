//! Agent runs, step by step. A run's state is its recorded steps: [`Conversation::rebuild`]
//! reads them back (the messages sent with the last stored LLM answer, that answer, and the
//! tool results after it), so a retried or rescued run continues at its first unfinished step
//! and never asks the LLM again for an answer it stored nor repeats a tool's effect (a tool's
//! effect and its step's result commit together: [`tools`]).

pub mod answerer;
pub mod broadcasts;
pub mod coordinator;
pub mod escalator;
pub mod indexer;
pub mod monitor;
pub mod notify;
pub mod nudger;
pub mod parser;
pub mod timesheets;
pub mod tools;

use std::{collections::VecDeque, time::Duration};

use anyhow::Context as _;
use secrecy::ExposeSecret as _;
use serde_json::{Value, json};
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{
    agents::{AgentKind, StepKind, StepStatus},
    crypto,
    db::{
        agent_runs::{self, Run, Step, StepResult},
        agents::Agent,
        llm_credentials,
    },
};
use zoark_llm::{Chat, Endpoint, ProviderError, types::chat::CreateChatCompletionRequest};

use crate::{WorkerContext, engine::JobError};

/// The position of a run's last finished step (0 before any): a built-in agent's next step
/// follows it.
pub(crate) fn last_finished(steps: &[Step]) -> i32 {
    steps
        .iter()
        .filter(|s| s.status != StepStatus::Running)
        .map(|s| s.position)
        .max()
        .unwrap_or(0)
}

/// The id a built-in run's input names under `key`; the run fails saying so without one.
pub(crate) fn input_id(run: &Run, key: &str) -> Result<Uuid, End> {
    run.input
        .get(key)
        .and_then(Value::as_str)
        .and_then(|id| id.parse::<Uuid>().ok())
        .ok_or_else(|| End::Failed(format!("the run's input names no {key}")))
}

/// A built-in run taken up: its LLM provider (if any), its recorded steps (stored answers to
/// reuse) and the position of its last finished step.
pub(crate) struct Resumed {
    pub llm: Option<Llm>,
    pub steps: Vec<Step>,
    pub position: i32,
}

impl Resumed {
    /// # Errors
    /// Database errors, or a provider key that does not open.
    pub(crate) async fn load(
        ctx: &WorkerContext,
        conn: &mut PgConnection,
        run: &Run,
        def: &Agent,
    ) -> Result<Self, JobError> {
        let steps = agent_runs::steps_of(conn, run.organization_id, run.id).await?;
        let llm = llm_for(ctx, conn, run.organization_id, def).await?;
        Ok(Self {
            llm,
            position: last_finished(&steps),
            steps,
        })
    }
}

/// [`last_finished`], read from the database.
///
/// # Errors
/// Database errors.
pub(crate) async fn resume_position(ctx: &WorkerContext, run: &Run) -> Result<i32, JobError> {
    let mut conn = ctx.pool.acquire().await?;
    let steps = agent_runs::steps_of(&mut conn, run.organization_id, run.id).await?;
    Ok(last_finished(&steps))
}

/// The answer (assistant message) of a run's succeeded LLM step whose request carried
/// `metadata.<key> = value`: what a built-in agent asked about one item before it was resumed.
pub(crate) fn stored_answer<'s>(steps: &'s [Step], key: &str, value: &str) -> Option<&'s Value> {
    steps
        .iter()
        .filter(|s| s.kind == StepKind::LlmCall && s.status == StepStatus::Succeeded)
        .find(|s| {
            s.request
                .as_ref()
                .and_then(|r| r.get("metadata"))
                .and_then(|m| m.get(key))
                .and_then(Value::as_str)
                == Some(value)
        })
        .and_then(|s| s.response.as_ref()?.get("message"))
}

/// Whether a schedule's tick of `def` has anything to do: a built-in agent records no run for
/// an organization with nothing to do (custom agents always run).
///
/// # Errors
/// Database errors.
pub async fn pending(
    conn: &mut PgConnection,
    organization_id: Uuid,
    def: &Agent,
) -> sqlx::Result<bool> {
    match def.kind {
        AgentKind::TaskMonitor => monitor::pending(conn, organization_id, def).await,
        AgentKind::TaskEscalator => escalator::pending(conn, organization_id, def).await,
        AgentKind::ApprovalNudger => nudger::pending(conn, organization_id).await,
        AgentKind::TeamCoordinator => coordinator::pending(conn, organization_id).await,
        AgentKind::TimesheetReminder => timesheets::pending(conn, organization_id).await,
        AgentKind::DocumentIndexer => indexer::pending(conn, organization_id).await,
        AgentKind::BroadcastSender
        | AgentKind::EmailParser
        | AgentKind::QuestionAnswerer
        | AgentKind::Custom => Ok(true),
    }
}

/// Takes a run of `def` to its end: the custom agent's conversation, or the built-in kind's
/// work.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn take(ctx: &WorkerContext, run: &Run, def: &Agent) -> Result<End, JobError> {
    match def.kind {
        AgentKind::Custom => take_steps(ctx, run, def).await,
        AgentKind::TaskMonitor => monitor::run(ctx, run, def).await,
        AgentKind::TaskEscalator => escalator::run(ctx, run, def).await,
        AgentKind::ApprovalNudger => nudger::run(ctx, run).await,
        AgentKind::TeamCoordinator => coordinator::run(ctx, run).await,
        AgentKind::TimesheetReminder => timesheets::run(ctx, run, def).await,
        AgentKind::DocumentIndexer => indexer::run(ctx, run).await,
        AgentKind::BroadcastSender => broadcasts::run(ctx, run).await,
        AgentKind::EmailParser => parser::run(ctx, run, def).await,
        AgentKind::QuestionAnswerer => answerer::run(ctx, run, def).await,
    }
}

/// How a run ends.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Succeeded(Value),
    Failed(String),
    Cancelled,
    /// An LLM step did not fit in the organization's monthly budget; nothing was asked.
    OverBudget(String),
}

/// The answer's length reserved when the agent sets no `max_tokens`.
const DEFAULT_ANSWER_TOKENS: u32 = 1024;

/// What an LLM step may cost at most, reserved from the monthly budget before it is asked: the
/// request's tokens (about four bytes each) and a full answer.
pub(crate) fn estimate(ctx: &WorkerContext, def: &Agent, model: &str, request: &Value) -> i64 {
    let tokens_in = u32::try_from(request.to_string().len() / 4 + 1).unwrap_or(u32::MAX);
    let tokens_out = def
        .max_tokens
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or(DEFAULT_ANSWER_TOKENS);
    ctx.settings
        .agents
        .prices
        .cost_micros(model, tokens_in, tokens_out)
}

/// How long a rate-limited step waits when the provider names no `Retry-After`.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(30);

/// The LLM a run calls: its chat API and the model.
pub struct Llm {
    chat: Chat,
    pub model: String,
}

/// The agent's provider (its own credential, else the organization's oldest, else the
/// platform's when configured) and model (the agent's, else the provider's default). `None`
/// when there is none.
///
/// # Errors
/// Database errors, or a key that does not open with `ZOARK_ENCRYPTION_KEY`.
pub async fn llm_for(
    ctx: &WorkerContext,
    conn: &mut PgConnection,
    organization_id: Uuid,
    def: &Agent,
) -> anyhow::Result<Option<Llm>> {
    let timeout = ctx.settings.agents.llm_timeout;
    let sealed = llm_credentials::for_calling(conn, organization_id, def.llm_credential_id).await?;
    let (endpoint, default_model, http) = match sealed {
        Some(sealed) => {
            let binding =
                crypto::Binding::new(llm_credentials::API_KEY, organization_id, sealed.id);
            let key = crypto::open_bound(
                &ctx.settings.encryption_key,
                &sealed.sealed_api_key,
                &binding,
            )
            .context("opening the LLM provider's key")?;
            // An address literal is connected to without resolving: check it here; names are
            // checked by the tenant client's resolver.
            let url: url::Url = sealed
                .base_url
                .parse()
                .context("the LLM provider's base URL")?;
            ctx.settings
                .outbound
                .check_url(&url)
                .map_err(|e| anyhow::anyhow!("the LLM provider's base URL {}", e.0))?;
            let endpoint = Endpoint {
                base_url: sealed.base_url,
                api_key: Some(String::from_utf8(key).context("the LLM provider's key")?),
                timeout,
            };
            (endpoint, sealed.default_model, ctx.tenant_http.clone())
        }
        None if ctx.settings.agents.platform_default => {
            let platform = &ctx.settings.llm;
            let endpoint = Endpoint {
                base_url: platform.base_url.to_string(),
                api_key: platform
                    .api_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_owned()),
                timeout,
            };
            (endpoint, platform.model.clone(), ctx.http.clone())
        }
        None => return Ok(None),
    };
    Ok(Some(Llm {
        chat: Chat::new(&endpoint, http),
        model: def.model.clone().unwrap_or(default_model),
    }))
}

/// A tool call the LLM asked for and no step has answered yet.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// Where a run stands, read from its finished steps.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// The messages the next LLM call sends.
    pub messages: Vec<Value>,
    /// Tool calls of the last LLM answer not answered yet, in order.
    pub pending: VecDeque<ToolCall>,
    /// The last LLM answer's text, when it asked for no tool: the run's result.
    pub answer: Option<String>,
    /// LLM calls answered so far.
    pub llm_calls: i32,
    /// The last finished step's position.
    pub position: i32,
}

impl Conversation {
    /// The start of a run: the agent's instructions and goal, then the run's input.
    fn start(def: &Agent, run: &Run) -> Self {
        let mut system = String::new();
        if let Some(role) = &def.role {
            system.push_str(&format!("You are {role}.\n\n"));
        }
        if let Some(instructions) = &def.instructions {
            system.push_str(instructions);
            system.push_str("\n\n");
        }
        if let Some(goal) = &def.goal {
            system.push_str(&format!("Your goal: {goal}\n"));
        }
        Self {
            messages: vec![
                json!({"role": "system", "content": system.trim_end()}),
                json!({"role": "user", "content": run.input.to_string()}),
            ],
            ..Self::default()
        }
    }

    /// Replays the finished steps of a run.
    ///
    /// # Errors
    /// A stored step that does not read back (written by another version).
    pub fn rebuild(def: &Agent, run: &Run, steps: &[Step]) -> anyhow::Result<Self> {
        let mut state = Self::start(def, run);
        for step in steps.iter().filter(|s| s.status != StepStatus::Running) {
            state.position = step.position;
            match step.kind {
                StepKind::LlmCall if step.status == StepStatus::Succeeded => {
                    let messages = step
                        .request
                        .as_ref()
                        .and_then(|r| r.get("messages"))
                        .and_then(Value::as_array)
                        .with_context(|| format!("step {} has no messages", step.position))?;
                    let message = step
                        .response
                        .as_ref()
                        .and_then(|r| r.get("message"))
                        .with_context(|| format!("step {} has no answer", step.position))?;
                    state.messages.clone_from(messages);
                    state.answered(message.clone());
                }
                StepKind::ToolCall => {
                    let id = step
                        .request
                        .as_ref()
                        .and_then(|r| r.get("id"))
                        .and_then(Value::as_str)
                        .with_context(|| format!("step {} names no tool call", step.position))?;
                    let content = tools::content(step.response.as_ref(), step.error.as_deref());
                    state.pending.retain(|c| c.id != id);
                    state.messages.push(tool_message(id, &content));
                }
                _ => {}
            }
        }
        Ok(state)
    }

    /// Takes in an LLM answer (an assistant message).
    fn answered(&mut self, message: Value) {
        self.llm_calls += 1;
        self.pending = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .map(|calls| {
                calls
                    .iter()
                    .filter_map(|c| {
                        Some(ToolCall {
                            id: c.get("id")?.as_str()?.to_owned(),
                            name: c.pointer("/function/name")?.as_str()?.to_owned(),
                            arguments: c
                                .pointer("/function/arguments")
                                .and_then(Value::as_str)
                                .unwrap_or("{}")
                                .to_owned(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        self.answer = if self.pending.is_empty() {
            Some(
                message
                    .get("content")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            )
        } else {
            None
        };
        self.messages.push(message);
    }

    /// The next chat completion request.
    fn request(&self, def: &Agent, model: &str) -> Value {
        let mut request = json!({"model": model, "messages": self.messages});
        let tools: Vec<Value> = tools::allowed(def)
            .map(|tool| {
                json!({"type": "function", "function": {
                    "name": tool.id(),
                    "description": tool.description(),
                    "parameters": tool.parameters(),
                    "strict": true,
                }})
            })
            .collect();
        if !tools.is_empty() {
            request["tools"] = Value::Array(tools);
        }
        if let Some(schema) = def.config.get("output_schema") {
            request["response_format"] = json!({"type": "json_schema", "json_schema": {
                "name": "output", "strict": true, "schema": schema,
            }});
        }
        if let Some(max) = def.max_tokens {
            request["max_completion_tokens"] = json!(max);
        }
        request
    }
}

fn tool_message(id: &str, content: &str) -> Value {
    json!({"role": "tool", "tool_call_id": id, "content": content})
}

/// The run's result: the structured output when the agent has an `output_schema`, else the
/// answer's text.
fn output(def: &Agent, answer: String) -> End {
    if def.config.get("output_schema").is_none() {
        return End::Succeeded(json!({ "answer": answer }));
    }
    match serde_json::from_str::<Value>(&answer) {
        Ok(value) => End::Succeeded(value),
        Err(e) => End::Failed(format!(
            "the LLM's answer is not the JSON its output schema asks for: {e}"
        )),
    }
}

/// Takes a custom agent's steps until the run ends, or an error sends the job back to the queue
/// (a snooze for a rate limit, a retry for an unavailable provider or database).
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn take_steps(ctx: &WorkerContext, run: &Run, def: &Agent) -> Result<End, JobError> {
    let mut conn = ctx.pool.acquire().await?;
    let steps = agent_runs::steps_of(&mut conn, run.organization_id, run.id).await?;
    let mut state = Conversation::rebuild(def, run, &steps).map_err(JobError::Fatal)?;
    let Some(llm) = llm_for(ctx, &mut conn, run.organization_id, def).await? else {
        return Ok(End::Failed(
            "no LLM provider: add one with POST /api/v1/llm-credentials".into(),
        ));
    };
    drop(conn);
    // A cancel asked for is read with each step's first statement: the run stops before it.
    loop {
        state.position += 1;
        if let Some(call) = state.pending.pop_front() {
            let Some(content) = tools::call(ctx, run, def, state.position, &call).await? else {
                return Ok(End::Cancelled);
            };
            state.messages.push(tool_message(&call.id, &content));
            continue;
        }
        if let Some(answer) = state.answer.take() {
            return Ok(output(def, answer));
        }
        if state.llm_calls >= def.max_steps {
            return Ok(End::Failed(format!(
                "reached its limit of {} LLM steps without an answer",
                def.max_steps
            )));
        }
        let request = state.request(def, &llm.model);
        let reserve = estimate(ctx, def, &llm.model, &request);
        match llm_step(ctx, run, &llm, state.position, request, reserve).await? {
            Asked::Answer(message) => state.answered(message),
            Asked::Refused(reason) => return Ok(End::Failed(reason)),
            Asked::OverBudget(reason) => return Ok(End::OverBudget(reason)),
            Asked::Cancelled => return Ok(End::Cancelled),
        }
    }
}

/// What an LLM step came to.
pub(crate) enum Asked {
    /// The assistant message.
    Answer(Value),
    /// The provider refused the request: the run fails with its message.
    Refused(String),
    /// The month's budget has no room for it: nothing was recorded or asked.
    OverBudget(String),
    /// A cancel was asked for: nothing was recorded or asked.
    Cancelled,
}

/// A built-in agent's LLM step: its cost estimated and reserved, the step taken. `Ok(Err(end))`
/// when the run must end (the provider refused, the budget is spent); else the assistant
/// message.
///
/// # Errors
/// [`JobError`]: the job's next move (a snooze for a rate limit, a retry).
pub(crate) async fn llm_answer(
    ctx: &WorkerContext,
    run: &Run,
    def: &Agent,
    llm: &Llm,
    position: i32,
    request: Value,
) -> Result<Result<Value, End>, JobError> {
    let reserve = estimate(ctx, def, &llm.model, &request);
    Ok(
        match llm_step(ctx, run, llm, position, request, reserve).await? {
            Asked::Answer(message) => Ok(message),
            Asked::Refused(reason) => Err(End::Failed(reason)),
            Asked::OverBudget(reason) => Err(End::OverBudget(reason)),
            Asked::Cancelled => Err(End::Cancelled),
        },
    )
}

/// An assistant message's text (empty when it has none).
pub(crate) fn message_text(message: &Value) -> String {
    message
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// One LLM call as a step: its estimated cost reserved and the step recorded with its request,
/// asked, and its answer, tokens and cost stored with the usage records in one transaction.
pub(crate) async fn llm_step(
    ctx: &WorkerContext,
    run: &Run,
    llm: &Llm,
    position: i32,
    request: Value,
    reserve: i64,
) -> Result<Asked, JobError> {
    let mut conn = ctx.pool.acquire().await?;
    let step_id = match agent_runs::begin_llm_step(&mut conn, run, position, &request, reserve)
        .await?
    {
        agent_runs::Begun::Step(id) => id,
        agent_runs::Begun::Cancelled => return Ok(Asked::Cancelled),
        agent_runs::Begun::OverBudget { budget, used } => {
            let usd = |micros: i64| format!("${}.{:06}", micros / 1_000_000, micros % 1_000_000);
            return Ok(Asked::OverBudget(format!(
                "the organization's monthly LLM budget of {} is spent: {} used, and the next \
                     step may cost up to {}",
                usd(budget),
                usd(used),
                usd(reserve)
            )));
        }
    };
    drop(conn);
    let mut typed: CreateChatCompletionRequest = serde_json::from_value(request)
        .map_err(|e| JobError::Fatal(anyhow::anyhow!("the chat request does not build: {e}")))?;
    // `metadata` is Zoark's key for the stored answer, kept with the step: OpenAI refuses it
    // without `store: true` (which would keep the conversation on their side), so it is not sent.
    typed.metadata = None;
    let completion = match llm.chat.complete(typed).await {
        Ok(completion) => completion,
        Err(ProviderError::RateLimited { retry_after, .. }) => {
            return Err(JobError::Snooze(retry_after.unwrap_or(RATE_LIMIT_WAIT)));
        }
        Err(ProviderError::Unavailable(reason)) => {
            return Err(JobError::Retry(anyhow::anyhow!(
                "the LLM provider is unavailable: {reason}"
            )));
        }
        Err(refused @ (ProviderError::Rejected(_) | ProviderError::Invalid(_))) => {
            let reason = format!("the LLM provider {refused}");
            let mut conn = ctx.pool.acquire().await?;
            agent_runs::finish_step(&mut conn, run, step_id, &StepResult::failed(reason.clone()))
                .await?;
            return Ok(Asked::Refused(reason));
        }
    };
    let choice = completion
        .response
        .choices
        .first()
        .map(|c| (c.message.clone(), c.finish_reason));
    let Some((message, finish_reason)) = choice else {
        return Ok(Asked::Refused(
            "the LLM provider answered without a choice".into(),
        ));
    };
    let message = serde_json::to_value(&message).map_err(anyhow::Error::from)?;
    // Priced by the model asked for (the answer may name a dated version of it).
    let prices = &ctx.settings.agents.prices;
    let model = &llm.model;
    let cost = (
        prices.cost_micros(model, completion.tokens_in, 0),
        prices.cost_micros(model, 0, completion.tokens_out),
    );
    let tokens = (
        i32::try_from(completion.tokens_in).unwrap_or(i32::MAX),
        i32::try_from(completion.tokens_out).unwrap_or(i32::MAX),
    );
    let result = StepResult {
        tokens_in: tokens.0,
        tokens_out: tokens.1,
        cost_micros: cost.0 + cost.1,
        metered: Some(cost),
        ..StepResult::succeeded(json!({
            "message": message,
            "model": completion.response.model,
            "finish_reason": finish_reason,
        }))
    };
    // One statement: the result, the run's totals, the budget and the usage records.
    let mut conn = ctx.pool.acquire().await?;
    agent_runs::finish_step(&mut conn, run, step_id, &result).await?;
    Ok(Asked::Answer(message))
}
