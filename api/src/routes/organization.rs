//! `/api/v1/organization`: the caller's organization (name, branding, settings) and its members.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{Object, OpenApi, param::Path, payload::Json, types::MaybeUndefined};
use serde::Deserialize;
use uuid::Uuid;
use zoark_core::{
    access::{
        DeleteOrganization, InviteMembers, ManageMembers, ReadMembers, ReadOrganization, Role,
        UpdateOrganization,
    },
    db::{
        self,
        api_keys::CreatorChange,
        audit::{self, Entry},
        invitations::InviteError,
        memberships::ChangeError,
        organizations::Patch,
        tenant,
    },
    identity::{EmailAddress, Invalid, Name},
};
use zoark_jobs::{Opts, email::SystemTemplate};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, FieldError, Fields},
    json::JsonBody,
    routes::{ApiTags, NoContent},
    state::AppState,
    system_email,
};

pub struct OrganizationApi;

/// The organization: its name, branding and settings.
#[derive(Debug, Object)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub branding: Branding,
    pub settings: OrganizationSettings,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// How the organization presents itself in emails and the dashboard.
#[derive(Debug, Object)]
pub struct Branding {
    /// Shown instead of `name` when set.
    pub display_name: Option<String>,
    /// An http(s) URL of the logo.
    pub logo_url: Option<String>,
    /// `#rrggbb`.
    pub primary_color: Option<String>,
}

#[derive(Debug, Object)]
pub struct OrganizationSettings {
    /// IANA time zone for schedules and reminders, e.g. `Europe/Paris`.
    pub time_zone: String,
    /// The email account system emails are sent from.
    pub default_sender_email_account_id: Option<Uuid>,
    /// USD millionths the organization's agent LLM steps may cost per calendar month (UTC);
    /// `null`: no limit. Each step reserves its estimated cost first; a run that finds no room
    /// ends `budget_exhausted` before asking.
    pub llm_monthly_budget_micros: Option<i64>,
    /// When set, every new API key must expire within this many days (1 to 3650).
    pub api_key_max_lifetime_days: Option<i32>,
}

impl From<db::organizations::Organization> for Organization {
    fn from(o: db::organizations::Organization) -> Self {
        Self {
            id: o.id,
            name: o.name,
            branding: Branding {
                display_name: o.display_name,
                logo_url: o.logo_url,
                primary_color: o.primary_color,
            },
            settings: OrganizationSettings {
                time_zone: o.time_zone,
                default_sender_email_account_id: o.default_sender_email_account_id,
                llm_monthly_budget_micros: o.llm_monthly_budget_micros,
                api_key_max_lifetime_days: o.api_key_max_lifetime_days,
            },
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

/// Changes to the organization: absent fields stay, `null` clears an optional one.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct OrganizationPatch {
    #[serde(default)]
    pub name: MaybeUndefined<String>,
    #[serde(default)]
    pub branding: MaybeUndefined<BrandingPatch>,
    #[serde(default)]
    pub settings: MaybeUndefined<SettingsPatch>,
}

impl poem_openapi::types::Example for OrganizationPatch {
    fn example() -> Self {
        Self {
            name: MaybeUndefined::Value("Analytical Engines Ltd".into()),
            branding: MaybeUndefined::Value(BrandingPatch {
                display_name: MaybeUndefined::Value("Analytical Engines".into()),
                logo_url: MaybeUndefined::Undefined,
                primary_color: MaybeUndefined::Value("#1f6feb".into()),
            }),
            settings: MaybeUndefined::Value(SettingsPatch {
                time_zone: MaybeUndefined::Value("Europe/London".into()),
                default_sender_email_account_id: MaybeUndefined::Undefined,
                llm_monthly_budget_micros: MaybeUndefined::Value(50_000_000),
                api_key_max_lifetime_days: MaybeUndefined::Value(90),
            }),
        }
    }
}

#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrandingPatch {
    #[serde(default)]
    pub display_name: MaybeUndefined<String>,
    #[serde(default)]
    pub logo_url: MaybeUndefined<String>,
    #[serde(default)]
    pub primary_color: MaybeUndefined<String>,
}

#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    #[serde(default)]
    pub time_zone: MaybeUndefined<String>,
    #[serde(default)]
    pub default_sender_email_account_id: MaybeUndefined<Uuid>,
    #[serde(default)]
    pub llm_monthly_budget_micros: MaybeUndefined<i64>,
    #[serde(default)]
    pub api_key_max_lifetime_days: MaybeUndefined<i32>,
}

