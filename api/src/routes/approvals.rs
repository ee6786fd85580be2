//! `/api/v1/approval-templates` and `/api/v1/approvals`: approval pipelines. A template is an
//! ordered list of stages, each naming its approvers (a role, a member, an address), its SLA and
//! how often an overdue step is nudged before it escalates. Starting an approval on an invoice,
//! task or document copies the stages into steps, makes the first pending and emails its
//! approvers in the same transaction; each approval moves to the next step (and emails its
//! approvers) until the last one completes the approval. [`complete_approval`] is the one place
//! an approval ends.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::MaybeUndefined,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{
        DecideApprovals, Granted, ManageApprovalTemplates, ReadApprovals, Role, StartApprovals,
    },
    db::{
        approvals::{self, Approvers, Instance, Step},
        audit::{self, Entry},
        tenant,
    },
    identity::{EmailAddress, Invalid},
};
use zoark_jobs::approvals::{Item, enqueue_requests};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, Fields},
    etag, idempotency,
    json::JsonBody,
    pagination::PageRequest,
    routes::{ApiTags, NoContent, team_members::text},
    state::AppState,
};

pub struct ApprovalTemplatesApi;
pub struct ApprovalsApi;

/// Most stages one template has.
const MAX_STAGES: usize = 20;
/// Longest SLA and nudge interval: a year.
const MAX_SECONDS: i64 = 366 * 24 * 3600;
/// Default SLA of a stage: two days.
const DEFAULT_SLA: i64 = 2 * 24 * 3600;
/// Default nudge interval: a day.
const DEFAULT_NUDGE: i64 = 24 * 3600;

/// A stage as written.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageInput {
    /// 1 to 200 characters, e.g. `Finance review`.
    pub name: String,
    /// Every member holding this role approves: `admin`, `manager`, `lead` or `member` (a member
    /// whose role includes it may decide).
    pub approver_role: Option<String>,
    /// This member of the organization approves.
    pub approver_user_id: Option<Uuid>,
    /// This address approves (a member signed in with it may decide).
    pub approver_email: Option<String>,
    /// Seconds the step may wait before it is overdue (default 172800, two days; at most a
    /// year).
    pub sla_seconds: Option<i64>,
    /// Seconds between nudges of an overdue step (default 86400; at least 3600, at most a
    /// year).
    pub nudge_every_seconds: Option<i64>,
    /// Nudges before each further nudge also goes to `escalate_to_role` (default 3; 1 to 100).
    pub escalate_after_nudges: Option<i64>,
    /// `admin`, `manager` or `lead`; admins when absent.
    pub escalate_to_role: Option<String>,
}

/// `POST /approval-templates`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewApprovalTemplate {
    /// 1 to 200 characters.
    pub name: String,
    /// At most 5000 characters.
    pub description: Option<String>,
    /// What it approves: `invoice`, `task` or `document`.
    pub subject_type: String,
    /// Only for items of this project (absent: every project).
    pub project_id: Option<Uuid>,
    /// Whether whoever starts an approval may also approve its steps (default `false`:
    /// separation of duties, even for admins).
    #[serde(default)]
    pub allow_self_approval: Option<bool>,
    /// The stages in order (1 to 20); each names at least one approver.
    pub stages: Vec<StageInput>,
}

impl poem_openapi::types::Example for NewApprovalTemplate {
    fn example() -> Self {
        Self {
            name: "Invoice sign-off".into(),
            description: Some("Manager, then finance".into()),
            subject_type: "invoice".into(),
            project_id: None,
            allow_self_approval: Some(false),
            stages: vec![StageInput {
                name: "Manager".into(),
                approver_role: Some("manager".into()),
                approver_user_id: None,
                approver_email: None,
                sla_seconds: Some(86_400),
                nudge_every_seconds: Some(14_400),
                escalate_after_nudges: Some(2),
                escalate_to_role: Some("admin".into()),
            }],
        }
    }
}

/// `PATCH /approval-templates/{id}`: absent fields stay; `stages` replaces the whole list.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct ApprovalTemplatePatch {
    #[serde(default)]
    pub name: MaybeUndefined<String>,
    /// `null` clears it.
    #[serde(default)]
    pub description: MaybeUndefined<String>,
    /// Approvals already running keep the rule they started with.
    #[serde(default)]
    pub allow_self_approval: MaybeUndefined<bool>,
    /// Replaces every stage; approvals already running keep their copied steps.
    #[serde(default)]
    pub stages: MaybeUndefined<Vec<StageInput>>,
}

