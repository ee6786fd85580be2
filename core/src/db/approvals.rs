//! Approval pipelines: templates with ordered stages, instances running on one approvable item
//! (an invoice, a task or a document), and their steps — copied from the stages when the
//! instance starts, so later edits of the template never change a running pipeline.
//!
//! Tenant functions take a permission proof; [`approvers`], [`role_holders`] and the nudge
//! queries take an organization id because the scheduler's nudge job runs them on a platform
//! connection too.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageApprovalTemplates, StartApprovals};

/// A stage of a template, as written and as read. Durations are whole seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub name: String,
    pub approver_role: Option<String>,
    pub approver_user_id: Option<Uuid>,
    pub approver_email: Option<String>,
    pub sla_seconds: i64,
    pub nudge_every_seconds: i64,
    pub escalate_after_nudges: i16,
    pub escalate_to_role: Option<String>,
}

/// A template without its stages.
#[derive(Debug, Clone)]
pub struct Template {
    pub id: Uuid,
    pub project_id: Option<Uuid>,
    pub name: String,
    pub description: Option<String>,
    pub subject_type: String,
    /// Whether whoever starts an approval may approve its steps (separation of duties).
    pub allow_self_approval: bool,
    pub archived_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Why a template write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("no such project in the organization")]
    UnknownProject,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Creates a template (without stages: [`replace_stages`] adds them); returns its id.
///
/// # Errors
/// [`WriteError::UnknownProject`]; database errors.
pub async fn insert_template(
    conn: &mut PgConnection,
    proof: &Granted<ManageApprovalTemplates>,
    name: &str,
    description: Option<&str>,
    subject_type: &str,
    project_id: Option<Uuid>,
    allow_self_approval: bool,
) -> Result<Uuid, WriteError> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO approval_pipeline_templates
            (organization_id, name, description, subject_type, project_id, allow_self_approval)
        VALUES ($1, $2, $3, $4, $5, $6) RETURNING id
        "#,
        proof.organization_id(),
        name,
        description,
        subject_type,
        project_id,
        allow_self_approval,
    )
    .fetch_one(conn)
    .await
    .map_err(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
            WriteError::UnknownProject
        }
        _ => WriteError::Database(e),
    })
}