/// The largest monthly LLM budget: a billion dollars, in millionths.
const MAX_BUDGET_MICROS: i64 = 1_000_000_000_000_000;

pub(crate) fn logo_url(raw: &str) -> Result<String, Invalid> {
    let url = url::Url::parse(raw.trim()).map_err(|e| Invalid(format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || raw.len() > 2048 {
        return Err(Invalid(
            "must be an http(s) URL of at most 2048 characters".into(),
        ));
    }
    Ok(url.to_string())
}

fn color(raw: &str) -> Result<String, Invalid> {
    let hex = raw.strip_prefix('#').unwrap_or_default();
    if hex.len() == 6 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(format!("#{}", hex.to_ascii_lowercase()))
    } else {
        Err(Invalid("must be a colour like #1a2b3c".into()))
    }
}

pub(crate) fn time_zone(raw: &str) -> Result<String, Invalid> {
    raw.parse::<chrono_tz::Tz>()
        .map(|tz| tz.name().to_owned())
        .map_err(|_| Invalid("is not an IANA time zone (e.g. Europe/Paris)".into()))
}

/// `MaybeUndefined<T>` → `None` (leave), `Some(None)` (clear), `Some(Some(v))` (set, parsed).
pub(crate) fn optional<T>(
    fields: &mut Fields,
    field: &str,
    value: MaybeUndefined<String>,
    parse: impl Fn(&str) -> Result<T, Invalid>,
) -> Option<Option<T>> {
    match value {
        MaybeUndefined::Undefined => None,
        MaybeUndefined::Null => Some(None),
        MaybeUndefined::Value(v) => fields.take(field, parse(&v)).map(Some),
    }
}

fn parse_patch(body: OrganizationPatch) -> Result<Patch, ApiError> {
    let mut fields = Fields::default();
    let mut patch = Patch::default();
    match body.name {
        MaybeUndefined::Undefined => {}
        MaybeUndefined::Null => fields.reject("name", "cannot be null"),
        MaybeUndefined::Value(name) => {
            patch.name = fields
                .take("name", Name::parse(&name))
                .map(|n| n.as_str().to_owned());
        }
    }
    match body.branding {
        MaybeUndefined::Value(b) => {
            patch.display_name =
                optional(&mut fields, "branding.display_name", b.display_name, |v| {
                    Name::parse(v).map(|n| n.as_str().to_owned())
                });
            patch.logo_url = optional(&mut fields, "branding.logo_url", b.logo_url, logo_url);
            patch.primary_color = optional(
                &mut fields,
                "branding.primary_color",
                b.primary_color,
                color,
            );
        }
        MaybeUndefined::Null => {
            patch.display_name = Some(None);
            patch.logo_url = Some(None);
            patch.primary_color = Some(None);
        }
        MaybeUndefined::Undefined => {}
    }
    match body.settings {
        MaybeUndefined::Value(s) => {
            match s.time_zone {
                MaybeUndefined::Undefined => {}
                MaybeUndefined::Null => fields.reject("settings.time_zone", "cannot be null"),
                MaybeUndefined::Value(tz) => {
                    patch.time_zone = fields.take("settings.time_zone", time_zone(&tz));
                }
            }
            patch.default_sender_email_account_id = match s.default_sender_email_account_id {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(id) => Some(Some(id)),
            };
            patch.llm_monthly_budget_micros = match s.llm_monthly_budget_micros {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(micros) if (0..=MAX_BUDGET_MICROS).contains(&micros) => {
                    Some(Some(micros))
                }
                MaybeUndefined::Value(_) => {
                    fields.reject(
                        "settings.llm_monthly_budget_micros",
                        "must be between 0 and 1000000000000000 (a billion dollars)",
                    );
                    None
                }
            };
            patch.api_key_max_lifetime_days = match s.api_key_max_lifetime_days {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(days) if (1..=3650).contains(&days) => Some(Some(days)),
                MaybeUndefined::Value(_) => {
                    fields.reject(
                        "settings.api_key_max_lifetime_days",
                        "must be between 1 and 3650",
                    );
                    None
                }
            };
        }
        MaybeUndefined::Null => fields.reject("settings", "cannot be null"),
        MaybeUndefined::Undefined => {}
    }
    fields.finish()?;
    Ok(patch)
}

/// `POST /organization/invitations`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewInvitation {
    pub email: String,
    /// The role the invitee gets; at most your own.
    pub role: RoleName,
}

