//! Agents' vocabulary: kinds, how a run was started, where it stands, and its steps.
//!
//! Each is stored as text (`sqlx::Type`), parsed once where it enters, and, with the `openapi`
//! feature, is the API's own enum too.

use serde::{Deserialize, Serialize};

/// What an agent is: a built-in kind with code behind it, or a custom prompt-and-tools agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum AgentKind {
    /// Active tasks without activity for too long.
    TaskMonitor,
    /// Stuck, critical tasks escalated one role up.
    TaskEscalator,
    /// Overdue approvals.
    ApprovalNudger,
    /// The week's hours.
    TimesheetReminder,
    /// Due-task reminders within working hours.
    TeamCoordinator,
    /// Documents not indexed yet.
    DocumentIndexer,
    /// Scheduled broadcasts.
    BroadcastSender,
    /// Inbound emails turned into tasks and invoice drafts.
    EmailParser,
    /// Questions answered from the documents (`POST /api/v1/ask`), citing them.
    QuestionAnswerer,
    /// Instructions, a goal and allow-listed tools.
    Custom,
}

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunTrigger {
    /// A tick of one of the agent's schedules.
    Schedule,
    /// Someone signed in, through `POST /agents/{id}/runs`.
    Manual,
    /// Something that happened (an inbound email).
    Event,
    /// An API key, through `POST /agents/{id}/runs`.
    Api,
}

/// `queued` → `running` → `succeeded` | `failed` | `cancelled` | `budget_exhausted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for a slot of the `agents` queue.
    Queued,
    /// Steps are being taken (or the run waits to resume after a retry).
    Running,
    /// Done; `output` holds the result.
    Succeeded,
    /// Stopped by an error, which `error` names.
    Failed,
    /// Stopped on request, before its next step.
    Cancelled,
    /// Stopped before an LLM step because the organization's monthly budget is spent.
    BudgetExhausted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::BudgetExhausted => "budget_exhausted",
        }
    }

    pub fn is_finished(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum StepKind {
    /// A chat completion; its answer is stored and never asked for again.
    LlmCall,
    /// One of the agent's tools, run with the permissions the run holds.
    ToolCall,
    /// An email enqueued.
    Email,
    /// A pause.
    Wait,
    /// Something the run notes (a template used instead of an LLM, a decision).
    Note,
}

/// A step is recorded `running` before its effect and finished after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum StepStatus {
    Running,
    Succeeded,
    /// Its error is in `error` (a refused tool's error is what the LLM is told).
    Failed,
}

/// What an activity entry reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ActivityAction {
    TaskStuckAlert,
    TaskEscalated,
    ApprovalNudge,
    TimesheetReminder,
    TeamReminder,
    DocumentIndexed,
    BroadcastSent,
    EmailParsed,
    InvoiceProcessed,
    Custom,
    /// A schedule's tick found the previous run unfinished and started none.
    RunSkipped,
    /// A run ended (its status is the entry's).
    RunFinished,
    /// The organization's monthly LLM budget stopped a run.
    BudgetExhausted,
}

/// How an activity entry turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ActivityStatus {
    InProgress,
    Success,
    Failed,
}

/// The Zoark operations a custom agent may be given (`agents.tools`), listed by
/// `GET /agent-tools`. Each runs with the run's role and needs the permission it names: no
/// shell, no files, no URLs fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(poem_openapi::Enum),
    oai(rename_all = "snake_case")
)]
#[serde(rename_all = "snake_case")]
pub enum Tool {
    /// Find tasks by part of their title, column or project.
    SearchTasks,
    /// Create a task at the bottom of a project's column.
    CreateTask,
    /// Add a note to a task's work history.
    LogWork,
    /// Move a task to another column of its board.
    MoveTask,
    /// Email a member of the team directory.
    EmailTeamMember,
    /// Search the documents the run may read (knowledge base, team documents, invoices).
    SearchDocuments,
}

