//! Projects with their members and the metrics computed from their tasks: a health score and a
//! velocity (tasks done per week).
//!
//! Health is 100 when no open task is in trouble. Each open task (not `done`) costs up to one
//! point of trouble: `critical` health 1, `at_risk` 0.5, past its due time another 0.5; the
//! score is `100 × (1 − trouble / open tasks)`, rounded. Velocity is the number of tasks
//! completed in the last 28 days divided by four.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageProjects, ReadProjects};

/// A project with its computed metrics.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub health_score: f64,
    pub velocity: f64,
    pub backlog: i64,
    pub active: i64,
    pub done: i64,
    pub gap: i64,
    pub overdue: i64,
    pub member_count: i64,
}

/// A create writes every field, a patch the `Some` ones.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub archived: Option<bool>,
}

/// Which projects a list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Archived {
    #[default]
    Active,
    Archived,
    All,
}

/// List filter and page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub archived: Archived,
    /// Part of the name, case-insensitively.
    pub query: Option<String>,
    /// Only projects whose health score is below this.
    pub health_below: Option<f64>,
    pub before_id: Option<Uuid>,
}

/// Creates a project; returns its id.
///
/// # Errors
/// Database errors.
pub async fn insert(
    conn: &mut PgConnection,
    proof: &Granted<ManageProjects>,
    name: &str,
    description: Option<&str>,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        "INSERT INTO projects (organization_id, name, description, created_by)
         VALUES ($1, $2, $3, $4) RETURNING id",
        proof.organization_id(),
        name,
        description,
        proof.actor().user_id(),
    )
    .fetch_one(conn)
    .await
}

/// Projects of the organization with their metrics, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadProjects>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Project>> {
    query(conn, proof.organization_id(), None, filter, limit).await
}

/// One project of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Project>> {
    let filter = Filter {
        archived: Archived::All,
        ..Filter::default()
    };
    Ok(query(conn, proof.organization_id(), Some(id), &filter, 1)
        .await?
        .into_iter()
        .next())
}