/// Replaces the stages of a template with `stages`, positions 1, 2, … in order. The unique
/// position constraint is deferred, so this is safe inside the caller's transaction.
///
/// # Errors
/// Database errors.
pub async fn replace_stages(
    conn: &mut PgConnection,
    proof: &Granted<ManageApprovalTemplates>,
    template_id: Uuid,
    stages: &[Stage],
) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM approval_pipeline_stages WHERE organization_id = $1 AND template_id = $2",
        proof.organization_id(),
        template_id,
    )
    .execute(&mut *conn)
    .await?;
    let positions: Vec<i16> = (1..=stages.len())
        .map(|p| i16::try_from(p).unwrap_or(i16::MAX))
        .collect();
    let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
    let roles: Vec<Option<String>> = stages.iter().map(|s| s.approver_role.clone()).collect();
    let users: Vec<Option<Uuid>> = stages.iter().map(|s| s.approver_user_id).collect();
    let emails: Vec<Option<String>> = stages.iter().map(|s| s.approver_email.clone()).collect();
    let slas: Vec<i64> = stages.iter().map(|s| s.sla_seconds).collect();
    let nudges: Vec<i64> = stages.iter().map(|s| s.nudge_every_seconds).collect();
    let after: Vec<i16> = stages.iter().map(|s| s.escalate_after_nudges).collect();
    let escalate: Vec<Option<String>> = stages.iter().map(|s| s.escalate_to_role.clone()).collect();
    sqlx::query!(
        r#"
        INSERT INTO approval_pipeline_stages (organization_id, template_id, position, name, approver_role,
            approver_user_id, approver_email, sla, nudge_every, escalate_after_nudges, escalate_to_role)
        SELECT $1, $2, t.position, t.name, t.role, t.user_id, t.email,
               make_interval(secs => t.sla), make_interval(secs => t.nudge), t.after, t.escalate
        FROM unnest($3::int2[], $4::text[], $5::text[], $6::uuid[], $7::text[], $8::int8[], $9::int8[],
                    $10::int2[], $11::text[])
             AS t(position, name, role, user_id, email, sla, nudge, after, escalate)
        "#,
        proof.organization_id(),
        template_id,
        &positions,
        &names,
        &roles as &[Option<String>],
        &users as &[Option<Uuid>],
        &emails as &[Option<String>],
        &slas,
        &nudges,
        &after,
        &escalate as &[Option<String>],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Template list filter and page.
#[derive(Debug, Clone, Default)]
pub struct TemplateFilter {
    pub subject_type: Option<String>,
    pub project_id: Option<Uuid>,
    /// `Some(true)`: archived only; `Some(false)`: active only.
    pub archived: Option<bool>,
    pub before_id: Option<Uuid>,
}

/// Templates, newest first.
///
/// # Errors
/// Database errors.
pub async fn list_templates<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    filter: &TemplateFilter,
    limit: i64,
) -> sqlx::Result<Vec<Template>> {
    sqlx::query_as!(
        Template,
        r#"
        SELECT id, project_id, name, description, subject_type, allow_self_approval, archived_at,
               created_at, updated_at
        FROM approval_pipeline_templates
        WHERE organization_id = $1
          AND ($2::text IS NULL OR subject_type = $2)
          AND ($3::uuid IS NULL OR project_id = $3)
          AND ($4::bool IS NULL OR (archived_at IS NOT NULL) = $4)
          AND ($5::uuid IS NULL OR id < $5)
        ORDER BY id DESC
        LIMIT $6
        "#,
        proof.organization_id(),
        filter.subject_type,
        filter.project_id,
        filter.archived,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One template.
///
/// # Errors
/// Database errors.
pub async fn get_template<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Template>> {
    sqlx::query_as!(
        Template,
        r#"
        SELECT id, project_id, name, description, subject_type, allow_self_approval, archived_at,
               created_at, updated_at
        FROM approval_pipeline_templates WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// The stages of templates, in template then position order.
///
/// # Errors
/// Database errors.
pub async fn stages<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    template_ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, Stage)>> {
    let rows = sqlx::query!(
        r#"
        SELECT template_id, name, approver_role, approver_user_id, approver_email,
               extract(epoch FROM sla)::int8 AS "sla!", extract(epoch FROM nudge_every)::int8 AS "nudge!",
               escalate_after_nudges, escalate_to_role
        FROM approval_pipeline_stages
        WHERE organization_id = $1 AND template_id = ANY($2)
        ORDER BY template_id, position
        "#,
        proof.organization_id(),
        template_ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.template_id,
                Stage {
                    name: r.name,
                    approver_role: r.approver_role,
                    approver_user_id: r.approver_user_id,
                    approver_email: r.approver_email,
                    sla_seconds: r.sla,
                    nudge_every_seconds: r.nudge,
                    escalate_after_nudges: r.escalate_after_nudges,
                    escalate_to_role: r.escalate_to_role,
                },
            )
        })
        .collect())
}

