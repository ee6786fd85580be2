//! Tasks: board cards with details and health, moved between the `backlog`, `active`, `done` and
//! `gap` columns in a stable order; their append-only work history and their assignees.
//!
//! Order within a column is a `numeric` position. A move takes the midpoint of its neighbours;
//! when two neighbours share a position (or the midpoint cannot fall strictly between them),
//! the column is renumbered first. Moves within a project are serialised by a lock on the
//! project row, so two concurrent moves never interleave their reads and writes.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{DeleteTasks, Granted, ReadProjects, WriteTasks};

/// A task as stored, with its assignees (team member ids, in assignment order).
#[derive(Debug, Clone)]
pub struct Task {
    pub id: Uuid,
    pub project_id: Uuid,
    pub title: String,
    pub description: Option<String>,
    pub status: String,
    pub contact_person: Option<String>,
    pub people_count: i32,
    pub process_stage: String,
    pub health_status: String,
    pub due_at: Option<DateTime<Utc>>,
    pub last_activity_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub assignee_ids: Vec<Uuid>,
}

/// The details a create writes and a patch changes (`Some` fields only).
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub title: Option<String>,
    pub description: Option<Option<String>>,
    pub contact_person: Option<Option<String>>,
    pub people_count: Option<i32>,
    pub process_stage: Option<String>,
    pub health_status: Option<String>,
    pub due_at: Option<Option<DateTime<Utc>>>,
}

impl Fields {
    /// The names of the fields a patch sets, for the work history.
    pub fn names(&self) -> Vec<&'static str> {
        [
            ("title", self.title.is_some()),
            ("description", self.description.is_some()),
            ("contact_person", self.contact_person.is_some()),
            ("people_count", self.people_count.is_some()),
            ("process_stage", self.process_stage.is_some()),
            ("health_status", self.health_status.is_some()),
            ("due_at", self.due_at.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }
}

/// List filter and page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub project_id: Option<Uuid>,
    pub status: Option<String>,
    pub assignee_id: Option<Uuid>,
    pub health_status: Option<String>,
    pub process_stage: Option<String>,
    pub updated_after: Option<DateTime<Utc>>,
    pub updated_before: Option<DateTime<Utc>>,
    pub due_before: Option<DateTime<Utc>>,
    /// Part of the title, case-insensitively.
    pub query: Option<String>,
    pub before_id: Option<Uuid>,
}

/// Where a moved task lands in its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// At the bottom.
    Bottom,
    /// At the top.
    Top,
    /// Right after this task of the column.
    After(Uuid),
    /// Right before this task of the column.
    Before(Uuid),
}

/// Why a move was refused.
#[derive(Debug, thiserror::Error)]
pub enum MoveError {
    #[error("no such task")]
    NotFound,
    #[error("the anchor is not another task of the target column")]
    BadAnchor,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A move that happened: the column before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    pub project_id: Uuid,
    pub from: String,
    pub to: String,
}

/// One entry of a task's work history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    pub id: Uuid,
    pub actor_user_id: Option<Uuid>,
    pub action: String,
    pub details: Value,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// Locks the project row so that moves and creates in it are serialised; `false` when the
/// organization has no such project.
async fn lock_project(
    conn: &mut PgConnection,
    organization_id: Uuid,
    project_id: Uuid,
) -> sqlx::Result<bool> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM projects WHERE organization_id = $1 AND id = $2 FOR NO KEY UPDATE",
        organization_id,
        project_id,
    )
    .fetch_optional(conn)
    .await?
    .is_some())
}

/// Appends to a task's work history.
async fn record(
    conn: &mut PgConnection,
    organization_id: Uuid,
    task_id: Uuid,
    actor_user_id: Option<Uuid>,
    action: &str,
    details: &Value,
    occurred_at: Option<DateTime<Utc>>,
) -> sqlx::Result<HistoryEntry> {
    sqlx::query_as!(
        HistoryEntry,
        "INSERT INTO task_work_history (organization_id, task_id, actor_user_id, action, details, occurred_at)
         VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))
         RETURNING id, actor_user_id, action, details, occurred_at, created_at",
        organization_id,
        task_id,
        actor_user_id,
        action,
        details,
        occurred_at,
    )
    .fetch_one(conn)
    .await
}

