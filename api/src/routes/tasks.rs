//! `/api/v1/tasks` and `/api/v1/projects/{id}/board`: task board cards with their details,
//! moves between columns in a stable order, the append-only work history, and assignments of
//! team members (each new assignee gets the assignment email, enqueued in the same
//! transaction).

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::{Example, MaybeUndefined},
};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{
    Settings,
    access::{DeleteTasks, Granted, ReadProjects, WriteTasks},
    db::{
        audit::{self, Entry},
        projects,
        tasks::{self, MoveError, Place},
        team_members, tenant,
    },
    identity::Invalid,
    webhooks::EventType,
};
use zoark_jobs::{Opts, email::SystemTemplate};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, FieldError, Fields},
    etag, idempotency,
    json::JsonBody,
    pagination::PageRequest,
    params::{Timestamp, instant},
    routes::{ApiTags, NoContent, organization::optional, projects::long_text, team_members::text},
    state::AppState,
    system_email,
};

pub struct TasksApi;

/// A board column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Not started.
    Backlog,
    /// In progress.
    Active,
    /// Finished (`completed_at` is set).
    Done,
    /// A gap: something missing that blocks the project.
    Gap,
}

/// Where the work stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum ProcessStage {
    Planning,
    InProgress,
    Review,
    Blocked,
    Completed,
}

/// How the task is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum TaskHealth {
    Healthy,
    AtRisk,
    Critical,
}

/// The stored spelling of an enum value (its serde name).
fn db<T: Serialize>(v: T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A stored value back as the enum (the table's CHECK allows only these; `fallback` is never
/// reached).
fn from_db<T: serde::de::DeserializeOwned>(s: &str, fallback: T) -> T {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).unwrap_or(fallback)
}

/// `POST /tasks`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewTask {
    pub project_id: Uuid,
    /// 1 to 500 characters on one line.
    pub title: String,
    /// Up to 20,000 characters.
    pub description: Option<String>,
    /// The column (default `backlog`); the task goes to its bottom.
    pub status: Option<TaskStatus>,
    /// Up to 200 characters.
    pub contact_person: Option<String>,
    /// People needed or involved, 0 to 1,000,000 (default 0).
    pub people_count: Option<i32>,
    /// Default `planning`.
    pub process_stage: Option<ProcessStage>,
    /// Default `healthy`.
    pub health_status: Option<TaskHealth>,
    pub due_at: Option<DateTime<Utc>>,
    /// Team members to assign at once; each gets the assignment email.
    pub assignee_ids: Option<Vec<Uuid>>,
}

impl Example for NewTask {
    fn example() -> Self {
        Self {
            project_id: Uuid::nil(),
            title: "Inspect the northern rivets".into(),
            description: Some("Every rivet of spans 3 to 5; photograph the corroded ones.".into()),
            status: Some(TaskStatus::Active),
            contact_person: Some("Mary Bradfield".into()),
            people_count: Some(4),
            process_stage: Some(ProcessStage::InProgress),
            health_status: Some(TaskHealth::Healthy),
            due_at: None,
            assignee_ids: Some(Vec::new()),
        }
    }
}

/// `PATCH /tasks/{id}`: absent fields stay; `null` clears an optional one. The column is
/// changed by `POST /tasks/{id}/move`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct TaskPatch {
    #[serde(default)]
    pub title: MaybeUndefined<String>,
    #[serde(default)]
    pub description: MaybeUndefined<String>,
    #[serde(default)]
    pub contact_person: MaybeUndefined<String>,
    #[serde(default)]
    pub people_count: Option<i32>,
    #[serde(default)]
    pub process_stage: Option<ProcessStage>,
    #[serde(default)]
    pub health_status: Option<TaskHealth>,
    #[serde(default)]
    pub due_at: MaybeUndefined<DateTime<Utc>>,
}

impl poem_openapi::types::Example for TaskPatch {
    fn example() -> Self {
        Self {
            title: MaybeUndefined::Value("Review the vendor contract".into()),
            description: MaybeUndefined::Undefined,
            contact_person: MaybeUndefined::Undefined,
            people_count: Some(3),
            process_stage: Some(ProcessStage::Review),
            health_status: Some(TaskHealth::AtRisk),
            due_at: MaybeUndefined::Null,
        }
    }
}

