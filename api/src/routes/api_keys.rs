//! `/api/v1/api-keys`: organization API keys (`zk_…`), shown once, stored as SHA-256 digests.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde::Deserialize;
use uuid::Uuid;
use zoark_core::{
    access::{Actor, ManageApiKeys, Role},
    db::{
        self,
        api_keys::{self, NewKey},
        audit::{self, Entry},
        tenant,
    },
    identity::Name,
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, FieldError, Fields},
    json::JsonBody,
    routes::{ApiTags, NoContent, organization::RoleName},
    state::AppState,
};

pub struct ApiKeysApi;

/// `POST /api-keys`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewApiKey {
    /// What the key is for, e.g. `CI deploys`.
    pub name: String,
    /// The role the key acts with; at most your own.
    pub role: RoleName,
    /// When the key stops working; never when absent. Must be in the future, and within the
    /// organization's `api_key_max_lifetime_days` when it sets one (then it is required).
    pub expires_at: Option<DateTime<Utc>>,
}

impl poem_openapi::types::Example for NewApiKey {
    fn example() -> Self {
        Self {
            name: "CI deploy".into(),
            role: RoleName::Member,
            expires_at: None,
        }
    }
}

/// A key as listed: never the key itself.
#[derive(Debug, Object)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The key's first characters (`zk_` + 8), to recognise it.
    pub prefix: String,
    pub role: String,
    /// The user who created it; a key follows its creator (revoked when they leave, no higher
    /// than their role).
    pub created_by: Option<Uuid>,
    /// The API key that created it, when a key did.
    pub parent_key_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `revoked` (by hand) or `creator_removed`.
    pub revoked_reason: Option<String>,
}

/// A key just created: `key` is shown this once.
#[derive(Debug, Object)]
pub struct CreatedApiKey {
    pub id: Uuid,
    /// `Authorization: Bearer <key>`. Store it now: it cannot be shown again.
    pub key: String,
    pub prefix: String,
    pub name: String,
    pub role: String,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Object)]
pub struct ApiKeyList {
    pub items: Vec<ApiKey>,
}

#[derive(ApiResponse)]
pub enum KeyCreated {
    /// The key, shown once.
    #[oai(status = 201)]
    Created(Json<CreatedApiKey>),
}

#[OpenApi(tag = "ApiTags::ApiKeys", prefix_path = "/api/v1/api-keys")]
impl ApiKeysApi {
    /// Create an API key
    ///
    /// A key acting in this organization with a role at most the creator's. The key is in the
    /// response once and never again. Needs `api_keys.manage` (admin). Audited as
    /// `api_key.created`.
    #[oai(path = "/", method = "post", operation_id = "api_keys_create")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewApiKey>,
    ) -> Result<KeyCreated, ApiError> {
        let granted = auth.grant::<ManageApiKeys>(&state).await?;
        let body = body.0;
        let mut fields = Fields::default();
        let name = fields.take("name", Name::parse(&body.name));
        let role = Role::from(body.role);
        if name
            .as_ref()
            .is_some_and(|n| n.as_str().chars().count() > 100)
        {
            fields.reject("name", "is longer than 100 characters");
        }
        if !granted.role().includes(role) {
            fields.reject("role", "cannot be above your own role");
        }
        if body.expires_at.is_some_and(|at| at <= Utc::now()) {
            fields.reject("expires_at", "must be in the future");
        }
        fields.finish()?;
        let Some(name) = name else {
            return Err(ApiError::Validation(vec![FieldError {
                field: "name".into(),
                message: "is required".into(),
            }]));
        };
        let key = api_keys::generate();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let organization = db::organizations::get(&mut tx, &granted).await?;
        if let Some(days) = organization.api_key_max_lifetime_days {
            let latest = Utc::now() + chrono::Duration::days(i64::from(days));
            if body.expires_at.is_none_or(|at| at > latest) {
                return Err(ApiError::Validation(vec![FieldError {
                    field: "expires_at".into(),
                    message: format!(
                        "is required, at most {days} days from now (the organization's \
                         api_key_max_lifetime_days)"
                    ),
                }]));
            }
        }
        let parent_key_id = match granted.actor() {
            Actor::ApiKey { key_id } => Some(key_id),
            _ => None,
        };
        let id = api_keys::insert(
            &mut tx,
            granted.organization_id(),
            &NewKey {
                name: name.as_str(),
                role,
                key: &key,
                created_by: granted.actor().user_id(),
                expires_at: body.expires_at,
                parent_key_id,
            },
        )
        .await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("api_key.created", &client(req, &state.settings))
                .on("api_key", id)
                .with(serde_json::json!({ "name": name.as_str(), "role": role.as_str() })),
        )
        .await?;
        tx.commit().await?;
        Ok(KeyCreated::Created(Json(CreatedApiKey {
            id,
            prefix: api_keys::prefix(&key),
            key,
            name: name.as_str().to_owned(),
            role: role.as_str().to_owned(),
            expires_at: body.expires_at,
        })))
    }

    /// List API keys
    ///
    /// The organization's keys, newest first, revoked ones included; never the keys
    /// themselves. Needs `api_keys.manage` (admin).
    #[oai(path = "/", method = "get", operation_id = "api_keys_list")]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<ApiKeyList>, ApiError> {
        let granted = auth.grant::<ManageApiKeys>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let items = db::api_keys::list(&mut tx, &granted)
            .await?
            .into_iter()
            .map(|k| ApiKey {
                id: k.id,
                name: k.name,
                prefix: k.prefix,
                role: k.role,
                created_by: k.created_by,
                parent_key_id: k.parent_key_id,
                created_at: k.created_at,
                expires_at: k.expires_at,
                last_used_at: k.last_used_at,
                revoked_at: k.revoked_at,
                revoked_reason: k.revoked_reason,
            })
            .collect();
        tx.commit().await?;
        Ok(Json(ApiKeyList { items }))
    }

    /// Revoke an API key
    ///
    /// The key stops working at once. Revoking a revoked key is a no-op. Needs
    /// `api_keys.manage` (admin). Audited as `api_key.revoked`.
    #[oai(path = "/:id", method = "delete", operation_id = "api_keys_revoke")]
    async fn revoke(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageApiKeys>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        match api_keys::revoke(&mut tx, &granted, id.0).await? {
            None => {
                return Err(ApiError::NotFound {
                    code: "api_key_not_found",
                    detail: "No API key with this id in the organization.".into(),
                });
            }
            Some(false) => {}
            Some(true) => {
                audit::record_granted(
                    &mut tx,
                    &granted,
                    Entry::new("api_key.revoked", &client(req, &state.settings))
                        .on("api_key", id.0),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}