/// Creates a task at the bottom of its column, with a `created` history entry; `None` when the
/// organization has no such project.
///
/// # Errors
/// Database errors.
pub async fn insert(
    conn: &mut PgConnection,
    proof: &Granted<WriteTasks>,
    project_id: Uuid,
    status: &str,
    fields: &Fields,
) -> sqlx::Result<Option<Uuid>> {
    let organization_id = proof.organization_id();
    if !lock_project(conn, organization_id, project_id).await? {
        return Ok(None);
    }
    let id = sqlx::query_scalar!(
        r#"
        INSERT INTO tasks (organization_id, project_id, title, description, status, position,
                           contact_person, people_count, process_stage, health_status, due_at,
                           completed_at, created_by)
        SELECT $1, $2, $3, $4, $5,
               coalesce((SELECT max(position) FROM tasks
                         WHERE organization_id = $1 AND project_id = $2 AND status = $5), 0) + 1,
               $6, coalesce($7, 0), coalesce($8, 'planning'), coalesce($9, 'healthy'), $10,
               CASE WHEN $5 = 'done' THEN now() END, $11
        RETURNING id
        "#,
        organization_id,
        project_id,
        fields.title,
        fields.description.clone().flatten(),
        status,
        fields.contact_person.clone().flatten(),
        fields.people_count,
        fields.process_stage,
        fields.health_status,
        fields.due_at.flatten(),
        proof.actor().user_id(),
    )
    .fetch_one(&mut *conn)
    .await?;
    record(
        conn,
        organization_id,
        id,
        proof.actor().user_id(),
        "created",
        &serde_json::json!({ "status": status }),
        None,
    )
    .await?;
    Ok(Some(id))
}

/// Tasks of the organization, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadProjects>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Task>> {
    query(conn, proof.organization_id(), None, filter, limit).await
}

