//! Broadcasts: an email to many recipients, resolved into one delivery per address when it is
//! sent. The API writes them in tenant transactions; the worker reads them on platform
//! connections by organization and id.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageBroadcasts, ReadBroadcasts};

/// A broadcast as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Broadcast {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email_account_id: Uuid,
    pub project_id: Option<Uuid>,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    pub status: String,
    pub scheduled_for: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub recipient_count: i32,
    pub recipient_emails: Vec<String>,
    pub team_member_ids: Vec<Uuid>,
    /// The scheduled send job of a `scheduled` broadcast.
    pub job_id: Option<Uuid>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A broadcast to create: a draft, or scheduled when `scheduled_for` is set.
#[derive(Debug, Clone)]
pub struct NewBroadcast {
    pub email_account_id: Uuid,
    pub project_id: Option<Uuid>,
    pub subject: String,
    pub body_text: String,
    pub body_html: Option<String>,
    pub recipient_emails: Vec<String>,
    pub team_member_ids: Vec<Uuid>,
    pub scheduled_for: Option<DateTime<Utc>>,
}

/// Inserts a broadcast; returns its id.
///
/// # Errors
/// Database errors (a foreign key naming another organization's account or project fails).
pub async fn insert(
    conn: &mut PgConnection,
    proof: &Granted<ManageBroadcasts>,
    new: &NewBroadcast,
) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO broadcasts (organization_id, email_account_id, project_id, subject, body_text, body_html,
                                recipient_emails, team_member_ids, scheduled_for, status, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                CASE WHEN $9::timestamptz IS NULL THEN 'draft' ELSE 'scheduled' END, $10)
        RETURNING id
        "#,
        proof.organization_id(),
        new.email_account_id,
        new.project_id,
        new.subject,
        new.body_text,
        new.body_html,
        &new.recipient_emails,
        &new.team_member_ids,
        new.scheduled_for,
        proof.actor().user_id(),
    )
    .fetch_one(conn)
    .await
}

/// Records the scheduled send job of a broadcast.
///
/// # Errors
/// Database errors.
pub async fn set_job(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
    job_id: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE broadcasts SET job_id = $3 WHERE organization_id = $1 AND id = $2",
        organization_id,
        id,
        job_id,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Which of `ids` are not team members of the organization.
///
/// # Errors
/// Database errors.
pub async fn unknown_team_members(
    conn: &mut PgConnection,
    organization_id: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        SELECT i AS "id!" FROM unnest($2::uuid[]) AS i
        WHERE NOT EXISTS (SELECT 1 FROM team_members t WHERE t.organization_id = $1 AND t.id = i)
        "#,
        organization_id,
        ids,
    )
    .fetch_all(conn)
    .await
}

/// Whether the project exists in the organization.
///
/// # Errors
/// Database errors.
pub async fn project_exists(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM projects WHERE organization_id = $1 AND id = $2) AS "exists!""#,
        organization_id,
        id,
    )
    .fetch_one(conn)
    .await
}

/// List filter and page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<String>,
    pub before_id: Option<Uuid>,
}

