//! `/api/v1/team-members`: the team directory — people with their role, department, avatar and
//! working hours in their own time zone. Broadcasts, assignments and reminders address them.

use chrono::{DateTime, NaiveTime, Utc};
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
    access::{ManageTeam, ReadTeam},
    db::{
        audit::{self, Entry},
        team_members::{self, WriteError},
        tenant,
    },
    identity::{EmailAddress, Invalid, Name},
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, Fields},
    etag, idempotency,
    json::JsonBody,
    pagination::PageRequest,
    routes::{
        ApiTags, NoContent,
        organization::{logo_url, optional, time_zone},
    },
    state::AppState,
};

pub struct TeamMembersApi;

/// `POST /team-members`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewTeamMember {
    pub name: String,
    pub email: String,
    /// Job title, e.g. `Site lead`.
    pub role: Option<String>,
    pub department: Option<String>,
    /// An http(s) URL.
    pub avatar_url: Option<String>,
    /// IANA time zone of the working hours (default `UTC`).
    pub time_zone: Option<String>,
    /// `HH:MM`, with `work_ends_at`.
    pub work_starts_at: Option<String>,
    /// `HH:MM`, after `work_starts_at`.
    pub work_ends_at: Option<String>,
    /// ISO weekdays, 1 = Monday (default Monday to Friday).
    pub working_days: Option<Vec<i16>>,
}

impl poem_openapi::types::Example for NewTeamMember {
    fn example() -> Self {
        Self {
            name: "Grace Hopper".into(),
            email: "grace@example.com".into(),
            role: Some("Engineer".into()),
            department: Some("Platform".into()),
            avatar_url: None,
            time_zone: Some("America/New_York".into()),
            work_starts_at: Some("09:00".into()),
            work_ends_at: Some("17:30".into()),
            working_days: Some(vec![1, 2, 3, 4, 5]),
        }
    }
}

/// `PATCH /team-members/{id}`: absent fields stay; `null` clears an optional one.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct TeamMemberPatch {
    #[serde(default)]
    pub name: MaybeUndefined<String>,
    #[serde(default)]
    pub email: MaybeUndefined<String>,
    #[serde(default)]
    pub role: MaybeUndefined<String>,
    #[serde(default)]
    pub department: MaybeUndefined<String>,
    #[serde(default)]
    pub avatar_url: MaybeUndefined<String>,
    #[serde(default)]
    pub time_zone: MaybeUndefined<String>,
    #[serde(default)]
    pub work_starts_at: MaybeUndefined<String>,
    #[serde(default)]
    pub work_ends_at: MaybeUndefined<String>,
    #[serde(default)]
    pub working_days: MaybeUndefined<Vec<i16>>,
}

impl poem_openapi::types::Example for TeamMemberPatch {
    fn example() -> Self {
        Self {
            name: MaybeUndefined::Undefined,
            email: MaybeUndefined::Undefined,
            role: MaybeUndefined::Value("Staff engineer".into()),
            department: MaybeUndefined::Null,
            avatar_url: MaybeUndefined::Undefined,
            time_zone: MaybeUndefined::Undefined,
            work_starts_at: MaybeUndefined::Value("08:30".into()),
            work_ends_at: MaybeUndefined::Undefined,
            working_days: MaybeUndefined::Undefined,
        }
    }
}

impl From<NewTeamMember> for TeamMemberPatch {
    fn from(n: NewTeamMember) -> Self {
        let set = |v: Option<String>| v.map_or(MaybeUndefined::Undefined, MaybeUndefined::Value);
        Self {
            name: MaybeUndefined::Value(n.name),
            email: MaybeUndefined::Value(n.email),
            role: set(n.role),
            department: set(n.department),
            avatar_url: set(n.avatar_url),
            time_zone: set(n.time_zone),
            work_starts_at: set(n.work_starts_at),
            work_ends_at: set(n.work_ends_at),
            working_days: n
                .working_days
                .map_or(MaybeUndefined::Undefined, MaybeUndefined::Value),
        }
    }
}

