//! A custom agent's tools: Zoark operations from a fixed registry ([`Tool`]), run with the role
//! the run holds at run time (its agent's creator's, never more than its starter's) through the
//! same queries and permission proofs as the API. A tool outside the agent's list, a role
//! below the tool's permission or bad arguments is a failed step whose error the LLM reads.
//!
//! Each call is a step recorded before its effect, in the transaction its effect and its result
//! commit in, so a run resumed after a crash either finds the result or does it again.

use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;
use zoark_core::{
    access::{
        Actor, Denied, Granted, Permission, Principal, ProvenTenant, ReadKnowledge, ReadProjects,
        WriteTasks,
    },
    agents::{StepKind, Tool},
    db::{
        agent_runs::{self, Run, StepResult},
        agents::Agent,
        knowledge::{self, Language, SearchQuery},
        tasks::{self, Fields, Filter, MoveError, Place},
        team_members, tenant,
    },
};
use zoark_jobs::{
    Opts,
    email::{SystemTemplate, enqueue_system},
};

use zoark_core::knowledge::SourceType;

use super::ToolCall;
use crate::{WorkerContext, engine::JobError};

/// The tools of the agent's list that exist.
pub fn allowed(def: &Agent) -> impl Iterator<Item = Tool> + '_ {
    def.tools.iter().filter_map(|id| Tool::from_id(id))
}

/// What the LLM reads of a tool step: its result, or its error.
pub fn content(response: Option<&Value>, error: Option<&str>) -> String {
    match (response, error) {
        (_, Some(error)) => json!({ "error": error }).to_string(),
        (Some(response), None) => response.to_string(),
        (None, None) => "{}".into(),
    }
}

/// Why a tool did nothing: told to the LLM as the step's error.
struct Refused(String);

impl From<Denied> for Refused {
    fn from(denied: Denied) -> Self {
        Self(format!("refused: {denied}"))
    }
}

/// Runs one tool call as step `position` and returns what the LLM reads of it; `None` when a
/// cancel was asked for (nothing is done).
///
/// # Errors
/// Database errors (the job retries; the step is taken up again).
pub async fn call(
    ctx: &WorkerContext,
    run: &Run,
    def: &Agent,
    position: i32,
    call: &ToolCall,
) -> Result<Option<String>, JobError> {
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
    let request = json!({"id": call.id, "name": call.name, "arguments": arguments});
    // The step row, its effect and its result commit together: a crash before the commit
    // leaves nothing, and the resumed run takes the step again.
    let scope = ProvenTenant {
        organization_id: run.organization_id,
        actor: Some(Actor::Agent {
            user_id: def.created_by.unwrap_or(Uuid::nil()),
            run_id: run.id,
        }),
    };
    let mut tx = tenant::begin(&ctx.pool, &scope).await?;
    let Some(step_id) = agent_runs::begin_step_unless_cancelled(
        &mut tx,
        run,
        position,
        StepKind::ToolCall,
        &request,
    )
    .await?
    else {
        return Ok(None);
    };
    let principal = match def.created_by {
        Some(creator) => {
            agent_runs::acting_role(&mut tx, run.organization_id, creator, run.triggered_by)
                .await?
                .map(|role| run.max_role.map_or(role, |max| role.lesser(max)))
                .map(|role| Principal::agent_run(run.organization_id, role, creator, run.id))
        }
        None => None,
    };
    let outcome = match (Tool::from_id(&call.name), principal) {
        (None, _) => Err(Refused(format!("there is no tool `{}`", call.name))),
        (Some(tool), _) if !def.tools.iter().any(|t| t == tool.id()) => Err(Refused(format!(
            "`{}` is not among this agent's tools",
            tool.id()
        ))),
        (Some(_), None) => Err(Refused(
            "refused: the agent's creator (or whoever started the run) is no longer a member"
                .into(),
        )),
        (Some(tool), Some(principal)) => {
            run_tool(ctx, &mut tx, &principal, tool, arguments).await?
        }
    };
    let result = match outcome {
        Ok(response) => StepResult::succeeded(response),
        Err(Refused(reason)) => StepResult::failed(reason),
    };
    agent_runs::finish_step(&mut tx, run, step_id, &result).await?;
    tx.commit().await?;
    Ok(Some(content(
        result.response.as_ref(),
        result.error.as_deref(),
    )))
}

fn grant<P: Permission>(principal: &Principal) -> Result<Granted<P>, Refused> {
    Ok(principal.authorize::<P>()?)
}

fn parse<T: for<'de> Deserialize<'de>>(tool: Tool, arguments: Value) -> Result<T, Refused> {
    serde_json::from_value(arguments)
        .map_err(|e| Refused(format!("the arguments of `{}` do not fit: {e}", tool.id())))
}