impl poem_openapi::types::Example for ApprovalTemplatePatch {
    fn example() -> Self {
        Self {
            name: MaybeUndefined::Value("Invoice sign-off (v2)".into()),
            description: MaybeUndefined::Null,
            allow_self_approval: MaybeUndefined::Undefined,
            stages: MaybeUndefined::Undefined,
        }
    }
}

/// A stage of a template.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct ApprovalStage {
    /// 1, 2, … in order.
    pub position: i32,
    pub name: String,
    pub approver_role: Option<String>,
    pub approver_user_id: Option<Uuid>,
    pub approver_email: Option<String>,
    pub sla_seconds: i64,
    pub nudge_every_seconds: i64,
    pub escalate_after_nudges: i32,
    pub escalate_to_role: Option<String>,
}

/// An approval pipeline template.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct ApprovalTemplate {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// `invoice`, `task` or `document`.
    pub subject_type: String,
    pub project_id: Option<Uuid>,
    /// Whether whoever starts an approval may also approve its steps.
    #[serde(default)]
    pub allow_self_approval: bool,
    /// Archived templates start no new approvals.
    pub archived_at: Option<DateTime<Utc>>,
    pub stages: Vec<ApprovalStage>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct ApprovalTemplateList {
    pub items: Vec<ApprovalTemplate>,
    pub next_cursor: Option<String>,
}

/// `POST /approvals`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewApproval {
    /// An active template of the organization.
    pub template_id: Uuid,
    /// `invoice`, `task` or `document` (the template's).
    pub subject_type: String,
    /// The invoice, task or document (team document or stored file) to approve.
    pub subject_id: Uuid,
}

impl poem_openapi::types::Example for NewApproval {
    fn example() -> Self {
        Self {
            template_id: Uuid::nil(),
            subject_type: "invoice".into(),
            subject_id: Uuid::nil(),
        }
    }
}

/// `POST /approvals/{id}/approve`, `/reject`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct Decision {
    /// Why (at most 5000 characters); required to reject.
    pub comment: Option<String>,
    /// The step decided (from `steps[].id`). Optional: without it, whichever step is pending
    /// when the request runs; with it, 409 `approval_step_not_pending` once that step was
    /// decided, so two approvers racing on one step never approve two steps.
    pub step_id: Option<Uuid>,
}

impl poem_openapi::types::Example for Decision {
    fn example() -> Self {
        Self {
            comment: Some("Looks good".into()),
            step_id: None,
        }
    }
}

/// A step of an approval.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct ApprovalStep {
    pub id: Uuid,
    pub position: i32,
    pub name: String,
    pub approver_role: Option<String>,
    pub approver_user_id: Option<Uuid>,
    pub approver_email: Option<String>,
    /// `waiting`, `pending` (the current step), `approved`, `rejected` or `skipped`.
    pub status: String,
    pub pending_since: Option<DateTime<Utc>>,
    /// When the pending step becomes overdue.
    pub due_at: Option<DateTime<Utc>>,
    pub nudge_count: i32,
    pub last_nudged_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub decided_by: Option<Uuid>,
    pub decided_at: Option<DateTime<Utc>>,
    pub comment: Option<String>,
}

impl From<Step> for ApprovalStep {
    fn from(s: Step) -> Self {
        Self {
            id: s.id,
            position: s.position.into(),
            name: s.name,
            approver_role: s.approver_role,
            approver_user_id: s.approver_user_id,
            approver_email: s.approver_email,
            status: s.status,
            pending_since: s.pending_since,
            due_at: s.due_at,
            nudge_count: s.nudge_count,
            last_nudged_at: s.last_nudged_at,
            escalated_at: s.escalated_at,
            decided_by: s.decided_by,
            decided_at: s.decided_at,
            comment: s.comment,
        }
    }
}

/// An approval running (or ended) on one item.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct Approval {
    pub id: Uuid,
    /// `None` once the template was deleted; the steps stay.
    pub template_id: Option<Uuid>,
    pub subject_type: String,
    pub subject_id: Uuid,
    /// `in_progress`, `approved`, `rejected` or `cancelled`.
    pub status: String,
    pub started_by: Option<Uuid>,
    /// Whether `started_by` may approve its steps (the template's rule when it started).
    #[serde(default)]
    pub allow_self_approval: bool,
    pub steps: Vec<ApprovalStep>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
}