/// A person of the directory.
#[derive(Debug, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct TeamMember {
    pub id: Uuid,
    /// Their login, when they have one.
    pub user_id: Option<Uuid>,
    pub name: String,
    pub email: String,
    pub role: Option<String>,
    pub department: Option<String>,
    pub avatar_url: Option<String>,
    pub time_zone: String,
    pub work_starts_at: Option<String>,
    pub work_ends_at: Option<String>,
    pub working_days: Vec<i16>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl poem_openapi::types::Example for TeamMember {
    fn example() -> Self {
        Self {
            id: uuid::Uuid::from_u128(0x0192_5f3a_7c1e_7b2d_9a41_3e6f_0c8d_2b17),
            user_id: None,
            name: "Grace Hopper".into(),
            email: "grace@example.com".into(),
            role: Some("Engineer".into()),
            department: Some("Platform".into()),
            avatar_url: None,
            time_zone: "America/New_York".into(),
            work_starts_at: Some("09:00".into()),
            work_ends_at: Some("17:30".into()),
            working_days: vec![1, 2, 3, 4, 5],
            created_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
            updated_at: chrono::DateTime::from_timestamp(1_795_694_400, 0).unwrap_or_default(),
        }
    }
}

impl From<team_members::Member> for TeamMember {
    fn from(m: team_members::Member) -> Self {
        let hhmm = |t: Option<NaiveTime>| t.map(|t| t.format("%H:%M").to_string());
        Self {
            id: m.id,
            user_id: m.user_id,
            name: m.name,
            email: m.email,
            role: m.role,
            department: m.department,
            avatar_url: m.avatar_url,
            time_zone: m.time_zone,
            work_starts_at: hhmm(m.work_starts_at),
            work_ends_at: hhmm(m.work_ends_at),
            working_days: m.working_days,
            created_at: m.created_at,
            updated_at: m.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct TeamMemberList {
    pub items: Vec<TeamMember>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum TeamMemberCreated {
    /// The member.
    #[oai(status = 201)]
    Created(
        Json<TeamMember>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

/// One line of 1 to `max` characters, trimmed.
pub(crate) fn text(max: usize) -> impl Fn(&str) -> Result<String, Invalid> {
    move |raw: &str| {
        let v = raw.trim();
        if v.is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
            Err(Invalid(format!(
                "must be 1 to {max} characters on one line"
            )))
        } else {
            Ok(v.to_owned())
        }
    }
}

fn clock(raw: &str) -> Result<NaiveTime, Invalid> {
    NaiveTime::parse_from_str(raw, "%H:%M").map_err(|_| Invalid("must be a time like 09:30".into()))
}

/// Parses a patch (a create is a patch with every given field set).
fn parse(body: TeamMemberPatch, creating: bool) -> Result<team_members::Fields, ApiError> {
    let mut fields = Fields::default();
    let mut out = team_members::Fields::default();
    let required = |fields: &mut Fields,
                    field: &str,
                    v: MaybeUndefined<String>,
                    parse: &dyn Fn(&str) -> Result<String, Invalid>| match v {
        MaybeUndefined::Value(v) => fields.take(field, parse(&v)),
        MaybeUndefined::Null => {
            fields.reject(field, "cannot be null");
            None
        }
        MaybeUndefined::Undefined => {
            if creating {
                fields.reject(field, "is required");
            }
            None
        }
    };
    out.name = required(&mut fields, "name", body.name, &|v| {
        Name::parse(v).map(|n| n.as_str().to_owned())
    });
    out.email = required(&mut fields, "email", body.email, &|v| {
        EmailAddress::parse(v).map(|e| e.to_string())
    });
    out.role = optional(&mut fields, "role", body.role, text(100));
    out.department = optional(&mut fields, "department", body.department, text(100));
    out.avatar_url = optional(&mut fields, "avatar_url", body.avatar_url, logo_url);
    out.time_zone = match body.time_zone {
        MaybeUndefined::Value(v) => fields.take("time_zone", time_zone(&v)),
        MaybeUndefined::Null => {
            fields.reject("time_zone", "cannot be null (use UTC)");
            None
        }
        MaybeUndefined::Undefined => None,
    };
    let starts = optional(&mut fields, "work_starts_at", body.work_starts_at, clock);
    let ends = optional(&mut fields, "work_ends_at", body.work_ends_at, clock);
    out.hours = match (starts, ends) {
        (None, None) => None,
        (Some(None), Some(None)) => Some(None),
        (Some(Some(s)), Some(Some(e))) if s < e => Some(Some((s, e))),
        (Some(Some(_)), Some(Some(_))) => {
            fields.reject("work_ends_at", "must be after work_starts_at");
            None
        }
        _ => {
            fields.reject(
                "work_starts_at",
                "work_starts_at and work_ends_at are set or cleared together",
            );
            None
        }
    };
    out.working_days = match body.working_days {
        MaybeUndefined::Value(days) => {
            if days.is_empty() || days.len() > 7 || days.iter().any(|d| !(1..=7).contains(d)) {
                fields.reject("working_days", "ISO weekdays 1 (Monday) to 7, at least one");
                None
            } else {
                let mut days = days;
                days.sort_unstable();
                days.dedup();
                Some(days)
            }
        }
        MaybeUndefined::Null => {
            fields.reject("working_days", "cannot be null");
            None
        }
        MaybeUndefined::Undefined => None,
    };
    fields.finish()?;
    Ok(out)
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "team_member_not_found",
        detail: "No team member with this id in the organization.".into(),
    }
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::NotFound => not_found(),
        WriteError::DuplicateEmail => ApiError::Conflict {
            code: "team_member_exists",
            detail: "Another team member of the organization has this email address.".into(),
        },
        WriteError::Database(e) => e.into(),
    }
}

#[OpenApi(tag = "ApiTags::Team", prefix_path = "/api/v1/team-members")]
impl TeamMembersApi {
    /// Add a team member
    ///
    /// 409 `team_member_exists` when the address is taken. `Idempotency-Key` replays the first
    /// response of a retried request. Needs `team.manage` (manager).
    #[oai(path = "/", method = "post", operation_id = "team_members_create")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewTeamMember>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<TeamMemberCreated, ApiError> {
        let granted = auth.grant::<ManageTeam>(&state).await?;
        let body = body.0;
        let key =
            idempotency::Key::parse(idempotency_key.0.as_deref(), "team_members_create", &body)?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<TeamMember>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(TeamMemberCreated::Created(Json(replay), Some(true)));
        }
        let fields = parse(body.into(), true)?;
        let id = team_members::insert(&mut tx, &granted, &fields)
            .await
            .map_err(write_error)?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("team_member.created", &client(req, &state.settings)).on("team_member", id),
        )
        .await?;
        let member: TeamMember = team_members::get(&mut tx, &granted, id)
            .await?
            .ok_or_else(not_found)?
            .into();
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &member).await?;
        }
        tx.commit().await?;
        Ok(TeamMemberCreated::Created(Json(member), None))
    }

    /// List team members
    ///
    /// Newest first; filter by `department` (exact, case-insensitive) or `q` (part of the name
    /// or email). Needs `team.read` (viewer).
    #[oai(path = "/", method = "get", operation_id = "team_members_list")]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        department: Query<Option<String>>,
        q: Query<Option<String>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<TeamMemberList>, ApiError> {
        let granted = auth.grant::<ReadTeam>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = team_members::list(
            &mut tx,
            &granted,
            &team_members::Filter {
                department: department.0.filter(|d| !d.is_empty()),
                query: q.0.filter(|q| !q.is_empty()),
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |m| m.id);
        Ok(Json(TeamMemberList {
            items: rows.into_iter().map(TeamMember::from).collect(),
            next_cursor,
        }))
    }

    /// Get a team member
    ///
    /// With an `ETag`; `If-None-Match` with it answers 304 while nothing changed. Needs
    /// `team.read` (viewer).
    #[oai(path = "/:id", method = "get", operation_id = "team_members_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<TeamMember>, ApiError> {
        let granted = auth.grant::<ReadTeam>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let member: TeamMember = team_members::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        tx.commit().await?;
        Ok(etag::found(member, if_none_match.0.as_deref()))
    }

    /// Change a team member
    ///
    /// Absent fields stay; `null` clears an optional one. Needs `team.manage` (manager).
    #[oai(path = "/:id", method = "patch", operation_id = "team_members_update")]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        body: JsonBody<TeamMemberPatch>,
    ) -> Result<Json<TeamMember>, ApiError> {
        let granted = auth.grant::<ManageTeam>(&state).await?;
        let fields = parse(body.0, false)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        team_members::update(&mut tx, &granted, id.0, &fields)
            .await
            .map_err(write_error)?;
        let member = team_members::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Json(member.into()))
    }

    /// Remove a team member
    ///
    /// Their project memberships and task assignments go with them. Needs `team.manage`
    /// (manager). Audited as `team_member.deleted`.
    #[oai(path = "/:id", method = "delete", operation_id = "team_members_delete")]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageTeam>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let member = team_members::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        team_members::delete(&mut tx, &granted, id.0).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("team_member.deleted", &client(req, &state.settings))
                .on("team_member", id.0)
                .with(serde_json::json!({ "email": member.email })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}