#[derive(Deserialize)]
struct SearchTasks {
    query: Option<String>,
    status: Option<String>,
    project_id: Option<Uuid>,
}

#[derive(Deserialize)]
struct CreateTask {
    project_id: Uuid,
    title: String,
    description: Option<String>,
    status: Option<String>,
}

#[derive(Deserialize)]
struct LogWork {
    task_id: Uuid,
    note: String,
}

#[derive(Deserialize)]
struct MoveTask {
    task_id: Uuid,
    status: String,
}

#[derive(Deserialize)]
struct EmailTeamMember {
    team_member_id: Uuid,
    subject: String,
    message: String,
}

#[derive(Deserialize)]
struct SearchDocuments {
    query: String,
}

const COLUMNS: [&str; 4] = ["backlog", "active", "done", "gap"];

fn column(status: Option<String>) -> Result<Option<String>, Refused> {
    match status {
        Some(s) if !COLUMNS.contains(&s.as_str()) => Err(Refused(format!(
            "`{s}` is not a column (backlog, active, done, gap)"
        ))),
        other => Ok(other),
    }
}

fn bounded(field: &str, text: String, max: usize) -> Result<String, Refused> {
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.chars().count() > max {
        return Err(Refused(format!("`{field}` must be 1 to {max} characters")));
    }
    Ok(trimmed.to_owned())
}

/// The tool's effect in the step's transaction. `Ok(Err(_))`: refused, nothing done.
async fn run_tool(
    ctx: &WorkerContext,
    conn: &mut sqlx::PgConnection,
    principal: &Principal,
    tool: Tool,
    arguments: Value,
) -> Result<Result<Value, Refused>, JobError> {
    match prepare(principal, tool, arguments) {
        Ok(step) => step.apply(ctx, conn).await,
        Err(refused) => Ok(Err(refused)),
    }
}

/// Checks the run's role against the tool's permission and parses its arguments.
fn prepare(principal: &Principal, tool: Tool, arguments: Value) -> Result<Step, Refused> {
    match tool {
        Tool::SearchTasks => {
            let granted = grant::<ReadProjects>(principal)?;
            let args: SearchTasks = parse(tool, arguments)?;
            let filter = Filter {
                query: args.query,
                status: column(args.status)?,
                project_id: args.project_id,
                ..Filter::default()
            };
            Ok(Step::Search(granted, filter))
        }
        Tool::CreateTask => {
            let granted = grant::<WriteTasks>(principal)?;
            let args: CreateTask = parse(tool, arguments)?;
            let fields = Fields {
                title: Some(bounded("title", args.title, 500)?),
                description: Some(
                    args.description
                        .map(|d| bounded("description", d, 20_000))
                        .transpose()?,
                ),
                ..Fields::default()
            };
            let status = column(args.status)?.unwrap_or_else(|| "backlog".into());
            Ok(Step::Create(granted, args.project_id, status, fields))
        }
        Tool::LogWork => {
            let granted = grant::<WriteTasks>(principal)?;
            let args: LogWork = parse(tool, arguments)?;
            let note = bounded("note", args.note, 5_000)?;
            Ok(Step::Log(granted, args.task_id, note))
        }
        Tool::MoveTask => {
            let granted = grant::<WriteTasks>(principal)?;
            let args: MoveTask = parse(tool, arguments)?;
            let status = column(Some(args.status))?.unwrap_or_default();
            Ok(Step::Move(granted, args.task_id, status))
        }
        Tool::EmailTeamMember => {
            let granted = grant::<WriteTasks>(principal)?;
            let args: EmailTeamMember = parse(tool, arguments)?;
            let subject = bounded("subject", args.subject, 200)?;
            let message = bounded("message", args.message, 10_000)?;
            Ok(Step::Email(granted, args.team_member_id, subject, message))
        }
        Tool::SearchDocuments => {
            let granted = grant::<ReadKnowledge>(principal)?;
            let args: SearchDocuments = parse(tool, arguments)?;
            let query = bounded("query", args.query, 1_000)?;
            let sources = SourceType::ALL
                .into_iter()
                .filter(|s| s.readable_by(principal.role()))
                .collect();
            Ok(Step::Documents(granted, query, sources))
        }
    }
}

/// A tool call checked and parsed, ready to touch the database.
enum Step {
    Search(Granted<ReadProjects>, Filter),
    Create(Granted<WriteTasks>, Uuid, String, Fields),
    Log(Granted<WriteTasks>, Uuid, String),
    Move(Granted<WriteTasks>, Uuid, String),
    Email(Granted<WriteTasks>, Uuid, String, String),
    Documents(Granted<ReadKnowledge>, String, Vec<SourceType>),
}