impl Approval {
    fn new(i: Instance, steps: Vec<Step>) -> Self {
        Self {
            id: i.id,
            template_id: i.template_id,
            subject_type: i.subject_type,
            subject_id: i.subject_id,
            status: i.status,
            started_by: i.started_by,
            allow_self_approval: i.allow_self_approval,
            steps: steps.into_iter().map(ApprovalStep::from).collect(),
            created_at: i.created_at,
            completed_at: i.completed_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct ApprovalList {
    pub items: Vec<Approval>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum ApprovalTemplateCreated {
    /// The template.
    #[oai(status = 201)]
    Created(
        Json<ApprovalTemplate>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

#[derive(ApiResponse)]
pub enum ApprovalCreated {
    /// The approval, its first step pending.
    #[oai(status = 201)]
    Created(
        Json<Approval>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

const SUBJECT_TYPES: [&str; 3] = ["invoice", "task", "document"];

fn one_of(allowed: &'static [&'static str]) -> impl Fn(&str) -> Result<String, Invalid> {
    move |raw: &str| {
        if allowed.contains(&raw) {
            Ok(raw.to_owned())
        } else {
            Err(Invalid(format!("must be one of {}", allowed.join(", "))))
        }
    }
}

fn description(raw: &str) -> Result<String, Invalid> {
    if raw.chars().count() > 5000 {
        Err(Invalid("must be at most 5000 characters".into()))
    } else {
        Ok(raw.to_owned())
    }
}

fn seconds(min: i64, what: &'static str) -> impl Fn(i64) -> Result<i64, Invalid> {
    move |v| {
        if (min..=MAX_SECONDS).contains(&v) {
            Ok(v)
        } else {
            Err(Invalid(format!(
                "{what} must be {min} to {MAX_SECONDS} seconds"
            )))
        }
    }
}

/// Parses a stage list; a user named as approver is checked against the organization later
/// ([`check_members`]).
fn parse_stages(fields: &mut Fields, stages: Vec<StageInput>) -> Vec<approvals::Stage> {
    if stages.is_empty() || stages.len() > MAX_STAGES {
        fields.reject("stages", "must hold 1 to 20 stages");
        return Vec::new();
    }
    let mut out = Vec::with_capacity(stages.len());
    for (i, s) in stages.into_iter().enumerate() {
        let at = |f: &str| format!("stages[{i}].{f}");
        let name = fields.take(&at("name"), text(200)(&s.name));
        let role = s.approver_role.as_deref().and_then(|r| {
            fields.take(
                &at("approver_role"),
                one_of(&["admin", "manager", "lead", "member"])(r),
            )
        });
        let email = s.approver_email.as_deref().and_then(|e| {
            fields.take(
                &at("approver_email"),
                EmailAddress::parse(e).map(|e| e.to_string()),
            )
        });
        if s.approver_role.is_none() && s.approver_user_id.is_none() && s.approver_email.is_none() {
            fields.reject(
                &at("approver_role"),
                "name at least one approver: approver_role, approver_user_id or approver_email",
            );
        }
        let sla = fields.take(
            &at("sla_seconds"),
            seconds(1, "the SLA")(s.sla_seconds.unwrap_or(DEFAULT_SLA)),
        );
        let nudge = fields.take(
            &at("nudge_every_seconds"),
            seconds(3600, "the nudge interval")(s.nudge_every_seconds.unwrap_or(DEFAULT_NUDGE)),
        );
        let after = fields.take(
            &at("escalate_after_nudges"),
            i16::try_from(s.escalate_after_nudges.unwrap_or(3))
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| Invalid("must be 1 to 100".into())),
        );
        let escalate = s.escalate_to_role.as_deref().and_then(|r| {
            fields.take(
                &at("escalate_to_role"),
                one_of(&["admin", "manager", "lead"])(r),
            )
        });
        if let (Some(name), Some(sla), Some(nudge), Some(after)) = (name, sla, nudge, after) {
            out.push(approvals::Stage {
                name,
                approver_role: role,
                approver_user_id: s.approver_user_id,
                approver_email: email,
                sla_seconds: sla,
                nudge_every_seconds: nudge,
                escalate_after_nudges: after,
                escalate_to_role: escalate,
            });
        }
    }
    out
}

/// 422 naming each stage whose `approver_user_id` is no member of the organization.
async fn check_members<P>(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<P>,
    stages: &[approvals::Stage],
) -> Result<(), ApiError> {
    let mut fields = Fields::default();
    for (i, stage) in stages.iter().enumerate() {
        if let Some(user_id) = stage.approver_user_id
            && !approvals::is_member(conn, proof, user_id).await?
        {
            fields.reject(
                &format!("stages[{i}].approver_user_id"),
                "is not a member of the organization",
            );
        }
    }
    fields.finish()
}

fn template_not_found() -> ApiError {
    ApiError::NotFound {
        code: "approval_template_not_found",
        detail: "No approval template with this id in the organization.".into(),
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "approval_not_found",
        detail: "No approval with this id in the organization.".into(),
    }
}

fn finished() -> ApiError {
    ApiError::Conflict {
        code: "approval_finished",
        detail: "This approval has ended; nothing is left to decide.".into(),
    }
}

/// A template with its stages.
async fn load_template<P>(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> Result<ApprovalTemplate, ApiError> {
    let template = approvals::get_template(conn, proof, id)
        .await?
        .ok_or_else(template_not_found)?;
    with_stages(conn, proof, vec![template])
        .await?
        .pop()
        .ok_or_else(template_not_found)
}

async fn with_stages<P>(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<P>,
    templates: Vec<approvals::Template>,
) -> Result<Vec<ApprovalTemplate>, ApiError> {
    let ids: Vec<Uuid> = templates.iter().map(|t| t.id).collect();
    let stages = approvals::stages(conn, proof, &ids).await?;
    Ok(templates
        .into_iter()
        .map(|t| {
            let stages = stages
                .iter()
                .filter(|(id, _)| *id == t.id)
                .enumerate()
                .map(|(i, (_, s))| ApprovalStage {
                    position: i32::try_from(i + 1).unwrap_or(i32::MAX),
                    name: s.name.clone(),
                    approver_role: s.approver_role.clone(),
                    approver_user_id: s.approver_user_id,
                    approver_email: s.approver_email.clone(),
                    sla_seconds: s.sla_seconds,
                    nudge_every_seconds: s.nudge_every_seconds,
                    escalate_after_nudges: s.escalate_after_nudges.into(),
                    escalate_to_role: s.escalate_to_role.clone(),
                })
                .collect();
            ApprovalTemplate {
                id: t.id,
                name: t.name,
                description: t.description,
                subject_type: t.subject_type,
                project_id: t.project_id,
                allow_self_approval: t.allow_self_approval,
                archived_at: t.archived_at,
                stages,
                created_at: t.created_at,
                updated_at: t.updated_at,
            }
        })
        .collect())
}

/// Approvals with their steps.
async fn with_steps<P>(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<P>,
    instances: Vec<Instance>,
) -> Result<Vec<Approval>, ApiError> {
    let ids: Vec<Uuid> = instances.iter().map(|i| i.id).collect();
    let mut steps = approvals::steps(conn, proof, &ids).await?;
    Ok(instances
        .into_iter()
        .map(|i| {
            let (mine, rest) = steps.drain(..).partition(|s| s.instance_id == i.id);
            steps = rest;
            Approval::new(i, mine)
        })
        .collect())
}

async fn load_approval<P>(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> Result<Approval, ApiError> {
    let instance = approvals::get_instance(conn, proof, id)
        .await?
        .ok_or_else(not_found)?;
    with_steps(conn, proof, vec![instance])
        .await?
        .pop()
        .ok_or_else(not_found)
}

/// Makes `step` the pending one and emails its approvers, in the caller's transaction.
async fn open_step<P>(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    proof: &Granted<P>,
    instance: &Instance,
    step: &Step,
) -> Result<(), ApiError> {
    approvals::activate_step(conn, proof, step.id).await?;
    let org = proof.organization_id();
    let subject =
        approvals::subject(conn, org, &instance.subject_type, instance.subject_id).await?;
    let item = Item::new(
        &instance.subject_type,
        subject,
        state.settings.http.public_url.as_str(),
        instance.id,
    );
    let requester = match instance.started_by {
        Some(user) => approvals::user_name(conn, user).await?,
        None => None,
    }
    .unwrap_or_else(|| "An API client".to_owned());
    let recipients = approvals::approvers(
        conn,
        org,
        Approvers {
            role: step.approver_role.as_deref(),
            user_id: step.approver_user_id,
            email: step.approver_email.as_deref(),
        },
    )
    .await?;
    enqueue_requests(
        conn,
        &state.settings.encryption_key,
        org,
        step.id,
        &step.name,
        &requester,
        &item,
        &recipients,
    )
    .await
    .map_err(|e| ApiError::Internal(e.into()))
}

/// The one place an approval ends (`approved`, `rejected` or `cancelled`): the instance's
/// status, its remaining steps skipped, and an invoice's status following the outcome — all in
/// the caller's transaction. The `approval.completed` webhook event belongs here.
pub async fn complete_approval<P>(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<P>,
    instance: &Instance,
    outcome: &'static str,
) -> Result<(), ApiError> {
    if !approvals::finish_instance(conn, proof, instance.id, outcome).await? {
        return Err(finished());
    }
    if instance.subject_type == "invoice" && outcome != "cancelled" {
        approvals::set_invoice_status(conn, proof, instance.subject_id, outcome).await?;
    }
    if outcome != "cancelled" {
        zoark_jobs::webhooks::emit(
            conn,
            proof.organization_id(),
            zoark_core::webhooks::EventType::ApprovalCompleted,
            serde_json::json!({ "approval": {
                "id": instance.id,
                "template_id": instance.template_id,
                "subject_type": instance.subject_type,
                "subject_id": instance.subject_id,
                "outcome": outcome,
                "completed_at": chrono::Utc::now(),
            }}),
        )
        .await?;
    }
    Ok(())
}

/// `true` when the caller may decide `step`: admins always; a role that includes the step's
/// role; the named user; the user whose address is the named email.
async fn may_decide(
    conn: &mut sqlx::PgConnection,
    proof: &Granted<DecideApprovals>,
    step: &Step,
) -> Result<bool, ApiError> {
    let role = proof.role();
    if role == Role::Admin {
        return Ok(true);
    }
    if let Some(wanted) = step.approver_role.as_deref().and_then(|r| r.parse().ok())
        && role.includes(wanted)
    {
        return Ok(true);
    }
    let Some(user) = proof.actor().user_id() else {
        return Ok(false);
    };
    if step.approver_user_id == Some(user) {
        return Ok(true);
    }
    if let Some(named) = &step.approver_email {
        let email = approvals::user_email(conn, user).await?;
        return Ok(email.is_some_and(|e| e.eq_ignore_ascii_case(named)));
    }
    Ok(false)
}

/// Approves or rejects the pending step of approval `id`.
async fn decide(
    state: &AppState,
    granted: &Granted<DecideApprovals>,
    id: Uuid,
    approve: bool,
    decision: Decision,
) -> Result<Approval, ApiError> {
    let mut fields = Fields::default();
    let comment = match decision.comment.map(|c| c.trim().to_owned()) {
        Some(c) if c.chars().count() > 5000 => {
            fields.reject("comment", "must be at most 5000 characters");
            None
        }
        Some(c) if c.is_empty() => None,
        other => other,
    };
    if !approve && comment.is_none() {
        fields.reject("comment", "is required to reject");
    }
    fields.finish()?;
    let mut tx = tenant::begin(&state.pool, granted).await?;
    // The lock serializes decisions on one approval: the second sees the first's outcome.
    let instance = approvals::lock_instance(&mut tx, granted, id)
        .await?
        .ok_or_else(not_found)?;
    if instance.status != "in_progress" {
        return Err(finished());
    }
    let steps = approvals::steps(&mut tx, granted, &[id]).await?;
    let current = steps
        .iter()
        .find(|s| s.status == "pending")
        .ok_or_else(finished)?;
    if decision.step_id.is_some_and(|wanted| wanted != current.id) {
        return Err(ApiError::Conflict {
            code: "approval_step_not_pending",
            detail: "That step is not the pending one any more; reload the approval.".into(),
        });
    }
    if approve
        && !instance.allow_self_approval
        && instance.started_by.is_some()
        && instance.started_by == granted.actor().user_id()
    {
        return Err(ApiError::Refused {
            code: "self_approval_refused",
            detail: "You started this approval, so someone else must approve it (its template \
                     does not allow self-approval); you may reject or cancel it."
                .into(),
        });
    }
    if !may_decide(&mut tx, granted, current).await? {
        return Err(ApiError::Refused {
            code: "not_an_approver",
            detail: format!(
                "You are not an approver of the pending step `{}`.",
                current.name
            ),
        });
    }
    let status = if approve { "approved" } else { "rejected" };
    if !approvals::decide_step(&mut tx, granted, current.id, status, comment.as_deref()).await? {
        return Err(finished());
    }
    let next = steps.iter().find(|s| s.position > current.position);
    match next {
        Some(next) if approve => open_step(&mut tx, state, granted, &instance, next).await?,
        _ => complete_approval(&mut tx, granted, &instance, status).await?,
    }
    let approval = load_approval(&mut tx, granted, id).await?;
    tx.commit().await?;
    Ok(approval)
}

#[OpenApi(tag = "ApiTags::Approvals", prefix_path = "/api/v1/approval-templates")]
impl ApprovalTemplatesApi {
    /// Create an approval template
    ///
    /// Stages in order, each naming at least one approver (`approver_role`, `approver_user_id`
    /// of a member, or `approver_email`), its SLA and nudging (durations in seconds).
    /// 422 names each bad field, e.g. `stages[1].nudge_every_seconds`. `Idempotency-Key`
    /// replays the first response of a retried request. Needs `approval_templates.manage`
    /// (manager).
    #[oai(
        path = "/",
        method = "post",
        operation_id = "approval_templates_create"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewApprovalTemplate>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<ApprovalTemplateCreated, ApiError> {
        let granted = auth.grant::<ManageApprovalTemplates>(&state).await?;
        let body = body.0;
        let key = idempotency::Key::parse(
            idempotency_key.0.as_deref(),
            "approval_templates_create",
            &body,
        )?;
        let organization_id = granted.organization_id();
        let mut fields = Fields::default();
        let name = fields.take("name", text(200)(&body.name));
        let description = body
            .description
            .as_deref()
            .and_then(|d| fields.take("description", description(d)));
        let subject_type = fields.take("subject_type", one_of(&SUBJECT_TYPES)(&body.subject_type));
        let stages = parse_stages(&mut fields, body.stages);
        fields.finish()?;
        let (Some(name), Some(subject_type)) = (name, subject_type) else {
            return Err(ApiError::Validation(Vec::new()));
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key
                .begin::<ApprovalTemplate>(&mut tx, organization_id)
                .await?
        {
            tx.commit().await?;
            return Ok(ApprovalTemplateCreated::Created(Json(replay), Some(true)));
        }
        check_members(&mut tx, &granted, &stages).await?;
        let id = approvals::insert_template(
            &mut tx,
            &granted,
            &name,
            description.as_deref(),
            &subject_type,
            body.project_id,
            body.allow_self_approval.unwrap_or(false),
        )
        .await
        .map_err(|e| match e {
            approvals::WriteError::UnknownProject => {
                ApiError::Validation(vec![crate::error::FieldError {
                    field: "project_id".into(),
                    message: "no such project in the organization".into(),
                }])
            }
            approvals::WriteError::Database(e) => e.into(),
        })?;
        approvals::replace_stages(&mut tx, &granted, id, &stages).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("approval_template.created", &client(req, &state.settings))
                .on("approval_template", id),
        )
        .await?;
        let template = load_template(&mut tx, &granted, id).await?;
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &template).await?;
        }
        tx.commit().await?;
        Ok(ApprovalTemplateCreated::Created(Json(template), None))
    }

    /// List approval templates
    ///
    /// Newest first; filter by `subject_type`, `project_id` and `archived` (`false`: active
    /// ones only). Needs `approvals.read` (member).
    #[oai(path = "/", method = "get", operation_id = "approval_templates_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        subject_type: Query<Option<String>>,
        project_id: Query<Option<Uuid>>,
        archived: Query<Option<bool>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<ApprovalTemplateList>, ApiError> {
        let granted = auth.grant::<ReadApprovals>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = approvals::list_templates(
            &mut tx,
            &granted,
            &approvals::TemplateFilter {
                subject_type: subject_type.0,
                project_id: project_id.0,
                archived: archived.0,
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        let (rows, next_cursor) = page.page(rows, |t| t.id);
        let items = with_stages(&mut tx, &granted, rows).await?;
        tx.commit().await?;
        Ok(Json(ApprovalTemplateList { items, next_cursor }))
    }

    /// Get an approval template
    ///
    /// With its stages and an `ETag`; `If-None-Match` with it answers 304 while nothing
    /// changed. Needs `approvals.read` (member).
    #[oai(path = "/:id", method = "get", operation_id = "approval_templates_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<ApprovalTemplate>, ApiError> {
        let granted = auth.grant::<ReadApprovals>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let template = load_template(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(etag::found(template, if_none_match.0.as_deref()))
    }

    /// Change an approval template
    ///
    /// `name`, `description` (`null` clears it) and `stages` (the whole list, replaced in one
    /// transaction). Approvals already running keep their steps. Needs
    /// `approval_templates.manage` (manager).
    #[oai(
        path = "/:id",
        method = "patch",
        operation_id = "approval_templates_update"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<ApprovalTemplatePatch>,
    ) -> Result<Json<ApprovalTemplate>, ApiError> {
        let granted = auth.grant::<ManageApprovalTemplates>(&state).await?;
        let body = body.0;
        let mut fields = Fields::default();
        let name = match body.name {
            MaybeUndefined::Value(v) => fields.take("name", text(200)(&v)),
            MaybeUndefined::Null => {
                fields.reject("name", "cannot be null");
                None
            }
            MaybeUndefined::Undefined => None,
        };
        let description = match body.description {
            MaybeUndefined::Value(v) => fields.take("description", description(&v)).map(Some),
            MaybeUndefined::Null => Some(None),
            MaybeUndefined::Undefined => None,
        };
        let allow_self_approval = match body.allow_self_approval {
            MaybeUndefined::Value(v) => Some(v),
            MaybeUndefined::Null => {
                fields.reject("allow_self_approval", "cannot be null");
                None
            }
            MaybeUndefined::Undefined => None,
        };
        let stages = match body.stages {
            MaybeUndefined::Value(v) => Some(parse_stages(&mut fields, v)),
            MaybeUndefined::Null => {
                fields.reject("stages", "cannot be null");
                None
            }
            MaybeUndefined::Undefined => None,
        };
        fields.finish()?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !approvals::update_template(
            &mut tx,
            &granted,
            id.0,
            name.as_deref(),
            description.as_ref().map(Option::as_deref),
            allow_self_approval,
        )
        .await?
        {
            return Err(template_not_found());
        }
        if let Some(stages) = &stages {
            check_members(&mut tx, &granted, stages).await?;
            approvals::replace_stages(&mut tx, &granted, id.0, stages).await?;
        }
        let template = load_template(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(Json(template))
    }

    /// Archive an approval template
    ///
    /// No new approval starts from it; running ones go on. Idempotent. Needs
    /// `approval_templates.manage` (manager). Audited as `approval_template.archived`.
    #[oai(
        path = "/:id/archive",
        method = "post",
        operation_id = "approval_templates_archive"
    )]
    async fn archive(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<Json<ApprovalTemplate>, ApiError> {
        let granted = auth.grant::<ManageApprovalTemplates>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !approvals::archive_template(&mut tx, &granted, id.0).await? {
            return Err(template_not_found());
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("approval_template.archived", &client(req, &state.settings))
                .on("approval_template", id.0),
        )
        .await?;
        let template = load_template(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(Json(template))
    }

    /// Delete an approval template
    ///
    /// Its stages go with it; approvals started from it keep their copied steps. Needs
    /// `approval_templates.manage` (manager). Audited as `approval_template.deleted`.
    #[oai(
        path = "/:id",
        method = "delete",
        operation_id = "approval_templates_delete"
    )]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageApprovalTemplates>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let template = approvals::get_template(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(template_not_found)?;
        approvals::delete_template(&mut tx, &granted, id.0).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("approval_template.deleted", &client(req, &state.settings))
                .on("approval_template", id.0)
                .with(serde_json::json!({ "name": template.name })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}

#[OpenApi(tag = "ApiTags::Approvals", prefix_path = "/api/v1/approvals")]
impl ApprovalsApi {
    /// Start an approval
    ///
    /// On an invoice, task or document of the organization, from an active template for that
    /// kind of item: the stages become steps, the first is pending (due after its SLA) and its
    /// approvers are emailed. 409 `approval_already_running` while another approval runs on
    /// the item; 409 `approval_template_archived`. `Idempotency-Key` replays the first
    /// response of a retried request. Needs `approvals.start` (member).
    #[oai(path = "/", method = "post", operation_id = "approvals_start")]
    async fn start(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewApproval>,
        /// Makes a retried start safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<ApprovalCreated, ApiError> {
        let granted = auth.grant::<StartApprovals>(&state).await?;
        let body = body.0;
        let key = idempotency::Key::parse(idempotency_key.0.as_deref(), "approvals_start", &body)?;
        let organization_id = granted.organization_id();
        let mut fields = Fields::default();
        let subject_type = fields.take("subject_type", one_of(&SUBJECT_TYPES)(&body.subject_type));
        fields.finish()?;
        let Some(subject_type) = subject_type else {
            return Err(ApiError::Validation(Vec::new()));
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<Approval>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(ApprovalCreated::Created(Json(replay), Some(true)));
        }
        let mut fields = Fields::default();
        let template = approvals::get_template(&mut tx, &granted, body.template_id).await?;
        let subject =
            approvals::subject(&mut tx, organization_id, &subject_type, body.subject_id).await?;
        match &template {
            None => fields.reject("template_id", "no such template in the organization"),
            Some(t) if t.subject_type != subject_type => fields.reject(
                "subject_type",
                &format!("the template approves items of type {}", t.subject_type),
            ),
            Some(_) => {}
        }
        match (&template, &subject) {
            (_, None) => fields.reject(
                "subject_id",
                &format!("no {subject_type} with this id in the organization"),
            ),
            (Some(t), Some(s))
                if t.project_id.is_some()
                    && s.project_id.is_some()
                    && t.project_id != s.project_id =>
            {
                fields.reject("subject_id", "is not in the template's project");
            }
            _ => {}
        }
        fields.finish()?;
        let Some(template) = template else {
            return Err(template_not_found());
        };
        if template.archived_at.is_some() {
            return Err(ApiError::Conflict {
                code: "approval_template_archived",
                detail: "This template is archived; it starts no new approvals.".into(),
            });
        }
        let id = approvals::start_instance(
            &mut tx,
            &granted,
            template.id,
            &subject_type,
            body.subject_id,
        )
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: "approval_already_running",
            detail: "An approval is already running on this item; cancel it first.".into(),
        })?;
        let instance = approvals::get_instance(&mut tx, &granted, id)
            .await?
            .ok_or_else(not_found)?;
        let steps = approvals::steps(&mut tx, &granted, &[id]).await?;
        let first = steps.first().ok_or_else(|| ApiError::Conflict {
            code: "approval_template_empty",
            detail: "This template has no stages.".into(),
        })?;
        open_step(&mut tx, &state, &granted, &instance, first).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("approval.started", &client(req, &state.settings)).on("approval", id),
        )
        .await?;
        let approval = load_approval(&mut tx, &granted, id).await?;
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &approval).await?;
        }
        tx.commit().await?;
        Ok(ApprovalCreated::Created(Json(approval), None))
    }

    /// List approvals
    ///
    /// Newest first, with their steps; filter by `status` (`in_progress`, `approved`,
    /// `rejected`, `cancelled`), `subject_type` and `subject_id`. Needs `approvals.read`
    /// (member).
    #[oai(path = "/", method = "get", operation_id = "approvals_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        status: Query<Option<String>>,
        subject_type: Query<Option<String>>,
        subject_id: Query<Option<Uuid>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<ApprovalList>, ApiError> {
        let granted = auth.grant::<ReadApprovals>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = approvals::list_instances(
            &mut tx,
            &granted,
            &approvals::InstanceFilter {
                status: status.0,
                subject_type: subject_type.0,
                subject_id: subject_id.0,
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        let (rows, next_cursor) = page.page(rows, |i| i.id);
        let items = with_steps(&mut tx, &granted, rows).await?;
        tx.commit().await?;
        Ok(Json(ApprovalList { items, next_cursor }))
    }

    /// Get an approval
    ///
    /// With its steps and an `ETag`; `If-None-Match` with it answers 304 while nothing
    /// changed. Needs `approvals.read` (member).
    #[oai(path = "/:id", method = "get", operation_id = "approvals_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<Approval>, ApiError> {
        let granted = auth.grant::<ReadApprovals>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let approval = load_approval(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(etag::found(approval, if_none_match.0.as_deref()))
    }

    /// Approve the pending step
    ///
    /// The next step becomes pending and its approvers are emailed; after the last step the
    /// approval is `approved` (an invoice becomes `approved` too). Only an approver of the
    /// step decides (403 `not_an_approver`); 409 `approval_finished` once it ended. Needs
    /// `approvals.decide` (member).
    #[oai(
        path = "/:id/approve",
        method = "post",
        operation_id = "approvals_approve"
    )]
    async fn approve(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<Decision>,
    ) -> Result<Json<Approval>, ApiError> {
        let granted = auth.grant::<DecideApprovals>(&state).await?;
        Ok(Json(decide(&state, &granted, id.0, true, body.0).await?))
    }

    /// Reject the pending step
    ///
    /// With a `comment` (required): the approval ends `rejected` (an invoice becomes
    /// `rejected` too). Only an approver of the step decides (403 `not_an_approver`); 409
    /// `approval_finished` once it ended. Needs `approvals.decide` (member).
    #[oai(
        path = "/:id/reject",
        method = "post",
        operation_id = "approvals_reject"
    )]
    async fn reject(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<Decision>,
    ) -> Result<Json<Approval>, ApiError> {
        let granted = auth.grant::<DecideApprovals>(&state).await?;
        Ok(Json(decide(&state, &granted, id.0, false, body.0).await?))
    }

    /// Cancel an approval
    ///
    /// Ends a running approval `cancelled` (the item's status stays as it is). The member who
    /// started it, or a manager, may cancel (403 `not_the_starter` otherwise); 409
    /// `approval_finished` once it ended. Needs `approvals.start` (member). Audited as
    /// `approval.cancelled`.
    #[oai(
        path = "/:id/cancel",
        method = "post",
        operation_id = "approvals_cancel"
    )]
    async fn cancel(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<Json<Approval>, ApiError> {
        let granted = auth.grant::<StartApprovals>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let instance = approvals::lock_instance(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        if instance.status != "in_progress" {
            return Err(finished());
        }
        let starter =
            instance.started_by.is_some() && instance.started_by == granted.actor().user_id();
        if !starter && !granted.role().includes(Role::Manager) {
            return Err(ApiError::Refused {
                code: "not_the_starter",
                detail: "Only who started this approval, or a manager, may cancel it.".into(),
            });
        }
        complete_approval(&mut tx, &granted, &instance, "cancelled").await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("approval.cancelled", &client(req, &state.settings)).on("approval", id.0),
        )
        .await?;
        let approval = load_approval(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(Json(approval))
    }
}
