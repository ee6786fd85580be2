//! Reminders of the team coordinator (tasks due soon) and the timesheet reminder (the close of
//! a member's week): who is due one, and `reminders_sent`, the record that keeps each from being
//! sent twice. Platform reads and writes, scoped to one organization by the caller.

use chrono::{DateTime, NaiveTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

/// What a reminder is about (`reminders_sent.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum ReminderKind {
    /// A task due within a day; the period is its due time (Unix seconds).
    TaskDue,
    /// The close of a member's week; the period is the ISO week (`2026-W48`).
    Timesheet,
}

/// A team member's working time: zone, days (ISO, Monday = 1) and hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkingTime {
    pub time_zone: String,
    pub working_days: Vec<i16>,
    pub work_starts_at: Option<NaiveTime>,
    pub work_ends_at: Option<NaiveTime>,
}

impl WorkingTime {
    fn new(
        time_zone: String,
        working_days: Vec<i16>,
        work_starts_at: Option<NaiveTime>,
        work_ends_at: Option<NaiveTime>,
    ) -> Self {
        Self {
            time_zone,
            working_days,
            work_starts_at,
            work_ends_at,
        }
    }
}

/// An assignee of an open task due within a day, not reminded of it yet.
#[derive(Debug, Clone)]
pub struct DueTask {
    pub task_id: Uuid,
    pub title: String,
    pub due_at: DateTime<Utc>,
    pub project_name: String,
    pub member_id: Uuid,
    pub member_name: String,
    pub email: String,
    pub working: WorkingTime,
    /// The reminder's period: the due time in Unix seconds as Postgres rounds it (the records
    /// of every earlier pass were written so), so a task moved to a new due time is reminded
    /// again.
    pub period: String,
}

/// The organization's assignees of open tasks (of active projects) due after `now` and within
/// a day, not reminded of that due time yet, soonest first.
///
/// # Errors
/// Database errors.
pub async fn due_tasks(
    conn: &mut PgConnection,
    organization_id: Uuid,
    now: DateTime<Utc>,
    limit: i64,
) -> sqlx::Result<Vec<DueTask>> {
    let rows = sqlx::query!(
        r#"
        SELECT t.id AS task_id, t.title, t.due_at AS "due_at!", p.name AS project_name,
               m.id AS member_id, m.name AS member_name, m.email, m.time_zone, m.working_days,
               m.work_starts_at, m.work_ends_at,
               extract(epoch FROM t.due_at)::bigint::text AS "period!"
        FROM tasks t
        JOIN projects p ON p.organization_id = t.organization_id AND p.id = t.project_id
        JOIN task_assignments a ON a.organization_id = t.organization_id AND a.task_id = t.id
        JOIN team_members m ON m.organization_id = a.organization_id AND m.id = a.team_member_id
        WHERE t.organization_id = $1 AND t.status <> 'done' AND p.archived_at IS NULL
          AND t.due_at > $2 AND t.due_at <= $2 + interval '24 hours'
          AND NOT EXISTS (
              SELECT 1 FROM reminders_sent r
              WHERE r.organization_id = t.organization_id AND r.kind = 'task_due'
                AND r.subject_id = t.id AND r.team_member_id = m.id
                AND r.period = extract(epoch FROM t.due_at)::bigint::text)
        ORDER BY t.due_at, m.id
        LIMIT $3
        "#,
        organization_id,
        now,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DueTask {
            task_id: r.task_id,
            title: r.title,
            due_at: r.due_at,
            project_name: r.project_name,
            member_id: r.member_id,
            member_name: r.member_name,
            email: r.email,
            working: WorkingTime::new(
                r.time_zone,
                r.working_days,
                r.work_starts_at,
                r.work_ends_at,
            ),
            period: r.period,
        })
        .collect())
}

/// A team member, with their working time and login.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub name: String,
    pub email: String,
    pub working: WorkingTime,
}