async fn query(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Option<Uuid>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Project>> {
    sqlx::query_as!(
        Project,
        r#"
        SELECT p.id, p.name, p.description, p.archived_at, p.created_by, p.created_at, p.updated_at,
               m.health_score AS "health_score!", m.velocity AS "velocity!",
               m.backlog AS "backlog!", m.active AS "active!", m.done AS "done!", m.gap AS "gap!",
               m.overdue AS "overdue!",
               (SELECT count(*) FROM project_members pm
                WHERE pm.organization_id = p.organization_id AND pm.project_id = p.id) AS "member_count!"
        FROM projects p
        CROSS JOIN LATERAL (
            SELECT CASE WHEN s.open = 0 THEN 100.0
                        ELSE round(100.0 * (1.0 - s.trouble / s.open))::float8 END AS health_score,
                   s.recent / 4.0 AS velocity,
                   s.backlog, s.active, s.done, s.gap, s.overdue
            FROM (
                SELECT count(*) FILTER (WHERE t.status <> 'done')::float8 AS open,
                       coalesce(sum(least(1.0,
                           CASE t.health_status WHEN 'critical' THEN 1.0 WHEN 'at_risk' THEN 0.5 ELSE 0.0 END
                           + CASE WHEN t.due_at < now() THEN 0.5 ELSE 0.0 END))
                           FILTER (WHERE t.status <> 'done'), 0)::float8 AS trouble,
                       count(*) FILTER (WHERE t.completed_at > now() - interval '28 days')::float8 AS recent,
                       count(*) FILTER (WHERE t.status = 'backlog') AS backlog,
                       count(*) FILTER (WHERE t.status = 'active') AS active,
                       count(*) FILTER (WHERE t.status = 'done') AS done,
                       count(*) FILTER (WHERE t.status = 'gap') AS gap,
                       count(*) FILTER (WHERE t.status <> 'done' AND t.due_at < now()) AS overdue
                FROM tasks t
                WHERE t.organization_id = p.organization_id AND t.project_id = p.id
            ) s
        ) m
        WHERE p.organization_id = $1
          AND ($2::uuid IS NULL OR p.id = $2)
          AND ($3::text = 'all' OR ($3 = 'archived') = (p.archived_at IS NOT NULL))
          AND ($4::text IS NULL OR p.name ILIKE '%' || $4 || '%')
          AND ($5::float8 IS NULL OR m.health_score < $5)
          AND ($6::uuid IS NULL OR p.id < $6)
        ORDER BY p.id DESC
        LIMIT $7
        "#,
        organization_id,
        id,
        match filter.archived {
            Archived::Active => "active",
            Archived::Archived => "archived",
            Archived::All => "all",
        },
        filter.query.as_deref().map(super::like_literal),
        filter.health_below,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Applies the `Some` fields; `false` when there is no such project.
///
/// # Errors
/// Database errors.
pub async fn update(
    conn: &mut PgConnection,
    proof: &Granted<ManageProjects>,
    id: Uuid,
    fields: &Fields,
) -> sqlx::Result<bool> {
    let updated = sqlx::query!(
        r#"
        UPDATE projects SET
            name = coalesce($3, name),
            description = CASE WHEN $4 THEN $5 ELSE description END,
            archived_at = CASE WHEN $6::bool IS NULL THEN archived_at
                               WHEN $6 THEN coalesce(archived_at, now())
                               ELSE NULL END
        WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
        fields.name,
        fields.description.is_some(),
        fields.description.clone().flatten(),
        fields.archived,
    )
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() > 0)
}

/// Deletes a project with its tasks, their history and assignments; returns how many tasks
/// went with it, or `None` when there is no such project.
///
/// # Errors
/// Database errors.
pub async fn delete(
    conn: &mut PgConnection,
    proof: &Granted<ManageProjects>,
    id: Uuid,
) -> sqlx::Result<Option<i64>> {
    let tasks = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM tasks WHERE organization_id = $1 AND project_id = $2"#,
        proof.organization_id(),
        id,
    )
    .fetch_one(&mut *conn)
    .await?;
    let deleted = sqlx::query!(
        "DELETE FROM projects WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await?;
    Ok((deleted.rows_affected() > 0).then_some(tasks))
}

/// Adds a team member to a project; `true` when newly added, `false` when already there.
///
/// # Errors
/// Database errors (the caller checks both ids exist first).
pub async fn add_member(
    conn: &mut PgConnection,
    proof: &Granted<ManageProjects>,
    project_id: Uuid,
    team_member_id: Uuid,
) -> sqlx::Result<bool> {
    let inserted = sqlx::query!(
        "INSERT INTO project_members (organization_id, project_id, team_member_id)
         VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        proof.organization_id(),
        project_id,
        team_member_id,
    )
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Removes a team member from a project; `false` when they were not on it.
///
/// # Errors
/// Database errors.
pub async fn remove_member(
    conn: &mut PgConnection,
    proof: &Granted<ManageProjects>,
    project_id: Uuid,
    team_member_id: Uuid,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query!(
        "DELETE FROM project_members
         WHERE organization_id = $1 AND project_id = $2 AND team_member_id = $3",
        proof.organization_id(),
        project_id,
        team_member_id,
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// The team members on a project (newest directory entries first), a page at a time.
///
/// # Errors
/// Database errors.
pub async fn members(
    conn: &mut PgConnection,
    proof: &Granted<ReadProjects>,
    project_id: Uuid,
    before_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<super::team_members::Member>> {
    sqlx::query_as!(
        super::team_members::Member,
        r#"
        SELECT m.id, m.user_id, m.name, m.email, m.role, m.department, m.avatar_url, m.time_zone,
               m.work_starts_at, m.work_ends_at, m.working_days, m.created_at, m.updated_at
        FROM project_members pm
        JOIN team_members m ON m.organization_id = pm.organization_id AND m.id = pm.team_member_id
        WHERE pm.organization_id = $1 AND pm.project_id = $2 AND ($3::uuid IS NULL OR m.id < $3)
        ORDER BY m.id DESC
        LIMIT $4
        "#,
        proof.organization_id(),
        project_id,
        before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}
