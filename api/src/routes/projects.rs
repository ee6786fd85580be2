//! `/api/v1/projects`: projects with their members, and the metrics computed from their tasks
//! (health score and velocity, see [`zoark_core::db::projects`]).

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::{Example, MaybeUndefined},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{ManageProjects, ReadProjects},
    db::{
        audit::{self, Entry},
        projects, team_members, tenant,
    },
    identity::{Invalid, Name},
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, Fields},
    etag, idempotency,
    json::JsonBody,
    pagination::PageRequest,
    routes::{
        ApiTags, NoContent,
        organization::optional,
        team_members::{TeamMember, TeamMemberList},
    },
    state::AppState,
};

pub struct ProjectsApi;

/// `POST /projects`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewProject {
    /// 1 to 200 characters.
    pub name: String,
    /// Up to 10,000 characters.
    pub description: Option<String>,
}

impl Example for NewProject {
    fn example() -> Self {
        Self {
            name: "Harbour Bridge refurbishment".into(),
            description: Some("Repaint and re-rivet the northern span.".into()),
        }
    }
}

/// `PATCH /projects/{id}`: absent fields stay; `null` clears the description.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct ProjectPatch {
    #[serde(default)]
    pub name: MaybeUndefined<String>,
    #[serde(default)]
    pub description: MaybeUndefined<String>,
    /// `true` archives the project (hidden from the default list), `false` restores it.
    #[serde(default)]
    pub archived: Option<bool>,
}

impl poem_openapi::types::Example for ProjectPatch {
    fn example() -> Self {
        Self {
            name: MaybeUndefined::Value("Website relaunch (phase 2)".into()),
            description: MaybeUndefined::Null,
            archived: Some(false),
        }
    }
}

/// Tasks per board column.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct TaskCounts {
    pub backlog: i64,
    pub active: i64,
    pub done: i64,
    pub gap: i64,
    /// Open tasks past their due time.
    pub overdue: i64,
}

/// A project with its computed metrics.
#[derive(Debug, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub archived: bool,
    pub archived_at: Option<DateTime<Utc>>,
    /// 0 to 100, computed from the open tasks: 100 when none is at risk, critical or overdue.
    /// Each open task costs up to one point of trouble (`critical` 1, `at_risk` 0.5, overdue
    /// 0.5 more); the score is `100 × (1 − trouble / open tasks)`, rounded.
    pub health_score: f64,
    /// Tasks completed per week, averaged over the last four weeks.
    pub velocity: f64,
    pub task_counts: TaskCounts,
    /// Team members on the project.
    pub member_count: i64,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl poem_openapi::types::Example for Project {
    fn example() -> Self {
        Self {
            id: uuid::Uuid::from_u128(0x0192_5f3a_7c1e_7b2d_9a41_3e6f_0c8d_2b17),
            name: "Website relaunch".into(),
            description: Some("New site and CMS migration".into()),
            archived: false,
            archived_at: None,
            health_score: 87.0,
            velocity: 4.5,
            task_counts: TaskCounts {
                backlog: 6,
                active: 4,
                done: 12,
                gap: 1,
                overdue: 1,
            },
            member_count: 5,
            created_by: Some(uuid::Uuid::from_u128(
                0x0192_5f3a_6b00_7d11_8e22_4f33_5a44_6b55,
            )),
            created_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
            updated_at: chrono::DateTime::from_timestamp(1_795_694_400, 0).unwrap_or_default(),
        }
    }
}

