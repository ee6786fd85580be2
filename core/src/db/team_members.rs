//! The team directory: people of an organization with their role, department and working hours
//! in their own time zone (they need not have a login).

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageTeam, ReadTeam};

/// A team member as stored.
#[derive(Debug, Clone)]
pub struct Member {
    pub id: Uuid,
    pub user_id: Option<Uuid>,
    pub name: String,
    pub email: String,
    pub role: Option<String>,
    pub department: Option<String>,
    pub avatar_url: Option<String>,
    pub time_zone: String,
    pub work_starts_at: Option<NaiveTime>,
    pub work_ends_at: Option<NaiveTime>,
    pub working_days: Vec<i16>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Every field of a member, parsed; a create writes all of them, a patch the `Some` ones.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub name: Option<String>,
    pub email: Option<String>,
    pub role: Option<Option<String>>,
    pub department: Option<Option<String>>,
    pub avatar_url: Option<Option<String>>,
    pub time_zone: Option<String>,
    /// Start and end together, or neither.
    pub hours: Option<Option<(NaiveTime, NaiveTime)>>,
    pub working_days: Option<Vec<i16>>,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no such team member")]
    NotFound,
    #[error("another team member has this email address")]
    DuplicateEmail,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn write_error(e: sqlx::Error) -> WriteError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            WriteError::DuplicateEmail
        }
        _ => WriteError::Database(e),
    }
}

/// Creates a member from `fields` (name and email required by the caller); returns its id.
///
/// # Errors
/// [`WriteError::DuplicateEmail`]; database errors.
pub async fn insert(
    conn: &mut PgConnection,
    proof: &Granted<ManageTeam>,
    fields: &Fields,
) -> Result<Uuid, WriteError> {
    let hours = fields.hours.flatten();
    sqlx::query_scalar!(
        r#"
        INSERT INTO team_members (organization_id, name, email, role, department, avatar_url, time_zone,
                                  work_starts_at, work_ends_at, working_days)
        VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, 'UTC'), $8, $9, coalesce($10::int2[], '{1,2,3,4,5}'::int2[]))
        RETURNING id
        "#,
        proof.organization_id(),
        fields.name,
        fields.email,
        fields.role.clone().flatten(),
        fields.department.clone().flatten(),
        fields.avatar_url.clone().flatten(),
        fields.time_zone,
        hours.map(|h| h.0),
        hours.map(|h| h.1),
        fields.working_days.as_deref(),
    )
    .fetch_one(conn)
    .await
    .map_err(write_error)
}

/// List filter and page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub department: Option<String>,
    /// Matches name or email, case-insensitively.
    pub query: Option<String>,
    pub before_id: Option<Uuid>,
}

/// The directory, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadTeam>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Member>> {
    sqlx::query_as!(
        Member,
        r#"
        SELECT id, user_id, name, email, role, department, avatar_url, time_zone, work_starts_at,
               work_ends_at, working_days, created_at, updated_at
        FROM team_members
        WHERE organization_id = $1
          AND ($2::text IS NULL OR lower(department) = lower($2))
          AND ($3::text IS NULL OR name ILIKE '%' || $3 || '%' OR email ILIKE '%' || $3 || '%')
          AND ($4::uuid IS NULL OR id < $4)
        ORDER BY id DESC
        LIMIT $5
        "#,
        proof.organization_id(),
        filter.department,
        filter.query.as_deref().map(super::like_literal),
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One member of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Member>> {
    sqlx::query_as!(
        Member,
        r#"
        SELECT id, user_id, name, email, role, department, avatar_url, time_zone, work_starts_at,
               work_ends_at, working_days, created_at, updated_at
        FROM team_members WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Applies the `Some` fields.
///
/// # Errors
/// [`WriteError::NotFound`], [`WriteError::DuplicateEmail`]; database errors.
pub async fn update(
    conn: &mut PgConnection,
    proof: &Granted<ManageTeam>,
    id: Uuid,
    fields: &Fields,
) -> Result<(), WriteError> {
    let hours = fields.hours.flatten();
    let updated = sqlx::query!(
        r#"
        UPDATE team_members SET
            name = coalesce($3, name),
            email = coalesce($4, email),
            role = CASE WHEN $5 THEN $6 ELSE role END,
            department = CASE WHEN $7 THEN $8 ELSE department END,
            avatar_url = CASE WHEN $9 THEN $10 ELSE avatar_url END,
            time_zone = coalesce($11, time_zone),
            work_starts_at = CASE WHEN $12 THEN $13 ELSE work_starts_at END,
            work_ends_at = CASE WHEN $12 THEN $14 ELSE work_ends_at END,
            working_days = coalesce($15, working_days)
        WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
        fields.name,
        fields.email,
        fields.role.is_some(),
        fields.role.clone().flatten(),
        fields.department.is_some(),
        fields.department.clone().flatten(),
        fields.avatar_url.is_some(),
        fields.avatar_url.clone().flatten(),
        fields.time_zone,
        fields.hours.is_some(),
        hours.map(|h| h.0),
        hours.map(|h| h.1),
        fields.working_days.as_deref(),
    )
    .execute(conn)
    .await
    .map_err(write_error)?;
    if updated.rows_affected() == 0 {
        return Err(WriteError::NotFound);
    }
    Ok(())
}

/// Removes a member (their project memberships and assignments go with them).
///
/// # Errors
/// Database errors.
pub async fn delete(
    conn: &mut PgConnection,
    proof: &Granted<ManageTeam>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "DELETE FROM team_members WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}