/// Where a moved task lands when no neighbour is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum MoveAt {
    Top,
    Bottom,
}

/// `POST /tasks/{id}/move`: the target column, and at most one of `after_task_id`,
/// `before_task_id` and `at` (default: the bottom).
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct TaskMove {
    pub status: TaskStatus,
    /// Place the task right after this task of the target column.
    pub after_task_id: Option<Uuid>,
    /// Place the task right before this task of the target column.
    pub before_task_id: Option<Uuid>,
    /// `top` or `bottom` of the column.
    pub at: Option<MoveAt>,
}

impl Example for TaskMove {
    fn example() -> Self {
        Self {
            status: TaskStatus::Done,
            after_task_id: None,
            before_task_id: None,
            at: Some(MoveAt::Top),
        }
    }
}

/// What a work-log entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum WorkKind {
    /// A note on the task (`note` required).
    Note,
    /// Time spent (`minutes` required, `note` optional).
    WorkLogged,
}

/// `POST /tasks/{id}/history`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewWorkEntry {
    pub kind: WorkKind,
    /// Up to 5,000 characters.
    pub note: Option<String>,
    /// 1 to 1,440 (a day).
    pub minutes: Option<i32>,
    /// When the work happened (default now; not in the future).
    pub occurred_at: Option<DateTime<Utc>>,
}

impl Example for NewWorkEntry {
    fn example() -> Self {
        Self {
            kind: WorkKind::WorkLogged,
            note: Some("Photographed spans 3 and 4.".into()),
            minutes: Some(90),
            occurred_at: None,
        }
    }
}

/// A task.
#[derive(Debug, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Task {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: TaskStatus,
    pub contact_person: Option<String>,
    pub people_count: i32,
    pub process_stage: ProcessStage,
    pub health_status: TaskHealth,
    pub due_at: Option<DateTime<Utc>>,
    /// Open and past its due time.
    pub overdue: bool,
    /// Last meaningful activity: created, changed, moved to another column, work logged.
    pub last_activity_at: DateTime<Utc>,
    /// When it reached `done`.
    pub completed_at: Option<DateTime<Utc>>,
    /// Assigned team members, in assignment order.
    pub assignee_ids: Vec<Uuid>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl poem_openapi::types::Example for Task {
    fn example() -> Self {
        Self {
            id: uuid::Uuid::from_u128(0x0192_5f3a_7c1e_7b2d_9a41_3e6f_0c8d_2b17),
            project_id: uuid::Uuid::from_u128(0x0192_5f3a_6b00_7d11_8e22_4f33_5a44_6b55),
            title: "Review the vendor contract".into(),
            description: Some("Check the liability clause".into()),
            status: TaskStatus::Active,
            contact_person: Some("Ada Lovelace".into()),
            people_count: 2,
            process_stage: ProcessStage::Review,
            health_status: TaskHealth::AtRisk,
            due_at: Some(chrono::DateTime::from_timestamp(1_795_694_400, 0).unwrap_or_default()),
            overdue: false,
            last_activity_at: chrono::DateTime::from_timestamp(1_795_687_200, 0)
                .unwrap_or_default(),
            completed_at: None,
            assignee_ids: vec![uuid::Uuid::from_u128(
                0x0192_5f3a_8d2f_7c3e_ab52_4f70_1d9e_3c28,
            )],
            created_by: Some(uuid::Uuid::from_u128(
                0x0192_5f3a_8d2f_7c3e_ab52_4f70_1d9e_3c28,
            )),
            created_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
            updated_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
        }
    }
}