/// Passages a document search returns at most.
const DOCUMENT_HITS: i64 = 5;

/// Tasks a search returns at most.
const SEARCH_LIMIT: i64 = 20;

impl Step {
    async fn apply(
        self,
        ctx: &WorkerContext,
        conn: &mut sqlx::PgConnection,
    ) -> Result<Result<Value, Refused>, JobError> {
        Ok(match self {
            Self::Search(granted, filter) => {
                let found = tasks::list(conn, &granted, &filter, SEARCH_LIMIT).await?;
                let found: Vec<Value> = found
                    .into_iter()
                    .map(|t| {
                        json!({
                            "id": t.id, "project_id": t.project_id, "title": t.title,
                            "status": t.status, "health_status": t.health_status,
                            "due_at": t.due_at, "last_activity_at": t.last_activity_at,
                        })
                    })
                    .collect();
                Ok(json!({ "tasks": found }))
            }
            Self::Create(granted, project_id, status, fields) => {
                match tasks::insert(conn, &granted, project_id, &status, &fields).await? {
                    Some(id) => Ok(json!({ "task_id": id })),
                    None => Err(Refused(format!("there is no project {project_id}"))),
                }
            }
            Self::Log(granted, task_id, note) => {
                let details = json!({ "note": note });
                match tasks::log_work(conn, &granted, task_id, "note", &details, None).await? {
                    Some(entry) => Ok(json!({ "history_entry_id": entry.id })),
                    None => Err(Refused(format!("there is no task {task_id}"))),
                }
            }
            Self::Move(granted, task_id, status) => {
                match tasks::move_to(conn, &granted, task_id, &status, Place::Bottom).await {
                    Ok(moved) => Ok(json!({ "from": moved.from, "to": moved.to })),
                    Err(MoveError::NotFound | MoveError::BadAnchor) => {
                        Err(Refused(format!("there is no task {task_id}")))
                    }
                    Err(MoveError::Database(e)) => return Err(e.into()),
                }
            }
            Self::Email(granted, member_id, subject, message) => {
                match team_members::get(conn, &granted, member_id).await? {
                    None => Err(Refused(format!("there is no team member {member_id}"))),
                    Some(member) => {
                        let params = json!({"recipient_name": member.name, "title": subject,
                                            "body": message});
                        // With the step's result: a resumed run finds it sent, never twice.
                        enqueue_system(
                            conn,
                            &ctx.settings.encryption_key,
                            &member.email,
                            SystemTemplate::Reminder,
                            &params,
                            Opts::organization(granted.organization_id()),
                        )
                        .await
                        .map_err(anyhow::Error::from)?;
                        Ok(json!({ "sent_to": member_id }))
                    }
                }
            }
            Self::Documents(granted, text, sources) => {
                let search = Passages {
                    text: &text,
                    sources,
                    language: Language::ENGLISH,
                    limit: DOCUMENT_HITS,
                };
                Ok(search.find(ctx, conn, &granted).await?)
            }
        })
    }
}

/// A document search whose passages ground an LLM's answer.
pub(crate) struct Passages<'a> {
    pub text: &'a str,
    pub sources: Vec<SourceType>,
    pub language: Language,
    pub limit: i64,
}

impl Passages<'_> {
    /// `{"passages": [...]}`, best first: each with its `document_id`, `source_type`, `title`,
    /// `chunk` (ordinal), `page`, `heading` and the chunk's whole text as `passage`.
    ///
    /// # Errors
    /// The query not embedded (the job retries) or database errors.
    pub(crate) async fn find(
        self,
        ctx: &WorkerContext,
        conn: &mut sqlx::PgConnection,
        granted: &Granted<ReadKnowledge>,
    ) -> Result<Value, JobError> {
        let vector = ctx
            .embedder
            .embed(vec![self.text.to_owned()])
            .await
            .map_err(|e| JobError::Retry(anyhow::anyhow!("embedding the search query: {e}")))?
            .vectors
            .pop()
            .unwrap_or_default();
        let query = SearchQuery {
            text: self.text,
            vector,
            model: ctx.embedder.model(),
            sources: self.sources,
            from: None,
            to: None,
            language: self.language,
            limit: self.limit,
        };
        let hits = knowledge::search(conn, granted, &query).await?;
        let passages: Vec<Value> = hits
            .into_iter()
            .map(|h| {
                json!({"document_id": h.document_id, "source_type": h.source_type,
                       "title": h.title, "chunk": h.chunk_ordinal, "page": h.page,
                       "heading": h.heading, "passage": h.content})
            })
            .collect();
        Ok(json!({ "passages": passages }))
    }
}