/// Changes the name and/or the description (`Some(None)` clears it). `false` when absent.
///
/// # Errors
/// Database errors.
pub async fn update_template(
    conn: &mut PgConnection,
    proof: &Granted<ManageApprovalTemplates>,
    id: Uuid,
    name: Option<&str>,
    description: Option<Option<&str>>,
    allow_self_approval: Option<bool>,
) -> sqlx::Result<bool> {
    // Touches updated_at even with nothing else to change (a stage list replaced).
    sqlx::query!(
        r#"
        UPDATE approval_pipeline_templates SET
            name = coalesce($3, name),
            description = CASE WHEN $4 THEN $5 ELSE description END,
            allow_self_approval = coalesce($6, allow_self_approval),
            updated_at = now()
        WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
        name,
        description.is_some(),
        description.flatten(),
        allow_self_approval,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Archives a template (no new instances start from it); idempotent. `false` when absent.
///
/// # Errors
/// Database errors.
pub async fn archive_template(
    conn: &mut PgConnection,
    proof: &Granted<ManageApprovalTemplates>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "UPDATE approval_pipeline_templates SET archived_at = coalesce(archived_at, now())
         WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Deletes a template and its stages; instances keep their copied steps.
///
/// # Errors
/// Database errors.
pub async fn delete_template(
    conn: &mut PgConnection,
    proof: &Granted<ManageApprovalTemplates>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "DELETE FROM approval_pipeline_templates WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// `true` when `user_id` is a member of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn is_member<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    user_id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM memberships WHERE organization_id = $1 AND user_id = $2) AS "e!""#,
        proof.organization_id(),
        user_id,
    )
    .fetch_one(conn)
    .await
}

/// The item an instance approves, as the emails name it.
#[derive(Debug, Clone)]
pub struct Subject {
    pub title: String,
    pub project_id: Option<Uuid>,
    /// Invoices: the amount in minor units and the currency.
    pub amount: Option<(i64, String)>,
}

/// The approvable item `subject_type`/`subject_id` of the organization: an invoice, a task, or
/// a document (a team document or a stored file).
///
/// # Errors
/// Database errors.
pub async fn subject(
    conn: &mut PgConnection,
    organization_id: Uuid,
    subject_type: &str,
    subject_id: Uuid,
) -> sqlx::Result<Option<Subject>> {
    let row = sqlx::query!(
        r#"
        SELECT title AS "title!", project_id, amount_minor, currency FROM (
            SELECT coalesce('Invoice ' || number, 'Invoice from ' || vendor, 'Invoice ' || id::text) AS title,
                   project_id, amount_minor, currency::text AS currency
            FROM invoices WHERE $2 = 'invoice' AND organization_id = $1 AND id = $3
            UNION ALL
            SELECT title, project_id, NULL, NULL FROM tasks
            WHERE $2 = 'task' AND organization_id = $1 AND id = $3
            UNION ALL
            SELECT name, NULL, NULL, NULL FROM team_documents
            WHERE $2 = 'document' AND organization_id = $1 AND id = $3
            UNION ALL
            SELECT filename, NULL, NULL, NULL FROM stored_files
            WHERE $2 = 'document' AND organization_id = $1 AND id = $3
        ) s LIMIT 1
        "#,
        organization_id,
        subject_type,
        subject_id,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|r| Subject {
        title: r.title,
        project_id: r.project_id,
        amount: r.amount_minor.zip(r.currency),
    }))
}

/// An instance without its steps.
#[derive(Debug, Clone)]
pub struct Instance {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub template_id: Option<Uuid>,
    pub subject_type: String,
    pub subject_id: Uuid,
    pub status: String,
    pub started_by: Option<Uuid>,
    /// Whether `started_by` may approve its steps (copied from the template at the start).
    pub allow_self_approval: bool,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// A step of an instance.
#[derive(Debug, Clone)]
pub struct Step {
    pub id: Uuid,
    pub instance_id: Uuid,
    pub position: i16,
    pub name: String,
    pub approver_role: Option<String>,
    pub approver_user_id: Option<Uuid>,
    pub approver_email: Option<String>,
    pub status: String,
    pub sla_seconds: i64,
    pub pending_since: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
    pub nudge_every_seconds: i64,
    pub escalate_after_nudges: i16,
    pub escalate_to_role: Option<String>,
    pub nudge_count: i32,
    pub last_nudged_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
}

/// Starts an instance on a subject and copies the template's stages into `waiting` steps.
/// `None` when an instance already runs on the subject.
///
/// # Errors
/// Database errors.
pub async fn start_instance(
    conn: &mut PgConnection,
    proof: &Granted<StartApprovals>,
    template_id: Uuid,
    subject_type: &str,
    subject_id: Uuid,
) -> sqlx::Result<Option<Uuid>> {
    let id = sqlx::query_scalar!(
        r#"
        INSERT INTO approval_instances
            (organization_id, template_id, subject_type, subject_id, started_by, allow_self_approval)
        SELECT $1, $2, $3, $4, $5, t.allow_self_approval
        FROM approval_pipeline_templates t WHERE t.organization_id = $1 AND t.id = $2
        ON CONFLICT (organization_id, subject_type, subject_id) WHERE status = 'in_progress' DO NOTHING
        RETURNING id AS "id!"
        "#,
        proof.organization_id(),
        template_id,
        subject_type,
        subject_id,
        proof.actor().user_id(),
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else { return Ok(None) };
    sqlx::query!(
        r#"
        INSERT INTO approval_steps (organization_id, instance_id, position, name, approver_role,
            approver_user_id, approver_email, required_documents, sla, nudge_every,
            escalate_after_nudges, escalate_to_role)
        SELECT organization_id, $2, position, name, approver_role, approver_user_id, approver_email,
               required_documents, sla, nudge_every, escalate_after_nudges, escalate_to_role
        FROM approval_pipeline_stages
        WHERE organization_id = $1 AND template_id = $3
        ORDER BY position
        "#,
        proof.organization_id(),
        id,
        template_id,
    )
    .execute(conn)
    .await?;
    Ok(Some(id))
}

/// Instance list filter and page.
#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub status: Option<String>,
    pub subject_type: Option<String>,
    pub subject_id: Option<Uuid>,
    pub before_id: Option<Uuid>,
}

/// Instances, newest first.
///
/// # Errors
/// Database errors.
pub async fn list_instances<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    filter: &InstanceFilter,
    limit: i64,
) -> sqlx::Result<Vec<Instance>> {
    sqlx::query_as!(
        Instance,
        r#"
        SELECT id, organization_id, template_id, subject_type, subject_id, status, started_by,
               allow_self_approval,
               created_at, completed_at
        FROM approval_instances
        WHERE organization_id = $1
          AND ($2::text IS NULL OR status = $2)
          AND ($3::text IS NULL OR subject_type = $3)
          AND ($4::uuid IS NULL OR subject_id = $4)
          AND ($5::uuid IS NULL OR id < $5)
        ORDER BY id DESC
        LIMIT $6
        "#,
        proof.organization_id(),
        filter.status,
        filter.subject_type,
        filter.subject_id,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One instance.
///
/// # Errors
/// Database errors.
pub async fn get_instance<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Instance>> {
    sqlx::query_as!(
        Instance,
        r#"
        SELECT id, organization_id, template_id, subject_type, subject_id, status, started_by,
               allow_self_approval,
               created_at, completed_at
        FROM approval_instances WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// One instance, locked (`FOR UPDATE`) until the transaction ends: two decisions on the same
/// instance run one after the other, and the second sees what the first did.
///
/// # Errors
/// Database errors.
pub async fn lock_instance<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Instance>> {
    sqlx::query_as!(
        Instance,
        r#"
        SELECT id, organization_id, template_id, subject_type, subject_id, status, started_by,
               allow_self_approval,
               created_at, completed_at
        FROM approval_instances WHERE organization_id = $1 AND id = $2
        FOR UPDATE
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// The steps of instances, in instance then position order.
///
/// # Errors
/// Database errors.
pub async fn steps<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    instance_ids: &[Uuid],
) -> sqlx::Result<Vec<Step>> {
    sqlx::query_as!(
        Step,
        r#"
        SELECT id, instance_id, position, name, approver_role, approver_user_id, approver_email,
               status, extract(epoch FROM sla)::int8 AS "sla_seconds!", pending_since, due_at,
               extract(epoch FROM nudge_every)::int8 AS "nudge_every_seconds!",
               escalate_after_nudges, escalate_to_role, nudge_count, last_nudged_at, escalated_at,
               decided_by, decided_at, comment
        FROM approval_steps
        WHERE organization_id = $1 AND instance_id = ANY($2)
        ORDER BY instance_id, position
        "#,
        proof.organization_id(),
        instance_ids,
    )
    .fetch_all(conn)
    .await
}

/// Makes a step the pending one: due `sla` from now.
///
/// # Errors
/// Database errors.
pub async fn activate_step<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    step_id: Uuid,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE approval_steps SET status = 'pending', pending_since = now(), due_at = now() + sla
         WHERE organization_id = $1 AND id = $2 AND status = 'waiting'",
        proof.organization_id(),
        step_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the decision on a pending step (`approved` or `rejected`). `false` when the step was
/// no longer pending.
///
/// # Errors
/// Database errors.
pub async fn decide_step<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    step_id: Uuid,
    status: &str,
    comment: Option<&str>,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "UPDATE approval_steps SET status = $3, decided_by = $4, decided_at = now(), comment = $5
         WHERE organization_id = $1 AND id = $2 AND status = 'pending'",
        proof.organization_id(),
        step_id,
        status,
        proof.actor().user_id(),
        comment,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() == 1)
}

/// Ends a running instance with `status` (`approved`, `rejected` or `cancelled`); steps still
/// waiting or pending are `skipped`. `false` when it was not running.
///
/// # Errors
/// Database errors.
pub async fn finish_instance<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
    status: &str,
) -> sqlx::Result<bool> {
    let finished = sqlx::query!(
        "UPDATE approval_instances SET status = $3, completed_at = now()
         WHERE organization_id = $1 AND id = $2 AND status = 'in_progress'",
        proof.organization_id(),
        id,
        status,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    sqlx::query!(
        "UPDATE approval_steps SET status = 'skipped'
         WHERE organization_id = $1 AND instance_id = $2 AND status IN ('waiting', 'pending')",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await?;
    Ok(finished)
}

/// Sets an invoice's status (an approval pipeline on it ended).
///
/// # Errors
/// Database errors.
pub async fn set_invoice_status<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    invoice_id: Uuid,
    status: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE invoices SET status = $3 WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        invoice_id,
        status,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Someone an approval email goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    pub email: String,
    /// The user's name, or the address for a named email that is no user's.
    pub name: String,
}

/// Whom a step waits for.
#[derive(Debug, Clone, Copy)]
pub struct Approvers<'a> {
    pub role: Option<&'a str>,
    pub user_id: Option<Uuid>,
    pub email: Option<&'a str>,
}

/// The addresses of a step's approvers: the named user, the named email, and every active member
/// of the organization holding the role; each address once, in a stable order.
///
/// # Errors
/// Database errors.
pub async fn approvers(
    conn: &mut PgConnection,
    organization_id: Uuid,
    who: Approvers<'_>,
) -> sqlx::Result<Vec<Recipient>> {
    sqlx::query_as!(
        Recipient,
        r#"
        SELECT DISTINCT ON (lower(email)) email AS "email!", name AS "name!" FROM (
            SELECT u.email, u.name, 1 AS rank FROM memberships m JOIN users u ON u.id = m.user_id
            WHERE m.organization_id = $1 AND u.disabled_at IS NULL
              AND (m.user_id = $3::uuid OR m.role = $2::text OR lower(u.email) = lower($4::text))
            UNION ALL
            SELECT $4::text, $4::text, 2 WHERE $4::text IS NOT NULL
        ) r
        ORDER BY lower(email), rank
        "#,
        organization_id,
        who.role,
        who.user_id,
        who.email,
    )
    .fetch_all(conn)
    .await
}

/// Every active member holding `role` (`admin` when `None`).
///
/// # Errors
/// Database errors.
pub async fn role_holders(
    conn: &mut PgConnection,
    organization_id: Uuid,
    role: Option<&str>,
) -> sqlx::Result<Vec<Recipient>> {
    approvers(
        conn,
        organization_id,
        Approvers {
            role: Some(role.unwrap_or("admin")),
            user_id: None,
            email: None,
        },
    )
    .await
}

/// The address of a user (to match a step's named email).
///
/// # Errors
/// Database errors.
pub async fn user_email(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT email FROM users WHERE id = $1", user_id)
        .fetch_optional(conn)
        .await
}

/// The display name of a user.
///
/// # Errors
/// Database errors.
pub async fn user_name(conn: &mut PgConnection, user_id: Uuid) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar!("SELECT name FROM users WHERE id = $1", user_id)
        .fetch_optional(conn)
        .await
}

/// A pending step past its due time whose last nudge (if any) is older than its interval.
#[derive(Debug, Clone)]
pub struct Overdue {
    pub step_id: Uuid,
    pub organization_id: Uuid,
    pub instance_id: Uuid,
    pub subject_type: String,
    pub subject_id: Uuid,
    pub approver_role: Option<String>,
    pub approver_user_id: Option<Uuid>,
    pub approver_email: Option<String>,
    pub escalate_to_role: Option<String>,
    pub pending_since: Option<DateTime<Utc>>,
    pub due_at: Option<DateTime<Utc>>,
}

/// Whether the organization has an overdue step due a nudge (what [`claim_overdue`] would
/// claim).
///
/// # Errors
/// Database errors.
pub async fn overdue_exists(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"
        SELECT EXISTS (
            SELECT 1 FROM approval_steps s
            JOIN approval_instances i ON i.organization_id = s.organization_id AND i.id = s.instance_id
            WHERE s.organization_id = $1 AND s.status = 'pending' AND i.status = 'in_progress'
              AND s.due_at <= now()
              AND (s.last_nudged_at IS NULL OR s.last_nudged_at <= now() - s.nudge_every)
        ) AS "due!"
        "#,
        organization_id,
    )
    .fetch_one(conn)
    .await
}

/// Claims up to `limit` of the organization's overdue steps (a platform connection) and
/// counts a nudge on each, in the caller's transaction: the rows stay locked until it ends,
/// and a concurrent run skips them. Returns each step with its new nudge number and whether
/// the nudge escalates.
///
/// # Errors
/// Database errors.
pub async fn claim_overdue(
    conn: &mut PgConnection,
    organization_id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<(Overdue, i32, bool)>> {
    let rows = sqlx::query!(
        r#"
        WITH due AS (
            SELECT s.id FROM approval_steps s
            JOIN approval_instances i ON i.organization_id = s.organization_id AND i.id = s.instance_id
            WHERE s.organization_id = $2 AND s.status = 'pending' AND i.status = 'in_progress'
              AND s.due_at <= now()
              AND (s.last_nudged_at IS NULL OR s.last_nudged_at <= now() - s.nudge_every)
            ORDER BY s.due_at
            LIMIT $1
            FOR UPDATE OF s SKIP LOCKED
        )
        UPDATE approval_steps s SET
            nudge_count = s.nudge_count + 1,
            last_nudged_at = now(),
            escalated_at = CASE WHEN s.nudge_count + 1 >= s.escalate_after_nudges
                                THEN coalesce(s.escalated_at, now()) ELSE s.escalated_at END
        FROM due, approval_instances i
        WHERE s.id = due.id AND i.organization_id = s.organization_id AND i.id = s.instance_id
        RETURNING s.id, s.organization_id, s.instance_id, i.subject_type, i.subject_id,
                  s.approver_role, s.approver_user_id, s.approver_email, s.escalate_to_role,
                  s.pending_since, s.due_at, s.nudge_count,
                  (s.nudge_count >= s.escalate_after_nudges) AS "escalates!"
        "#,
        limit,
        organization_id,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                Overdue {
                    step_id: r.id,
                    organization_id: r.organization_id,
                    instance_id: r.instance_id,
                    subject_type: r.subject_type,
                    subject_id: r.subject_id,
                    approver_role: r.approver_role,
                    approver_user_id: r.approver_user_id,
                    approver_email: r.approver_email,
                    escalate_to_role: r.escalate_to_role,
                    pending_since: r.pending_since,
                    due_at: r.due_at,
                },
                r.nudge_count,
                r.escalates,
            )
        })
        .collect())
}