impl poem_openapi::types::Example for NewInvitation {
    fn example() -> Self {
        Self {
            email: "grace@example.com".into(),
            role: RoleName::Member,
        }
    }
}

/// A pending invitation.
#[derive(Debug, Object)]
pub struct Invitation {
    pub id: Uuid,
    pub email: String,
    pub role: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(poem_openapi::ApiResponse)]
pub enum InvitationCreated {
    /// Invited; the email is on its way (a job).
    #[oai(status = 201)]
    Created(Json<Invitation>),
}

/// A member of the organization.
#[derive(Debug, Object)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    /// `admin`, `manager`, `lead`, `member` or `viewer`.
    pub role: String,
    pub joined_at: DateTime<Utc>,
}

#[derive(Debug, Object)]
pub struct MemberList {
    pub items: Vec<Member>,
}

/// A role, most powerful first.
#[derive(Debug, Clone, Copy, poem_openapi::Enum, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum RoleName {
    Admin,
    Manager,
    Lead,
    Member,
    Viewer,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Admin => Role::Admin,
            RoleName::Manager => Role::Manager,
            RoleName::Lead => Role::Lead,
            RoleName::Member => Role::Member,
            RoleName::Viewer => Role::Viewer,
        }
    }
}

/// `PATCH /organization/members/{user_id}`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct MemberPatch {
    pub role: RoleName,
}

impl poem_openapi::types::Example for MemberPatch {
    fn example() -> Self {
        Self {
            role: RoleName::Manager,
        }
    }
}

fn member_error(e: ChangeError) -> ApiError {
    match e {
        ChangeError::NotFound => ApiError::NotFound {
            code: "member_not_found",
            detail: "No member with this user id in the organization.".into(),
        },
        ChangeError::LastAdmin => ApiError::Conflict {
            code: "last_admin",
            detail: "The organization's last admin can be neither demoted nor removed; make \
                     someone else admin first."
                .into(),
        },
        ChangeError::Database(e) => e.into(),
    }
}