impl From<tasks::Task> for Task {
    fn from(t: tasks::Task) -> Self {
        let status = from_db(&t.status, TaskStatus::Backlog);
        Self {
            overdue: status != TaskStatus::Done && t.due_at.is_some_and(|d| d < Utc::now()),
            id: t.id,
            project_id: t.project_id,
            title: t.title,
            description: t.description,
            status,
            contact_person: t.contact_person,
            people_count: t.people_count,
            process_stage: from_db(&t.process_stage, ProcessStage::Planning),
            health_status: from_db(&t.health_status, TaskHealth::Healthy),
            due_at: t.due_at,
            last_activity_at: t.last_activity_at,
            completed_at: t.completed_at,
            assignee_ids: t.assignee_ids,
            created_by: t.created_by,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct TaskList {
    pub items: Vec<Task>,
    pub next_cursor: Option<String>,
}

/// One column of a board.
#[derive(Debug, Object)]
pub struct BoardColumn {
    pub status: TaskStatus,
    /// Tasks in the column (the list may be cut at `limit`).
    pub total: i64,
    /// In board order.
    pub tasks: Vec<Task>,
}

/// A project's board: the four columns in the order backlog, active, done, gap.
#[derive(Debug, Object)]
pub struct Board {
    pub project_id: Uuid,
    pub columns: Vec<BoardColumn>,
}

/// An entry of the work history.
#[derive(Debug, Object, Serialize)]
pub struct WorkEntry {
    pub id: Uuid,
    /// The user who acted (none for API keys and the system).
    pub actor_user_id: Option<Uuid>,
    /// `created`, `updated`, `status_changed`, `assigned`, `unassigned`, `note` or
    /// `work_logged`.
    pub action: String,
    /// What happened, e.g. `{"from": "active", "to": "done"}`.
    pub details: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<tasks::HistoryEntry> for WorkEntry {
    fn from(e: tasks::HistoryEntry) -> Self {
        Self {
            id: e.id,
            actor_user_id: e.actor_user_id,
            action: e.action,
            details: e.details,
            occurred_at: e.occurred_at,
            created_at: e.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct WorkEntryList {
    pub items: Vec<WorkEntry>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum TaskCreated {
    /// The task.
    #[oai(status = 201)]
    Created(
        Json<Box<Task>>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

#[derive(ApiResponse)]
pub enum Assigned {
    /// Assigned; the assignment email is on its way.
    #[oai(status = 201)]
    Created(Json<Box<Task>>),
    /// They already were assigned: nothing changed, no email.
    #[oai(status = 200)]
    AlreadyAssigned(Json<Box<Task>>),
}

#[derive(ApiResponse)]
pub enum WorkLogged {
    /// The entry.
    #[oai(status = 201)]
    Created(Json<WorkEntry>),
}

/// A title: one line, 1 to 500 characters.
fn title(raw: &str) -> Result<String, Invalid> {
    let v = raw.trim();
    if v.is_empty() || v.chars().count() > 500 || v.chars().any(char::is_control) {
        Err(Invalid("must be 1 to 500 characters on one line".into()))
    } else {
        Ok(v.to_owned())
    }
}

/// An instant Postgres can store.
fn storable(at: DateTime<Utc>) -> Result<DateTime<Utc>, Invalid> {
    Timestamp::new(at)
        .map(|t| t.0)
        .map_err(|e| Invalid(e.into()))
}

fn parse(body: TaskPatch, creating: bool) -> Result<tasks::Fields, ApiError> {
    let mut fields = Fields::default();
    let mut out = tasks::Fields::default();
    match body.title {
        MaybeUndefined::Value(v) => out.title = fields.take("title", title(&v)),
        MaybeUndefined::Null => fields.reject("title", "cannot be null"),
        MaybeUndefined::Undefined if creating => fields.reject("title", "is required"),
        MaybeUndefined::Undefined => {}
    }
    out.description = optional(
        &mut fields,
        "description",
        body.description,
        long_text(20_000),
    );
    out.contact_person = optional(
        &mut fields,
        "contact_person",
        body.contact_person,
        text(200),
    );
    if let Some(n) = body.people_count
        && !(0..=1_000_000).contains(&n)
    {
        fields.reject("people_count", "must be between 0 and 1,000,000");
    } else {
        out.people_count = body.people_count;
    }
    out.process_stage = body.process_stage.map(db);
    out.health_status = body.health_status.map(db);
    out.due_at = match body.due_at {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(at) => fields.take("due_at", storable(at)).map(Some),
    };
    fields.finish()?;
    Ok(out)
}

pub(crate) fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "task_not_found",
        detail: "No task with this id in the organization.".into(),
    }
}

fn team_member_not_found(field: Option<&str>) -> ApiError {
    match field {
        Some(field) => ApiError::Validation(vec![FieldError {
            field: field.into(),
            message: "no team member with this id in the organization".into(),
        }]),
        None => ApiError::NotFound {
            code: "team_member_not_found",
            detail: "No team member with this id in the organization.".into(),
        },
    }
}

async fn load<P>(
    conn: &mut PgConnection,
    granted: &Granted<P>,
    id: Uuid,
) -> Result<Task, ApiError> {
    Ok(tasks::get(conn, granted, id)
        .await?
        .ok_or_else(not_found)?
        .into())
}

/// Assigns `team_member_id` and, when newly assigned, enqueues the assignment email in the
/// same transaction. `field` names the request field for a 422 (else the path: 404).
async fn assign(
    conn: &mut PgConnection,
    settings: &Settings,
    granted: &Granted<WriteTasks>,
    task_id: Uuid,
    team_member_id: Uuid,
    field: Option<&str>,
) -> Result<bool, ApiError> {
    let member = team_members::get(conn, granted, team_member_id)
        .await?
        .ok_or_else(|| team_member_not_found(field))?;
    if !tasks::assign(conn, granted, task_id, team_member_id).await? {
        return Ok(false);
    }
    let task = tasks::get(conn, granted, task_id)
        .await?
        .ok_or_else(not_found)?;
    let project = projects::get(conn, granted, task.project_id)
        .await?
        .ok_or_else(not_found)?;
    let assigner = system_email::actor_name(conn, granted).await?;
    let mut url = settings.http.public_url.clone();
    url.set_path(&format!("/tasks/{task_id}"));
    let mut params = serde_json::json!({
        "assignee_name": member.name,
        "assigner_name": assigner,
        "task_title": task.title,
        "project_name": project.name,
        "task_url": url.to_string(),
    });
    if let Some(due) = task.due_at {
        params["due_date"] = due.format("%Y-%m-%d").to_string().into();
    }
    system_email::enqueue(
        conn,
        settings,
        &member.email,
        SystemTemplate::TaskAssignment,
        &params,
        Opts::organization(granted.organization_id()),
    )
    .await?;
    Ok(true)
}

fn move_error(e: MoveError) -> ApiError {
    match e {
        MoveError::NotFound => not_found(),
        MoveError::BadAnchor => ApiError::Validation(vec![FieldError {
            field: "after_task_id".into(),
            message: "after_task_id / before_task_id must name another task of the target column"
                .into(),
        }]),
        MoveError::Database(e) => e.into(),
    }
}

#[OpenApi(tag = "ApiTags::Tasks", prefix_path = "/api/v1")]
impl TasksApi {
    /// Create a task
    ///
    /// At the bottom of its column (default `backlog`), with a `created` history entry. Each
    /// of `assignee_ids` is assigned and gets the assignment email. `Idempotency-Key` replays
    /// the first response of a retried request. Needs `tasks.write` (member).
    #[oai(path = "/tasks", method = "post", operation_id = "tasks_create")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        body: JsonBody<NewTask>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<TaskCreated, ApiError> {
        let granted = auth.grant::<WriteTasks>(&state).await?;
        let body = body.0;
        let key = idempotency::Key::parse(idempotency_key.0.as_deref(), "tasks_create", &body)?;
        let organization_id = granted.organization_id();
        let status = body.status.unwrap_or(TaskStatus::Backlog);
        let project_id = body.project_id;
        let assignees = body.assignee_ids.clone().unwrap_or_default();
        if assignees.len() > 50 {
            return Err(ApiError::Validation(vec![FieldError {
                field: "assignee_ids".into(),
                message: "at most 50".into(),
            }]));
        }
        let fields = parse(
            TaskPatch {
                title: MaybeUndefined::Value(body.title),
                description: body
                    .description
                    .map_or(MaybeUndefined::Undefined, MaybeUndefined::Value),
                contact_person: body
                    .contact_person
                    .map_or(MaybeUndefined::Undefined, MaybeUndefined::Value),
                people_count: body.people_count,
                process_stage: body.process_stage,
                health_status: body.health_status,
                due_at: body
                    .due_at
                    .map_or(MaybeUndefined::Undefined, MaybeUndefined::Value),
            },
            true,
        )?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<Task>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(TaskCreated::Created(Json(Box::new(replay)), Some(true)));
        }
        let id = tasks::insert(&mut tx, &granted, project_id, &db(status), &fields)
            .await?
            .ok_or_else(|| {
                ApiError::Validation(vec![FieldError {
                    field: "project_id".into(),
                    message: "no project with this id in the organization".into(),
                }])
            })?;
        for member in assignees {
            assign(
                &mut tx,
                &state.settings,
                &granted,
                id,
                member,
                Some("assignee_ids"),
            )
            .await?;
        }
        let task = load(&mut tx, &granted, id).await?;
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &task).await?;
        }
        tx.commit().await?;
        Ok(TaskCreated::Created(Json(Box::new(task)), None))
    }

    /// List tasks
    ///
    /// Newest first, filtered by project, column, assignee, health, process stage, update time,
    /// due time and part of the title. Needs `projects.read` (viewer).
    #[oai(path = "/tasks", method = "get", operation_id = "tasks_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Only tasks of this project.
        project_id: Query<Option<Uuid>>,
        /// Only tasks in this column.
        status: Query<Option<TaskStatus>>,
        /// Only tasks assigned to this team member.
        assignee_id: Query<Option<Uuid>>,
        /// Only tasks with this health.
        health_status: Query<Option<TaskHealth>>,
        /// Only tasks at this stage.
        process_stage: Query<Option<ProcessStage>>,
        /// Updated at or after (RFC 3339).
        updated_after: Query<Option<Timestamp>>,
        /// Updated before (RFC 3339).
        updated_before: Query<Option<Timestamp>>,
        /// Due before (RFC 3339).
        due_before: Query<Option<Timestamp>>,
        /// Part of the title, case-insensitive.
        q: Query<Option<String>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<TaskList>, ApiError> {
        let granted = auth.grant::<ReadProjects>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = tasks::list(
            &mut tx,
            &granted,
            &tasks::Filter {
                project_id: project_id.0,
                status: status.0.map(db),
                assignee_id: assignee_id.0,
                health_status: health_status.0.map(db),
                process_stage: process_stage.0.map(db),
                updated_after: instant(updated_after.0),
                updated_before: instant(updated_before.0),
                due_before: instant(due_before.0),
                query: q.0.filter(|q| !q.is_empty()),
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |t| t.id);
        Ok(Json(TaskList {
            items: rows.into_iter().map(Task::from).collect(),
            next_cursor,
        }))
    }

    /// Get a task
    ///
    /// With an `ETag`; `If-None-Match` with it answers 304 while nothing changed. Needs
    /// `projects.read` (viewer).
    #[oai(path = "/tasks/:id", method = "get", operation_id = "tasks_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<Task>, ApiError> {
        let granted = auth.grant::<ReadProjects>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let task = load(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(etag::found(task, if_none_match.0.as_deref()))
    }

    /// Change a task's details
    ///
    /// Absent fields stay; `null` clears an optional one; recorded in the work history as
    /// `updated` with the names of the fields. Needs `tasks.write` (member).
    #[oai(path = "/tasks/:id", method = "patch", operation_id = "tasks_update")]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<TaskPatch>,
    ) -> Result<Json<Box<Task>>, ApiError> {
        let granted = auth.grant::<WriteTasks>(&state).await?;
        let fields = parse(body.0, false)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !tasks::update(&mut tx, &granted, id.0, &fields).await? {
            return Err(not_found());
        }
        let task = load(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(Json(Box::new(task)))
    }

    /// Move a task on the board
    ///
    /// To another column or another place in its own: right after `after_task_id`, right
    /// before `before_task_id`, or at the `top` or `bottom` (default). The order of the other
    /// tasks never changes. Moving to `done` completes the task, moving out of it reopens it;
    /// a change of column is recorded as `status_changed` and sent to webhooks subscribed to
    /// `task.status_changed`. Needs `tasks.write` (member).
    #[oai(path = "/tasks/:id/move", method = "post", operation_id = "tasks_move")]
    async fn move_task(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<TaskMove>,
    ) -> Result<Json<Box<Task>>, ApiError> {
        let granted = auth.grant::<WriteTasks>(&state).await?;
        let body = body.0;
        let place = match (body.after_task_id, body.before_task_id, body.at) {
            (None, None, None | Some(MoveAt::Bottom)) => Place::Bottom,
            (None, None, Some(MoveAt::Top)) => Place::Top,
            (Some(after), None, None) => Place::After(after),
            (None, Some(before), None) => Place::Before(before),
            _ => {
                return Err(ApiError::Validation(vec![FieldError {
                    field: "after_task_id".into(),
                    message: "give at most one of after_task_id, before_task_id and at".into(),
                }]));
            }
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let moved = tasks::move_to(&mut tx, &granted, id.0, &db(body.status), place)
            .await
            .map_err(move_error)?;
        let task = load(&mut tx, &granted, id.0).await?;
        if moved.from != moved.to {
            zoark_jobs::webhooks::emit(
                &mut tx,
                granted.organization_id(),
                EventType::TaskStatusChanged,
                serde_json::json!({
                    "task": {
                        "id": task.id,
                        "project_id": task.project_id,
                        "title": task.title,
                        "status": task.status,
                        "previous_status": moved.from,
                        "completed_at": task.completed_at,
                    },
                    "changed_by": granted.actor().user_id(),
                }),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Json(Box::new(task)))
    }

    /// Delete a task
    ///
    /// With its work history and assignments. Needs `tasks.delete` (lead). Audited as
    /// `task.deleted`.
    #[oai(path = "/tasks/:id", method = "delete", operation_id = "tasks_delete")]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<DeleteTasks>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let task = load(&mut tx, &granted, id.0).await?;
        if !tasks::delete(&mut tx, &granted, id.0).await? {
            return Err(not_found());
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("task.deleted", &client(req, &state.settings))
                .on("task", id.0)
                .with(serde_json::json!({ "title": task.title, "project_id": task.project_id })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// A project's board
    ///
    /// The four columns (backlog, active, done, gap) with up to `limit` tasks each, in board
    /// order, and how many each holds. Needs `projects.read` (viewer).
    #[oai(
        path = "/projects/:id/board",
        method = "get",
        operation_id = "projects_board"
    )]
    async fn board(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// Tasks per column, 1 to 200 (default 100).
        limit: Query<Option<i64>>,
    ) -> Result<Json<Board>, ApiError> {
        let granted = auth.grant::<ReadProjects>(&state).await?;
        let limit = limit.0.unwrap_or(100);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::InvalidParameter(FieldError {
                field: "limit".into(),
                message: "must be between 1 and 200".into(),
            }));
        }
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let project = projects::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(super::projects::not_found)?;
        let rows = tasks::board(&mut tx, &granted, id.0, limit).await?;
        tx.commit().await?;
        let mut columns: Vec<BoardColumn> = [
            (TaskStatus::Backlog, project.backlog),
            (TaskStatus::Active, project.active),
            (TaskStatus::Done, project.done),
            (TaskStatus::Gap, project.gap),
        ]
        .into_iter()
        .map(|(status, total)| BoardColumn {
            status,
            total,
            tasks: Vec::new(),
        })
        .collect();
        for task in rows.into_iter().map(Task::from) {
            if let Some(column) = columns.iter_mut().find(|c| c.status == task.status) {
                column.tasks.push(task);
            }
        }
        Ok(Json(Board {
            project_id: id.0,
            columns,
        }))
    }

    /// A task's work history
    ///
    /// Append-only, newest first: what happened to the task and the work logged on it. Needs
    /// `projects.read` (viewer).
    #[oai(
        path = "/tasks/:id/history",
        method = "get",
        operation_id = "tasks_history"
    )]
    async fn history(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<WorkEntryList>, ApiError> {
        let granted = auth.grant::<ReadProjects>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        load(&mut tx, &granted, id.0).await?;
        let rows = tasks::history(&mut tx, &granted, id.0, page.before_id, page.fetch()).await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |e| e.id);
        Ok(Json(WorkEntryList {
            items: rows.into_iter().map(WorkEntry::from).collect(),
            next_cursor,
        }))
    }

    /// Log work on a task
    ///
    /// A note, or time spent. It counts as activity on the task (stuck-task detection looks at
    /// it). Entries are never changed or removed. Needs `tasks.write` (member).
    #[oai(
        path = "/tasks/:id/history",
        method = "post",
        operation_id = "tasks_log_work"
    )]
    async fn log_work(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<NewWorkEntry>,
    ) -> Result<WorkLogged, ApiError> {
        let granted = auth.grant::<WriteTasks>(&state).await?;
        let body = body.0;
        let mut fields = Fields::default();
        let note = body
            .note
            .as_deref()
            .and_then(|n| fields.take("note", long_text(5_000)(n)));
        match (body.kind, &note, body.minutes) {
            (WorkKind::Note, None, _) => fields.reject("note", "is required for a note"),
            (WorkKind::WorkLogged, _, None) => {
                fields.reject("minutes", "is required for work_logged");
            }
            _ => {}
        }
        if let Some(m) = body.minutes
            && !(1..=1440).contains(&m)
        {
            fields.reject("minutes", "must be between 1 and 1440");
        }
        if let Some(at) = body.occurred_at {
            if at > Utc::now() {
                fields.reject("occurred_at", "cannot be in the future");
            } else {
                fields.take("occurred_at", storable(at));
            }
        }
        fields.finish()?;
        let mut details = serde_json::Map::new();
        if let Some(note) = note {
            details.insert("note".into(), note.into());
        }
        if let Some(minutes) = body.minutes {
            details.insert("minutes".into(), minutes.into());
        }
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let entry = tasks::log_work(
            &mut tx,
            &granted,
            id.0,
            &db(body.kind),
            &details.into(),
            body.occurred_at,
        )
        .await?
        .ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(WorkLogged::Created(Json(entry.into())))
    }

    /// Assign a team member to a task
    ///
    /// Idempotent: 201 and the assignment email (enqueued with the assignment, in one
    /// transaction) when newly assigned; 200 and no email when they already were. Recorded in
    /// the work history. Needs `tasks.write` (member).
    #[oai(
        path = "/tasks/:id/assignees/:team_member_id",
        method = "put",
        operation_id = "tasks_assign"
    )]
    async fn assign(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        team_member_id: Path<Uuid>,
    ) -> Result<Assigned, ApiError> {
        let granted = auth.grant::<WriteTasks>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        load(&mut tx, &granted, id.0).await?;
        let added = assign(
            &mut tx,
            &state.settings,
            &granted,
            id.0,
            team_member_id.0,
            None,
        )
        .await?;
        let task = load(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(if added {
            Assigned::Created(Json(Box::new(task)))
        } else {
            Assigned::AlreadyAssigned(Json(Box::new(task)))
        })
    }

    /// Unassign a team member from a task
    ///
    /// Recorded in the work history. Needs `tasks.write` (member). Audited as
    /// `task.unassigned`.
    #[oai(
        path = "/tasks/:id/assignees/:team_member_id",
        method = "delete",
        operation_id = "tasks_unassign"
    )]
    async fn unassign(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
        team_member_id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<WriteTasks>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        load(&mut tx, &granted, id.0).await?;
        if !tasks::unassign(&mut tx, &granted, id.0, team_member_id.0).await? {
            return Err(ApiError::NotFound {
                code: "assignment_not_found",
                detail: "This team member is not assigned to the task.".into(),
            });
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("task.unassigned", &client(req, &state.settings))
                .on("task", id.0)
                .with(serde_json::json!({ "team_member_id": team_member_id.0 })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}