/// The organization's broadcasts, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadBroadcasts>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Broadcast>> {
    sqlx::query_as!(
        Broadcast,
        r#"
        SELECT id, organization_id, email_account_id, project_id, subject, body_text, body_html, status,
               scheduled_for, started_at, finished_at, recipient_count, recipient_emails, team_member_ids,
               job_id, created_by, created_at, updated_at
        FROM broadcasts
        WHERE organization_id = $1 AND ($2::text IS NULL OR status = $2)
          AND ($3::uuid IS NULL OR id < $3)
        ORDER BY id DESC
        LIMIT $4
        "#,
        proof.organization_id(),
        filter.status,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One broadcast of the organization.
///
/// # Errors
/// Database errors.
pub async fn get(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Broadcast>> {
    sqlx::query_as!(
        Broadcast,
        r#"
        SELECT id, organization_id, email_account_id, project_id, subject, body_text, body_html, status,
               scheduled_for, started_at, finished_at, recipient_count, recipient_emails, team_member_ids,
               job_id, created_by, created_at, updated_at
        FROM broadcasts WHERE organization_id = $1 AND id = $2
        "#,
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// One broadcast, its row locked until the transaction ends (sending and cancelling take it,
/// so they never interleave).
///
/// # Errors
/// Database errors.
pub async fn lock(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<Broadcast>> {
    sqlx::query_as!(
        Broadcast,
        r#"
        SELECT id, organization_id, email_account_id, project_id, subject, body_text, body_html, status,
               scheduled_for, started_at, finished_at, recipient_count, recipient_emails, team_member_ids,
               job_id, created_by, created_at, updated_at
        FROM broadcasts WHERE organization_id = $1 AND id = $2
        FOR UPDATE
        "#,
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Deliveries of the given broadcasts counted by status: `(broadcast, status, count)`.
///
/// # Errors
/// Database errors.
pub async fn counts(
    conn: &mut PgConnection,
    organization_id: Uuid,
    ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, String, i64)>> {
    let rows = sqlx::query!(
        r#"
        SELECT broadcast_id AS "broadcast_id!", status, count(*) AS "count!" FROM email_deliveries
        WHERE organization_id = $1 AND broadcast_id = ANY($2)
        GROUP BY broadcast_id, status
        "#,
        organization_id,
        ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.broadcast_id, r.status, r.count))
        .collect())
}

/// The addresses a broadcast goes to: its explicit addresses, its team members' and its
/// project members', each once (case-insensitively, first spelling kept).
///
/// # Errors
/// Database errors.
pub async fn resolve_recipients(
    conn: &mut PgConnection,
    broadcast: &Broadcast,
) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"
        SELECT DISTINCT ON (lower(email)) email AS "email!"
        FROM (
            SELECT e AS email, 0 AS source FROM unnest($2::text[]) AS e
            UNION ALL
            SELECT t.email, 1 FROM team_members t
            WHERE t.organization_id = $1 AND t.id = ANY($3::uuid[]) AND t.email IS NOT NULL
            UNION ALL
            SELECT t.email, 2 FROM project_members m
            JOIN team_members t ON t.organization_id = m.organization_id AND t.id = m.team_member_id
            WHERE m.organization_id = $1 AND m.project_id = $4 AND t.email IS NOT NULL
        ) AS r
        ORDER BY lower(email), source
        "#,
        broadcast.organization_id,
        &broadcast.recipient_emails,
        &broadcast.team_member_ids,
        broadcast.project_id,
    )
    .fetch_all(conn)
    .await
}

/// A delivery created by the fan-out.
#[derive(Debug, Clone)]
pub struct Fanned {
    pub id: Uuid,
    /// `queued`, or `suppressed` when the address is on the suppression list.
    pub status: String,
}

/// Creates one delivery per recipient (each with its first history entry), suppressed ones
/// already final, and marks the broadcast `sending`.
///
/// # Errors
/// Database errors.
pub async fn fan_out(
    conn: &mut PgConnection,
    broadcast: &Broadcast,
    recipients: &[String],
) -> sqlx::Result<Vec<Fanned>> {
    let rows = sqlx::query_as!(
        Fanned,
        r#"
        WITH inserted AS (
            INSERT INTO email_deliveries (organization_id, broadcast_id, email_account_id, template,
                                          recipient, subject, status)
            SELECT $1, $2, $3, 'broadcast', r, $4,
                   CASE WHEN EXISTS (SELECT 1 FROM email_suppressions s
                                     WHERE s.organization_id = $1 AND lower(s.email) = lower(r))
                        THEN 'suppressed' ELSE 'queued' END
            FROM unnest($5::text[]) AS r
            ON CONFLICT DO NOTHING
            RETURNING id, organization_id, status
        ), history AS (
            INSERT INTO email_delivery_events (organization_id, delivery_id, status, detail)
            SELECT organization_id, id, status,
                   CASE WHEN status = 'suppressed' THEN 'the address is on the suppression list' END
            FROM inserted
        )
        SELECT id AS "id!", status AS "status!" FROM inserted
        "#,
        broadcast.organization_id,
        broadcast.id,
        broadcast.email_account_id,
        broadcast.subject,
        recipients,
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!(
        r#"
        UPDATE broadcasts SET status = 'sending', started_at = now(), recipient_count = $3, job_id = NULL
        WHERE organization_id = $1 AND id = $2
        "#,
        broadcast.organization_id,
        broadcast.id,
        i32::try_from(rows.len()).unwrap_or(i32::MAX),
    )
    .execute(conn)
    .await?;
    Ok(rows)
}

/// Records each delivery's send job.
///
/// # Errors
/// Database errors.
pub async fn set_delivery_jobs(
    conn: &mut PgConnection,
    organization_id: Uuid,
    deliveries: &[Uuid],
    jobs: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        UPDATE email_deliveries d SET job_id = u.job
        FROM unnest($2::uuid[], $3::uuid[]) AS u(id, job)
        WHERE d.organization_id = $1 AND d.id = u.id
        "#,
        organization_id,
        deliveries,
        jobs,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Cancels a broadcast that has not finished: its unsent deliveries become `cancelled`.
/// Returns the send jobs to cancel (the scheduled one, or those of the cancelled deliveries).
///
/// # Errors
/// Database errors.
pub async fn cancel(conn: &mut PgConnection, broadcast: &Broadcast) -> sqlx::Result<Vec<Uuid>> {
    let mut jobs = sqlx::query_scalar!(
        r#"
        WITH cancelled AS (
            UPDATE email_deliveries SET status = 'cancelled'
            WHERE organization_id = $1 AND broadcast_id = $2 AND status IN ('queued', 'retrying')
            RETURNING id, organization_id, job_id
        ), history AS (
            INSERT INTO email_delivery_events (organization_id, delivery_id, status, detail)
            SELECT organization_id, id, 'cancelled', 'the broadcast was cancelled' FROM cancelled
        )
        SELECT job_id AS "job_id!" FROM cancelled WHERE job_id IS NOT NULL
        "#,
        broadcast.organization_id,
        broadcast.id,
    )
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query!(
        r#"
        UPDATE broadcasts SET status = 'cancelled', finished_at = now(), job_id = NULL
        WHERE organization_id = $1 AND id = $2
        "#,
        broadcast.organization_id,
        broadcast.id,
    )
    .execute(conn)
    .await?;
    jobs.extend(broadcast.job_id);
    Ok(jobs)
}

/// Ends a `sending` broadcast whose deliveries are all final: `sent` when every delivery that
/// was attempted went out, `partially_failed` when some did, `failed` when none did. Returns
/// the final status, or `None` while deliveries are still pending (or it is not `sending`).
///
/// # Errors
/// Database errors.
pub async fn finish(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Uuid,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!(
        r#"
        WITH tally AS (
            SELECT count(*) FILTER (WHERE status IN ('queued', 'sending', 'retrying')) AS pending,
                   count(*) FILTER (WHERE status = 'sent') AS sent,
                   count(*) FILTER (WHERE status IN ('failed', 'bounced')) AS failed
            FROM email_deliveries WHERE organization_id = $1 AND broadcast_id = $2
        )
        UPDATE broadcasts b SET
            status = CASE WHEN t.sent > 0 AND t.failed = 0 THEN 'sent'
                          WHEN t.sent > 0 THEN 'partially_failed'
                          ELSE 'failed' END,
            finished_at = now()
        FROM tally t
        WHERE b.organization_id = $1 AND b.id = $2 AND b.status = 'sending' AND t.pending = 0
        RETURNING b.status
        "#,
        organization_id,
        id,
    )
    .fetch_optional(conn)
    .await
}