/// One task of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Task>> {
    Ok(query(
        conn,
        proof.organization_id(),
        Some(id),
        &Filter::default(),
        1,
    )
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
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_as!(
        Task,
        r#"
        SELECT t.id, t.project_id, t.title, t.description, t.status, t.contact_person,
               t.people_count, t.process_stage, t.health_status, t.due_at, t.last_activity_at,
               t.completed_at, t.created_by, t.created_at, t.updated_at,
               ARRAY(SELECT a.team_member_id FROM task_assignments a
                     WHERE a.organization_id = t.organization_id AND a.task_id = t.id
                     ORDER BY a.assigned_at, a.team_member_id) AS "assignee_ids!"
        FROM tasks t
        WHERE t.organization_id = $1
          AND ($2::uuid IS NULL OR t.id = $2)
          AND ($3::uuid IS NULL OR t.project_id = $3)
          AND ($4::text IS NULL OR t.status = $4)
          AND ($5::uuid IS NULL OR EXISTS (
                SELECT 1 FROM task_assignments a
                WHERE a.organization_id = t.organization_id AND a.task_id = t.id AND a.team_member_id = $5))
          AND ($6::text IS NULL OR t.health_status = $6)
          AND ($7::text IS NULL OR t.process_stage = $7)
          AND ($8::timestamptz IS NULL OR t.updated_at >= $8)
          AND ($9::timestamptz IS NULL OR t.updated_at < $9)
          AND ($10::timestamptz IS NULL OR t.due_at < $10)
          AND ($11::text IS NULL OR t.title ILIKE '%' || $11 || '%')
          AND ($12::uuid IS NULL OR t.id < $12)
        ORDER BY t.id DESC
        LIMIT $13
        "#,
        organization_id,
        id,
        filter.project_id,
        filter.status,
        filter.assignee_id,
        filter.health_status,
        filter.process_stage,
        filter.updated_after,
        filter.updated_before,
        filter.due_before,
        filter.query.as_deref().map(super::like_literal),
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// A project's board: up to `per_column` tasks of each column in board order.
///
/// # Errors
/// Database errors.
pub async fn board(
    conn: &mut PgConnection,
    proof: &Granted<ReadProjects>,
    project_id: Uuid,
    per_column: i64,
) -> sqlx::Result<Vec<Task>> {
    sqlx::query_as!(
        Task,
        r#"
        SELECT t.id, t.project_id, t.title, t.description, t.status, t.contact_person,
               t.people_count, t.process_stage, t.health_status, t.due_at, t.last_activity_at,
               t.completed_at, t.created_by, t.created_at, t.updated_at,
               ARRAY(SELECT a.team_member_id FROM task_assignments a
                     WHERE a.organization_id = t.organization_id AND a.task_id = t.id
                     ORDER BY a.assigned_at, a.team_member_id) AS "assignee_ids!"
        FROM (
            SELECT *, row_number() OVER (PARTITION BY status ORDER BY position, id) AS rank
            FROM tasks WHERE organization_id = $1 AND project_id = $2
        ) t
        WHERE t.rank <= $3
        ORDER BY t.status, t.position, t.id
        "#,
        proof.organization_id(),
        project_id,
        per_column,
    )
    .fetch_all(conn)
    .await
}

/// Applies the `Some` details and records which changed; `false` when there is no such task.
///
/// # Errors
/// Database errors.
pub async fn update(
    conn: &mut PgConnection,
    proof: &Granted<WriteTasks>,
    id: Uuid,
    fields: &Fields,
) -> sqlx::Result<bool> {
    let organization_id = proof.organization_id();
    let updated = sqlx::query!(
        r#"
        UPDATE tasks SET
            title = coalesce($3, title),
            description = CASE WHEN $4 THEN $5 ELSE description END,
            contact_person = CASE WHEN $6 THEN $7 ELSE contact_person END,
            people_count = coalesce($8, people_count),
            process_stage = coalesce($9, process_stage),
            health_status = coalesce($10, health_status),
            due_at = CASE WHEN $11 THEN $12 ELSE due_at END,
            last_activity_at = now()
        WHERE organization_id = $1 AND id = $2
        "#,
        organization_id,
        id,
        fields.title,
        fields.description.is_some(),
        fields.description.clone().flatten(),
        fields.contact_person.is_some(),
        fields.contact_person.clone().flatten(),
        fields.people_count,
        fields.process_stage,
        fields.health_status,
        fields.due_at.is_some(),
        fields.due_at.flatten(),
    )
    .execute(&mut *conn)
    .await?;
    if updated.rows_affected() == 0 {
        return Ok(false);
    }
    record(
        conn,
        organization_id,
        id,
        proof.actor().user_id(),
        "updated",
        &serde_json::json!({ "fields": fields.names() }),
        None,
    )
    .await?;
    Ok(true)
}

/// The positions between which a task lands: (`lo`, `hi`) as decimal text, either open.
async fn bounds(
    conn: &mut PgConnection,
    organization_id: Uuid,
    project_id: Uuid,
    status: &str,
    task_id: Uuid,
    place: Place,
) -> Result<(Option<String>, Option<String>), MoveError> {
    let (anchor, after) = match place {
        Place::Bottom | Place::Top => (None, matches!(place, Place::Bottom)),
        Place::After(a) => (Some(a), true),
        Place::Before(b) => (Some(b), false),
    };
    if anchor == Some(task_id) {
        return Err(MoveError::BadAnchor);
    }
    let row = sqlx::query!(
        r#"
        WITH anchor AS (
            SELECT position, id FROM tasks
            WHERE organization_id = $1 AND project_id = $2 AND status = $3 AND id = $5
        ), column_tasks AS (
            SELECT position, id FROM tasks
            WHERE organization_id = $1 AND project_id = $2 AND status = $3 AND id <> $4
        )
        SELECT
            ($5::uuid IS NULL OR EXISTS (SELECT 1 FROM anchor)) AS "anchor_found!",
            CASE WHEN $5::uuid IS NULL THEN
                     CASE WHEN $6 THEN (SELECT max(position) FROM column_tasks) END
                 WHEN $6 THEN (SELECT position FROM anchor)
                 ELSE (SELECT c.position FROM column_tasks c, anchor a
                       WHERE (c.position, c.id) < (a.position, a.id)
                       ORDER BY c.position DESC, c.id DESC LIMIT 1)
            END::text AS lo,
            CASE WHEN $5::uuid IS NULL THEN
                     CASE WHEN NOT $6 THEN (SELECT min(position) FROM column_tasks) END
                 WHEN $6 THEN (SELECT c.position FROM column_tasks c, anchor a
                               WHERE (c.position, c.id) > (a.position, a.id)
                               ORDER BY c.position, c.id LIMIT 1)
                 ELSE (SELECT position FROM anchor)
            END::text AS hi
        "#,
        organization_id,
        project_id,
        status,
        task_id,
        anchor,
        after,
    )
    .fetch_one(conn)
    .await?;
    if !row.anchor_found {
        return Err(MoveError::BadAnchor);
    }
    Ok((row.lo, row.hi))
}

/// Moves a task to `status` at `place`, completing or reopening it as the column says, with a
/// `status_changed` history entry when the column changed.
///
/// # Errors
/// [`MoveError::NotFound`], [`MoveError::BadAnchor`]; database errors.
pub async fn move_to(
    conn: &mut PgConnection,
    proof: &Granted<WriteTasks>,
    id: Uuid,
    status: &str,
    place: Place,
) -> Result<Moved, MoveError> {
    let organization_id = proof.organization_id();
    let project_id = sqlx::query_scalar!(
        "SELECT project_id FROM tasks WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(MoveError::NotFound)?;
    lock_project(conn, organization_id, project_id).await?;
    let from = sqlx::query_scalar!(
        "SELECT status FROM tasks WHERE organization_id = $1 AND id = $2 FOR UPDATE",
        organization_id,
        id,
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(MoveError::NotFound)?;
    let mut renumbered = false;
    let position = loop {
        let (lo, hi) = bounds(conn, organization_id, project_id, status, id, place).await?;
        let placed = sqlx::query!(
            r#"
            SELECT mid::text AS "mid!", (lo IS NULL OR mid > lo) AND (hi IS NULL OR mid < hi) AS "fits!"
            FROM (
                SELECT lo, hi,
                       CASE WHEN lo IS NULL AND hi IS NULL THEN 1
                            WHEN hi IS NULL THEN lo + 1
                            WHEN lo IS NULL THEN hi - 1
                            ELSE (lo + hi) / 2 END AS mid
                FROM (SELECT $1::text::numeric AS lo, $2::text::numeric AS hi) b
            ) m
            "#,
            lo,
            hi,
        )
        .fetch_one(&mut *conn)
        .await?;
        if placed.fits || renumbered {
            break placed.mid;
        }
        // Neighbours share a position, or the midpoint ran out of digits: 1, 2, 3, … again.
        sqlx::query!(
            r#"
            UPDATE tasks t SET position = r.rank
            FROM (SELECT id, row_number() OVER (ORDER BY position, id) AS rank
                  FROM tasks
                  WHERE organization_id = $1 AND project_id = $2 AND status = $3 AND id <> $4) r
            WHERE t.organization_id = $1 AND t.id = r.id
            "#,
            organization_id,
            project_id,
            status,
            id,
        )
        .execute(&mut *conn)
        .await?;
        renumbered = true;
    };
    sqlx::query!(
        r#"
        UPDATE tasks SET
            status = $3,
            position = $4::text::numeric,
            completed_at = CASE WHEN $3 = 'done' THEN coalesce(completed_at, now()) END,
            last_activity_at = CASE WHEN status <> $3 THEN now() ELSE last_activity_at END
        WHERE organization_id = $1 AND id = $2
        "#,
        organization_id,
        id,
        status,
        position,
    )
    .execute(&mut *conn)
    .await?;
    if from != status {
        record(
            conn,
            organization_id,
            id,
            proof.actor().user_id(),
            "status_changed",
            &serde_json::json!({ "from": from, "to": status }),
            None,
        )
        .await?;
    }
    Ok(Moved {
        project_id,
        from,
        to: status.to_owned(),
    })
}

/// Deletes a task with its history and assignments; `false` when there is no such task.
///
/// # Errors
/// Database errors.
pub async fn delete(
    conn: &mut PgConnection,
    proof: &Granted<DeleteTasks>,
    id: Uuid,
) -> sqlx::Result<bool> {
    let deleted = sqlx::query!(
        "DELETE FROM tasks WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await?;
    Ok(deleted.rows_affected() > 0)
}

/// A task's work history, newest first.
///
/// # Errors
/// Database errors.
pub async fn history(
    conn: &mut PgConnection,
    proof: &Granted<ReadProjects>,
    task_id: Uuid,
    before_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<HistoryEntry>> {
    sqlx::query_as!(
        HistoryEntry,
        r#"
        SELECT id, actor_user_id, action, details, occurred_at, created_at
        FROM task_work_history
        WHERE organization_id = $1 AND task_id = $2 AND ($3::uuid IS NULL OR id < $3)
        ORDER BY id DESC
        LIMIT $4
        "#,
        proof.organization_id(),
        task_id,
        before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Logs work on a task (a note, time spent), which counts as activity on it; `None` when
/// there is no such task.
///
/// # Errors
/// Database errors.
pub async fn log_work(
    conn: &mut PgConnection,
    proof: &Granted<WriteTasks>,
    task_id: Uuid,
    action: &str,
    details: &Value,
    occurred_at: Option<DateTime<Utc>>,
) -> sqlx::Result<Option<HistoryEntry>> {
    let organization_id = proof.organization_id();
    let touched = sqlx::query!(
        "UPDATE tasks SET last_activity_at = greatest(last_activity_at, coalesce($3, now()))
         WHERE organization_id = $1 AND id = $2",
        organization_id,
        task_id,
        occurred_at,
    )
    .execute(&mut *conn)
    .await?;
    if touched.rows_affected() == 0 {
        return Ok(None);
    }
    record(
        conn,
        organization_id,
        task_id,
        proof.actor().user_id(),
        action,
        details,
        occurred_at,
    )
    .await
    .map(Some)
}

/// Assigns a team member to a task (recorded in the history); `true` when newly assigned,
/// `false` when they already were.
///
/// # Errors
/// Database errors (the caller checks that both exist first).
pub async fn assign(
    conn: &mut PgConnection,
    proof: &Granted<WriteTasks>,
    task_id: Uuid,
    team_member_id: Uuid,
) -> sqlx::Result<bool> {
    let organization_id = proof.organization_id();
    let inserted = sqlx::query!(
        "INSERT INTO task_assignments (organization_id, task_id, team_member_id, assigned_by)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        organization_id,
        task_id,
        team_member_id,
        proof.actor().user_id(),
    )
    .execute(&mut *conn)
    .await?;
    if inserted.rows_affected() == 0 {
        return Ok(false);
    }
    record(
        conn,
        organization_id,
        task_id,
        proof.actor().user_id(),
        "assigned",
        &serde_json::json!({ "team_member_id": team_member_id }),
        None,
    )
    .await?;
    Ok(true)
}

/// Unassigns a team member (recorded in the history); `false` when they were not assigned.
///
/// # Errors
/// Database errors.
pub async fn unassign(
    conn: &mut PgConnection,
    proof: &Granted<WriteTasks>,
    task_id: Uuid,
    team_member_id: Uuid,
) -> sqlx::Result<bool> {
    let organization_id = proof.organization_id();
    let deleted = sqlx::query!(
        "DELETE FROM task_assignments
         WHERE organization_id = $1 AND task_id = $2 AND team_member_id = $3",
        organization_id,
        task_id,
        team_member_id,
    )
    .execute(&mut *conn)
    .await?;
    if deleted.rows_affected() == 0 {
        return Ok(false);
    }
    record(
        conn,
        organization_id,
        task_id,
        proof.actor().user_id(),
        "unassigned",
        &serde_json::json!({ "team_member_id": team_member_id }),
        None,
    )
    .await?;
    Ok(true)
}

/// An active task without activity for too long, with who works on it and what happened last.
#[derive(Debug, Clone)]
pub struct StuckTask {
    pub id: Uuid,
    pub title: String,
    pub project_name: String,
    pub health_status: String,
    pub last_activity_at: DateTime<Utc>,
    pub assignee_names: Vec<String>,
    pub assignee_emails: Vec<String>,
    /// Its last five history entries (`action`, `details`, `occurred_at`), newest first.
    pub recent: Value,
    /// The role its latest `task_escalated` activity entry reached, if any.
    pub escalated_to: Option<crate::access::Role>,
}

/// Which stuck tasks an agent looks at.
#[derive(Debug, Clone, Copy)]
pub struct StuckFilter {
    /// Hours without activity.
    pub idle_hours: i32,
    /// Only tasks whose health is `critical`.
    pub critical_only: bool,
    /// Tasks with an activity entry of this action within `quiet_hours` are left out.
    pub quiet_after: crate::agents::ActivityAction,
    pub quiet_hours: i32,
}

/// The organization's active tasks idle for more than `filter.idle_hours` and not acted on
/// within `filter.quiet_hours` (an activity entry), longest idle first (the platform's read,
/// for the task monitor and the escalator).
///
/// # Errors
/// Database errors.
pub async fn stuck(
    conn: &mut PgConnection,
    organization_id: Uuid,
    filter: StuckFilter,
    limit: i64,
) -> sqlx::Result<Vec<StuckTask>> {
    sqlx::query_as!(
        StuckTask,
        r#"
        SELECT t.id, t.title, p.name AS project_name, t.health_status, t.last_activity_at,
               coalesce(array_agg(m.name ORDER BY m.name) FILTER (WHERE m.id IS NOT NULL), '{}')
                   AS "assignee_names!",
               coalesce(array_agg(m.email ORDER BY m.name) FILTER (WHERE m.id IS NOT NULL), '{}')
                   AS "assignee_emails!",
               coalesce((SELECT jsonb_agg(jsonb_build_object('action', h.action, 'details', h.details,
                                                              'occurred_at', h.occurred_at))
                         FROM (SELECT action, details, occurred_at FROM task_work_history
                               WHERE organization_id = $1 AND task_id = t.id
                               ORDER BY occurred_at DESC LIMIT 5) h), '[]') AS "recent!",
               (SELECT x.context->>'level' FROM agent_activity x
                WHERE x.organization_id = $1 AND x.action = 'task_escalated'
                  AND x.context->>'task_id' = t.id::text
                ORDER BY x.created_at DESC LIMIT 1) AS "escalated_to: crate::access::Role"
        FROM tasks t
        JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id
        LEFT JOIN task_assignments a ON a.organization_id = t.organization_id AND a.task_id = t.id
        LEFT JOIN team_members m ON m.organization_id = a.organization_id AND m.id = a.team_member_id
        WHERE t.organization_id = $1 AND t.status = 'active' AND p.archived_at IS NULL
          AND t.last_activity_at < now() - make_interval(hours => $2)
          AND (NOT $3 OR t.health_status = 'critical')
          AND NOT EXISTS (
              SELECT 1 FROM agent_activity x
              WHERE x.organization_id = $1 AND x.action = $4
                AND x.context->>'task_id' = t.id::text
                AND x.created_at > now() - make_interval(hours => $5))
        GROUP BY t.id, p.name
        ORDER BY t.last_activity_at
        LIMIT $6
        "#,
        organization_id,
        filter.idle_hours,
        filter.critical_only,
        filter.quiet_after as crate::agents::ActivityAction,
        filter.quiet_hours,
        limit,
    )
    .fetch_all(conn)
    .await
}