impl Tool {
    pub const ALL: [Self; 6] = [
        Self::SearchTasks,
        Self::CreateTask,
        Self::LogWork,
        Self::MoveTask,
        Self::EmailTeamMember,
        Self::SearchDocuments,
    ];

    /// The id stored in `agents.tools` and used as the function's name with the LLM.
    pub fn id(self) -> &'static str {
        match self {
            Self::SearchTasks => "search_tasks",
            Self::CreateTask => "create_task",
            Self::LogWork => "log_work",
            Self::MoveTask => "move_task",
            Self::EmailTeamMember => "email_team_member",
            Self::SearchDocuments => "search_documents",
        }
    }

    pub fn from_id(id: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// What the LLM is told the tool does.
    pub fn description(self) -> &'static str {
        match self {
            Self::SearchTasks => {
                "Search the organization's tasks by part of their title, by column \
                 (backlog, active, done, gap) or by project; at most 20, newest first."
            }
            Self::CreateTask => "Create a task in a project, at the bottom of a column.",
            Self::LogWork => "Add a note to a task's work history.",
            Self::MoveTask => {
                "Move a task to another column of its board (backlog, active, done, gap)."
            }
            Self::EmailTeamMember => {
                "Email a member of the team directory (by their id): a subject and a plain-text \
                 message, sent once."
            }
            Self::SearchDocuments => {
                "Search the organization's documents by meaning and keywords; returns at most \
                 five passages, each with its document and chunk to cite."
            }
        }
    }

    /// The permission it needs (`docs/permissions.md`).
    pub fn permission(self) -> (&'static str, crate::access::Role) {
        use crate::access::{Permission as _, ReadKnowledge, ReadProjects, WriteTasks};
        match self {
            Self::SearchTasks => (ReadProjects::NAME, ReadProjects::MIN_ROLE),
            Self::CreateTask | Self::LogWork | Self::MoveTask | Self::EmailTeamMember => {
                (WriteTasks::NAME, WriteTasks::MIN_ROLE)
            }
            Self::SearchDocuments => (ReadKnowledge::NAME, ReadKnowledge::MIN_ROLE),
        }
    }

    /// Its arguments as a JSON Schema (strict: every property required, nulls where optional).
    pub fn parameters(self) -> serde_json::Value {
        use serde_json::json;
        let column =
            json!({"type": ["string", "null"], "enum": ["backlog", "active", "done", "gap", null]});
        let (properties, required) = match self {
            Self::SearchTasks => (
                json!({
                    "query": {"type": ["string", "null"], "description": "Part of the title."},
                    "status": column,
                    "project_id": {"type": ["string", "null"], "description": "A project's id."}
                }),
                json!(["query", "status", "project_id"]),
            ),
            Self::CreateTask => (
                json!({
                    "project_id": {"type": "string", "description": "The project's id."},
                    "title": {"type": "string"},
                    "description": {"type": ["string", "null"]},
                    "status": column
                }),
                json!(["project_id", "title", "description", "status"]),
            ),
            Self::LogWork => (
                json!({
                    "task_id": {"type": "string"},
                    "note": {"type": "string"}
                }),
                json!(["task_id", "note"]),
            ),
            Self::MoveTask => (
                json!({
                    "task_id": {"type": "string"},
                    "status": {"type": "string", "enum": ["backlog", "active", "done", "gap"]}
                }),
                json!(["task_id", "status"]),
            ),
            Self::EmailTeamMember => (
                json!({
                    "team_member_id": {"type": "string", "description": "The member's id."},
                    "subject": {"type": "string"},
                    "message": {"type": "string"}
                }),
                json!(["team_member_id", "subject", "message"]),
            ),
            Self::SearchDocuments => (
                json!({"query": {"type": "string", "description": "What to look for."}}),
                json!(["query"]),
            ),
        };
        json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false
        })
    }
}