/// The organization's team members after `after` (by id), `limit` of them.
///
/// # Errors
/// Database errors.
pub async fn members(
    conn: &mut PgConnection,
    organization_id: Uuid,
    after: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<Member>> {
    let rows = sqlx::query!(
        r#"
        SELECT id, user_id, name, email, time_zone, work_starts_at, work_ends_at, working_days
        FROM team_members
        WHERE organization_id = $1 AND id > $2
        ORDER BY id
        LIMIT $3
        "#,
        organization_id,
        after,
        limit,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Member {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            email: r.email,
            working: WorkingTime::new(
                r.time_zone,
                r.working_days,
                r.work_starts_at,
                r.work_ends_at,
            ),
        })
        .collect())
}

/// The `(team member, period)` pairs of the organization's reminders of `kind` recorded since
/// `since`: what a pass skips, read once.
///
/// # Errors
/// Database errors.
pub async fn sent_since(
    conn: &mut PgConnection,
    organization_id: Uuid,
    kind: ReminderKind,
    since: DateTime<Utc>,
) -> sqlx::Result<std::collections::HashSet<(Uuid, String)>> {
    let rows = sqlx::query!(
        r#"
        SELECT team_member_id, period FROM reminders_sent
        WHERE organization_id = $1 AND kind = $2 AND sent_at >= $3
        "#,
        organization_id,
        kind as ReminderKind,
        since,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.team_member_id, r.period))
        .collect())
}

/// Records a reminder; `false` when it was recorded already (then send nothing). Call it in the
/// transaction that enqueues the reminder's email.
///
/// # Errors
/// Database errors.
pub async fn record(
    conn: &mut PgConnection,
    organization_id: Uuid,
    kind: ReminderKind,
    subject_id: Uuid,
    team_member_id: Uuid,
    period: &str,
) -> sqlx::Result<bool> {
    let id = sqlx::query_scalar!(
        r#"
        INSERT INTO reminders_sent (organization_id, kind, subject_id, team_member_id, period)
        VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING id
        "#,
        organization_id,
        kind as ReminderKind,
        subject_id,
        team_member_id,
        period,
    )
    .fetch_optional(conn)
    .await?;
    Ok(id.is_some())
}

/// A member's week as the timesheet reminder drafts it: minutes logged, the work logged per
/// task and day, and the tasks they finished.
#[derive(Debug, Clone)]
pub struct Week {
    pub minutes: i64,
    /// `[{task, day, minutes, note}]`, oldest first.
    pub work: Value,
    /// `[{task, completed_on}]`.
    pub finished: Value,
}

/// The week since `since` of the member with login `user_id` (work is logged by users) and
/// team entry `member_id` (tasks are assigned to team entries).
///
/// # Errors
/// Database errors.
pub async fn week(
    conn: &mut PgConnection,
    organization_id: Uuid,
    member_id: Uuid,
    user_id: Option<Uuid>,
    since: DateTime<Utc>,
) -> sqlx::Result<Week> {
    let row = sqlx::query!(
        r#"
        SELECT
            (SELECT coalesce(sum((h.details->>'minutes')::bigint), 0)::bigint
             FROM task_work_history h
             WHERE h.organization_id = $1 AND h.actor_user_id = $3 AND h.action = 'work_logged'
               AND h.occurred_at >= $4) AS "minutes!",
            (SELECT coalesce(jsonb_agg(jsonb_build_object(
                        'task', t.title, 'day', h.occurred_at::date,
                        'minutes', (h.details->>'minutes')::bigint, 'note', h.details->'note')
                        ORDER BY h.occurred_at), '[]')
             FROM task_work_history h
             JOIN tasks t ON t.organization_id = h.organization_id AND t.id = h.task_id
             WHERE h.organization_id = $1 AND h.actor_user_id = $3 AND h.action = 'work_logged'
               AND h.occurred_at >= $4) AS "work!",
            (SELECT coalesce(jsonb_agg(jsonb_build_object('task', t.title,
                                                          'completed_on', t.completed_at::date)
                                       ORDER BY t.completed_at), '[]')
             FROM tasks t
             JOIN task_assignments a ON a.organization_id = t.organization_id AND a.task_id = t.id
             WHERE t.organization_id = $1 AND a.team_member_id = $2 AND t.completed_at >= $4)
                AS "finished!"
        "#,
        organization_id,
        member_id,
        user_id,
        since,
    )
    .fetch_one(conn)
    .await?;
    Ok(Week {
        minutes: row.minutes,
        work: row.work,
        finished: row.finished,
    })
}