#[OpenApi(tag = "ApiTags::Organization", prefix_path = "/api/v1/organization")]
impl OrganizationApi {
    /// Get the organization
    ///
    /// Name, branding and settings of the caller's organization. Needs `organization.read`.
    #[oai(path = "/", method = "get", operation_id = "organization_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<Organization>, ApiError> {
        let granted = auth.grant::<ReadOrganization>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let organization = db::organizations::get(&mut tx, &granted).await?;
        tx.commit().await?;
        Ok(Json(organization.into()))
    }

    /// Update the organization
    ///
    /// Changes the name, branding or settings; absent fields stay as they are, `null` clears
    /// an optional one. Needs `organization.update` (admin). Audited as
    /// `organization.updated` with the changed fields.
    #[oai(path = "/", method = "patch", operation_id = "organization_update")]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<OrganizationPatch>,
    ) -> Result<Json<Organization>, ApiError> {
        let granted = auth.grant::<UpdateOrganization>(&state).await?;
        let patch = parse_patch(body.0)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let (before, after) = match db::organizations::update(&mut tx, &granted, &patch).await {
            Ok(changed) => changed,
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23503") => {
                return Err(ApiError::Validation(vec![FieldError {
                    field: "settings.default_sender_email_account_id".into(),
                    message: "is not an email account of this organization".into(),
                }]));
            }
            Err(e) => return Err(e.into()),
        };
        let before = Organization::from(before);
        let after_view = Organization::from(after);
        let changes = changed_fields(&before, &after_view);
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("organization.updated", &client(req, &state.settings))
                .on("organization", granted.organization_id())
                .with(serde_json::json!({ "changed": changes })),
        )
        .await?;
        tx.commit().await?;
        Ok(Json(after_view))
    }

    /// Delete the organization
    ///
    /// Ends every session and API key of the organization at once; its data is kept for the
    /// retention period, then purged. Needs `organization.delete` (admin). Audited as
    /// `organization.deleted`.
    #[oai(path = "/", method = "delete", operation_id = "organization_delete")]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<DeleteOrganization>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("organization.deleted", &client(req, &state.settings))
                .on("organization", granted.organization_id()),
        )
        .await?;
        db::organizations::soft_delete(&mut tx, &granted).await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Invite someone
    ///
    /// Emails a single-use link (valid 7 days) that joins the organization with `role`, at most
    /// your own. 409 `already_member` or `invitation_pending` for that address; 403
    /// `email_unverified` until the inviter has confirmed their own address. Needs
    /// `members.invite` (manager). Audited as `member.invited`.
    #[oai(
        path = "/invitations",
        method = "post",
        operation_id = "invitations_create"
    )]
    async fn invite(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewInvitation>,
    ) -> Result<InvitationCreated, ApiError> {
        let granted = auth.grant::<InviteMembers>(&state).await?;
        let role = Role::from(body.0.role);
        let mut fields = Fields::default();
        let email = fields.take("email", EmailAddress::parse(&body.0.email));
        if !granted.role().includes(role) {
            fields.reject("role", "cannot be above your own role");
        }
        fields.finish()?;
        let Some(email) = email else {
            return Err(ApiError::Internal(anyhow::anyhow!("parsed email missing")));
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        // No invitation goes out in the name of an address nobody has proved to own.
        if let Some(user_id) = granted.actor().user_id()
            && !db::email_verifications::is_verified(&mut tx, user_id).await?
        {
            return Err(ApiError::Refused {
                code: "email_unverified",
                detail: "Confirm your email address first (the link we emailed you, or POST \
                         /api/v1/auth/verify-email/resend for a new one); then invite."
                    .into(),
            });
        }
        let created = db::invitations::create(&mut tx, &granted, email.as_str(), role)
            .await
            .map_err(|e| match e {
                InviteError::AlreadyMember => ApiError::Conflict {
                    code: "already_member",
                    detail: "This address already belongs to a member of the organization.".into(),
                },
                InviteError::Pending => ApiError::Conflict {
                    code: "invitation_pending",
                    detail: "An invitation to this address is already pending.".into(),
                },
                InviteError::Database(e) => e.into(),
            })?;
        let organization = db::organizations::get(&mut tx, &granted).await?;
        let inviter = match granted.actor().user_id() {
            Some(user_id) => db::users::name(&mut tx, user_id).await?,
            None => None,
        };
        let organization_name = organization
            .display_name
            .clone()
            .unwrap_or_else(|| organization.name.clone());
        system_email::enqueue(
            &mut tx,
            &state.settings,
            email.as_str(),
            SystemTemplate::Invitation,
            &serde_json::json!({
                "inviter_name": inviter.unwrap_or_else(|| organization_name.clone()),
                "organization_name": organization_name,
                "role": role.as_str(),
                "accept_url": system_email::link(&state.settings, "/accept-invitation", &created.token),
                "expires_at": system_email::when(created.expires_at),
            }),
            Opts::organization(granted.organization_id()),
        )
        .await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("member.invited", &client(req, &state.settings))
                .on("invitation", created.id)
                .with(serde_json::json!({ "email": email.as_str(), "role": role.as_str() })),
        )
        .await?;
        tx.commit().await?;
        Ok(InvitationCreated::Created(Json(Invitation {
            id: created.id,
            email: email.to_string(),
            role: role.as_str().to_owned(),
            expires_at: created.expires_at,
        })))
    }

    /// List members
    ///
    /// Everyone in the organization with their role, by join date. Needs `members.read`.
    #[oai(path = "/members", method = "get", operation_id = "members_list")]
    async fn members(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<MemberList>, ApiError> {
        let granted = auth.grant::<ReadMembers>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let items = db::memberships::list(&mut tx, &granted)
            .await?
            .into_iter()
            .map(|m| Member {
                user_id: m.user_id,
                email: m.email,
                name: m.name,
                role: m.role,
                joined_at: m.joined_at,
            })
            .collect();
        tx.commit().await?;
        Ok(Json(MemberList { items }))
    }

    /// Change a member's role
    ///
    /// The API keys they created (and the keys those keys created) come down to the new role
    /// when they were above it. Needs `members.manage` (admin). 409 `last_admin` when it would
    /// leave the organization without an admin. Audited as `member.role_changed`.
    #[oai(
        path = "/members/:user_id",
        method = "patch",
        operation_id = "members_update"
    )]
    async fn update_member(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        user_id: Path<Uuid>,
        body: JsonBody<MemberPatch>,
    ) -> Result<Json<Member>, ApiError> {
        let granted = auth.grant::<ManageMembers>(&state).await?;
        let role = Role::from(body.0.role);
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let previous = db::memberships::change_role(&mut tx, &granted, user_id.0, role)
            .await
            .map_err(member_error)?;
        // Their keys act no higher than they now may.
        let keys = db::api_keys::follow_creator(
            &mut tx,
            granted.organization_id(),
            user_id.0,
            CreatorChange::Role(role),
        )
        .await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("member.role_changed", &client(req, &state.settings))
                .on("user", user_id.0)
                .with(serde_json::json!({
                    "from": previous, "to": role.as_str(), "api_keys_downgraded": keys
                })),
        )
        .await?;
        let member = db::memberships::get(&mut tx, &granted, user_id.0)
            .await?
            .ok_or_else(|| member_error(ChangeError::NotFound))?;
        tx.commit().await?;
        Ok(Json(Member {
            user_id: member.user_id,
            email: member.email,
            name: member.name,
            role: member.role,
            joined_at: member.joined_at,
        }))
    }

    /// Remove a member
    ///
    /// Removes the user from the organization, ends their sessions in it, revokes the API keys
    /// they created (and the keys those keys created) and disables the agents they created
    /// (their runs act with their role). Needs
    /// `members.manage` (admin). 409 `last_admin` for the last admin. Audited as
    /// `member.removed`.
    #[oai(
        path = "/members/:user_id",
        method = "delete",
        operation_id = "members_remove"
    )]
    async fn remove_member(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        user_id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageMembers>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let previous = db::memberships::remove(&mut tx, &granted, user_id.0)
            .await
            .map_err(member_error)?;
        // Their agents would act for nobody: disabled until someone takes them over.
        let disabled =
            db::agents::disable_created_by(&mut tx, granted.organization_id(), user_id.0).await?;
        // Their keys, and the keys those keys created, go with them.
        let keys = db::api_keys::follow_creator(
            &mut tx,
            granted.organization_id(),
            user_id.0,
            CreatorChange::Removed,
        )
        .await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("member.removed", &client(req, &state.settings))
                .on("user", user_id.0)
                .with(serde_json::json!({
                    "role": previous, "agents_disabled": disabled, "api_keys_revoked": keys
                })),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}

/// The dotted names of the fields that differ.
fn changed_fields(before: &Organization, after: &Organization) -> Vec<&'static str> {
    let pairs: [(&'static str, bool); 8] = [
        ("name", before.name != after.name),
        (
            "branding.display_name",
            before.branding.display_name != after.branding.display_name,
        ),
        (
            "branding.logo_url",
            before.branding.logo_url != after.branding.logo_url,
        ),
        (
            "branding.primary_color",
            before.branding.primary_color != after.branding.primary_color,
        ),
        (
            "settings.time_zone",
            before.settings.time_zone != after.settings.time_zone,
        ),
        (
            "settings.default_sender_email_account_id",
            before.settings.default_sender_email_account_id
                != after.settings.default_sender_email_account_id,
        ),
        (
            "settings.llm_monthly_budget_micros",
            before.settings.llm_monthly_budget_micros != after.settings.llm_monthly_budget_micros,
        ),
        (
            "settings.api_key_max_lifetime_days",
            before.settings.api_key_max_lifetime_days != after.settings.api_key_max_lifetime_days,
        ),
    ];
    pairs
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
}