impl From<projects::Project> for Project {
    fn from(p: projects::Project) -> Self {
        Self {
            id: p.id,
            name: p.name,
            description: p.description,
            archived: p.archived_at.is_some(),
            archived_at: p.archived_at,
            health_score: p.health_score,
            velocity: p.velocity,
            task_counts: TaskCounts {
                backlog: p.backlog,
                active: p.active,
                done: p.done,
                gap: p.gap,
                overdue: p.overdue,
            },
            member_count: p.member_count,
            created_by: p.created_by,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ProjectList {
    pub items: Vec<Project>,
    pub next_cursor: Option<String>,
}

/// Which projects a list shows.
#[derive(Debug, Clone, Copy, Enum)]
#[oai(rename_all = "snake_case")]
pub enum ArchivedParam {
    /// Projects in use (the default).
    Active,
    Archived,
    All,
}

#[derive(ApiResponse)]
pub enum ProjectCreated {
    /// The project.
    #[oai(status = 201)]
    Created(
        Json<Project>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

#[derive(ApiResponse)]
pub enum MemberAdded {
    /// Added to the project.
    #[oai(status = 201)]
    Created(Json<TeamMember>),
    /// Already on the project: nothing changed.
    #[oai(status = 200)]
    AlreadyMember(Json<TeamMember>),
}

/// One line of text, trimmed, 1 to `max` characters (for descriptions: any text up to `max`).
pub(crate) fn long_text(max: usize) -> impl Fn(&str) -> Result<String, Invalid> {
    move |raw: &str| {
        if raw.chars().count() > max || raw.contains('\0') {
            Err(Invalid(format!(
                "must be at most {max} characters, without NUL"
            )))
        } else {
            Ok(raw.to_owned())
        }
    }
}

fn parse(body: ProjectPatch, creating: bool) -> Result<projects::Fields, ApiError> {
    let mut fields = Fields::default();
    let mut out = projects::Fields::default();
    match body.name {
        MaybeUndefined::Value(v) => {
            out.name = fields
                .take("name", Name::parse(&v))
                .map(|n| n.as_str().to_owned());
        }
        MaybeUndefined::Null => fields.reject("name", "cannot be null"),
        MaybeUndefined::Undefined if creating => fields.reject("name", "is required"),
        MaybeUndefined::Undefined => {}
    }
    out.description = optional(
        &mut fields,
        "description",
        body.description,
        long_text(10_000),
    );
    out.archived = body.archived;
    fields.finish()?;
    Ok(out)
}

pub(crate) fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "project_not_found",
        detail: "No project with this id in the organization.".into(),
    }
}

fn team_member_not_found() -> ApiError {
    ApiError::NotFound {
        code: "team_member_not_found",
        detail: "No team member with this id in the organization.".into(),
    }
}

#[OpenApi(tag = "ApiTags::Projects", prefix_path = "/api/v1/projects")]
impl ProjectsApi {
    /// Create a project
    ///
    /// Its health starts at 100 and its velocity at 0. `Idempotency-Key` replays the first
    /// response of a retried request. Needs `projects.manage` (lead).
    #[oai(path = "/", method = "post", operation_id = "projects_create")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewProject>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<ProjectCreated, ApiError> {
        let granted = auth.grant::<ManageProjects>(&state).await?;
        let body = body.0;
        let key = idempotency::Key::parse(idempotency_key.0.as_deref(), "projects_create", &body)?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<Project>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(ProjectCreated::Created(Json(replay), Some(true)));
        }
        let fields = parse(
            ProjectPatch {
                name: MaybeUndefined::Value(body.name),
                description: body
                    .description
                    .map_or(MaybeUndefined::Undefined, MaybeUndefined::Value),
                archived: None,
            },
            true,
        )?;
        let id = projects::insert(
            &mut tx,
            &granted,
            fields.name.as_deref().unwrap_or_default(),
            fields.description.flatten().as_deref(),
        )
        .await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("project.created", &client(req, &state.settings)).on("project", id),
        )
        .await?;
        let project: Project = projects::get(&mut tx, &granted, id)
            .await?
            .ok_or_else(not_found)?
            .into();
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &project).await?;
        }
        tx.commit().await?;
        Ok(ProjectCreated::Created(Json(project), None))
    }

    /// List projects
    ///
    /// Newest first, with their metrics. `archived` picks active (default), archived or all
    /// projects; `q` matches part of the name; `health_below` keeps projects whose health score
    /// is below it. Needs `projects.read` (viewer).
    #[oai(path = "/", method = "get", operation_id = "projects_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// Active (default), archived or all projects.
        archived: Query<Option<ArchivedParam>>,
        /// Part of the name, case-insensitive.
        q: Query<Option<String>>,
        /// Only projects whose health score is below this (0 to 100).
        health_below: Query<Option<f64>>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<ProjectList>, ApiError> {
        let granted = auth.grant::<ReadProjects>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        if let Some(h) = health_below.0
            && !(0.0..=100.0).contains(&h)
        {
            return Err(ApiError::InvalidParameter(crate::error::FieldError {
                field: "health_below".into(),
                message: "must be between 0 and 100".into(),
            }));
        }
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = projects::list(
            &mut tx,
            &granted,
            &projects::Filter {
                archived: match archived.0 {
                    None | Some(ArchivedParam::Active) => projects::Archived::Active,
                    Some(ArchivedParam::Archived) => projects::Archived::Archived,
                    Some(ArchivedParam::All) => projects::Archived::All,
                },
                query: q.0.filter(|q| !q.is_empty()),
                health_below: health_below.0,
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |p| p.id);
        Ok(Json(ProjectList {
            items: rows.into_iter().map(Project::from).collect(),
            next_cursor,
        }))
    }

    /// Get a project
    ///
    /// With its metrics and an `ETag`; `If-None-Match` with it answers 304 while nothing
    /// changed (a task change changes the metrics, and so the tag). Needs `projects.read`
    /// (viewer).
    #[oai(path = "/:id", method = "get", operation_id = "projects_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<Project>, ApiError> {
        let granted = auth.grant::<ReadProjects>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let project: Project = projects::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        tx.commit().await?;
        Ok(etag::found(project, if_none_match.0.as_deref()))
    }

    /// Change a project
    ///
    /// Absent fields stay; `null` clears the description; `archived` archives or restores.
    /// Needs `projects.manage` (lead).
    #[oai(path = "/:id", method = "patch", operation_id = "projects_update")]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
        body: JsonBody<ProjectPatch>,
    ) -> Result<Json<Project>, ApiError> {
        let granted = auth.grant::<ManageProjects>(&state).await?;
        let fields = parse(body.0, false)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !projects::update(&mut tx, &granted, id.0, &fields).await? {
            return Err(not_found());
        }
        if let Some(archived) = fields.archived {
            let action = if archived {
                "project.archived"
            } else {
                "project.restored"
            };
            audit::record_granted(
                &mut tx,
                &granted,
                Entry::new(action, &client(req, &state.settings)).on("project", id.0),
            )
            .await?;
        }
        let project = projects::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Json(project.into()))
    }

    /// Delete a project
    ///
    /// With every task, its work history and assignments. Archive a project instead to keep
    /// them. Needs `projects.manage` (lead). Audited as `project.deleted` with the number of
    /// tasks deleted.
    #[oai(path = "/:id", method = "delete", operation_id = "projects_delete")]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageProjects>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let project = projects::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        let tasks = projects::delete(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("project.deleted", &client(req, &state.settings))
                .on("project", id.0)
                .with(serde_json::json!({ "name": project.name, "tasks_deleted": tasks })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// List a project's members
    ///
    /// The team members on the project, newest directory entries first. Needs `projects.read`
    /// (viewer).
    #[oai(
        path = "/:id/members",
        method = "get",
        operation_id = "project_members_list"
    )]
    async fn members(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// Page size, 1 to 200 (default 50).
        limit: Query<Option<i64>>,
        /// The `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<Json<TeamMemberList>, ApiError> {
        let granted = auth.grant::<ReadProjects>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        projects::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        let rows = projects::members(&mut tx, &granted, id.0, page.before_id, page.fetch()).await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |m| m.id);
        Ok(Json(TeamMemberList {
            items: rows.into_iter().map(TeamMember::from).collect(),
            next_cursor,
        }))
    }

    /// Add a member to a project
    ///
    /// Idempotent: 201 when added, 200 when they already were on it. Needs `projects.manage`
    /// (lead).
    #[oai(
        path = "/:id/members/:team_member_id",
        method = "put",
        operation_id = "project_members_add"
    )]
    async fn add_member(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        team_member_id: Path<Uuid>,
    ) -> Result<MemberAdded, ApiError> {
        let granted = auth.grant::<ManageProjects>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        projects::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        let member: TeamMember = team_members::get(&mut tx, &granted, team_member_id.0)
            .await?
            .ok_or_else(team_member_not_found)?
            .into();
        let added = projects::add_member(&mut tx, &granted, id.0, team_member_id.0).await?;
        tx.commit().await?;
        Ok(if added {
            MemberAdded::Created(Json(member))
        } else {
            MemberAdded::AlreadyMember(Json(member))
        })
    }

    /// Remove a member from a project
    ///
    /// Their task assignments stay. Needs `projects.manage` (lead). Audited as
    /// `project.member_removed`.
    #[oai(
        path = "/:id/members/:team_member_id",
        method = "delete",
        operation_id = "project_members_remove"
    )]
    async fn remove_member(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
        team_member_id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageProjects>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        projects::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        if !projects::remove_member(&mut tx, &granted, id.0, team_member_id.0).await? {
            return Err(ApiError::NotFound {
                code: "project_member_not_found",
                detail: "This team member is not on the project.".into(),
            });
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("project.member_removed", &client(req, &state.settings))
                .on("project", id.0)
                .with(serde_json::json!({ "team_member_id": team_member_id.0 })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}
