//! `/api/v1/llm-credentials`: the organization's OpenAI-compatible providers (OpenAI, Azure
//! OpenAI, Ollama, vLLM, LiteLLM) for its agents. The key is sealed at rest and never returned.

use std::time::Duration;

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde::Deserialize;
use uuid::Uuid;
use zoark_core::{
    access::{Granted, ManageLlmCredentials, ReadLlmCredentials},
    crypto,
    db::{
        audit::{self, Entry},
        llm_credentials::{self as db, Fields as Columns, WriteError},
        tenant,
    },
    identity::Invalid,
    outbound::OutboundPolicy,
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, Fields},
    json::JsonBody,
    routes::{ApiTags, NoContent, team_members::text},
    state::AppState,
};

pub struct LlmCredentialsApi;

/// How long the test of a credential waits for the provider's model list.
const TEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest key accepted.
const MAX_KEY_BYTES: usize = 4096;

/// A provider's credential, as shown: never its key.
#[derive(Debug, Object)]
pub struct LlmCredential {
    pub id: Uuid,
    pub name: String,
    /// The API's base URL, e.g. `https://api.openai.com/v1` or `http://ollama:11434/v1`.
    pub base_url: String,
    /// The model agents use unless they name another.
    pub default_model: String,
    pub last_used_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<db::Credential> for LlmCredential {
    fn from(c: db::Credential) -> Self {
        Self {
            id: c.id,
            name: c.name,
            base_url: c.base_url,
            default_model: c.default_model,
            last_used_at: c.last_used_at,
            created_by: c.created_by,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// A new credential.
#[derive(Debug, Object, Deserialize)]
#[oai(example)]
#[serde(deny_unknown_fields)]
pub struct NewLlmCredential {
    /// 1 to 100 characters, unique in the organization.
    pub name: String,
    /// An `http` or `https` URL without user, query or fragment.
    pub base_url: String,
    /// Sealed with AES-256-GCM at rest; never returned.
    pub api_key: String,
    /// 1 to 200 characters.
    pub default_model: String,
}

impl poem_openapi::types::Example for NewLlmCredential {
    fn example() -> Self {
        Self {
            name: "OpenAI".into(),
            base_url: "https://api.openai.com/v1".into(),
            api_key: "sk-…".into(),
            default_model: "gpt-4o-mini".into(),
        }
    }
}

/// A change: absent fields stay.
#[derive(Debug, Object, Deserialize)]
#[oai(example)]
#[serde(deny_unknown_fields)]
pub struct LlmCredentialPatch {
    pub name: Option<String>,
    pub base_url: Option<String>,
    /// Replaces the key.
    pub api_key: Option<String>,
    pub default_model: Option<String>,
}

impl poem_openapi::types::Example for LlmCredentialPatch {
    fn example() -> Self {
        Self {
            name: None,
            base_url: None,
            api_key: Some("sk-…".into()),
            default_model: Some("gpt-4o".into()),
        }
    }
}

#[derive(Debug, Object)]
pub struct LlmCredentialList {
    pub items: Vec<LlmCredential>,
}

/// What the provider answered to a request for its models.
#[derive(Debug, Object)]
pub struct LlmCredentialTest {
    /// The provider answered with its models.
    pub ok: bool,
    /// The models it offers (empty when it did not answer).
    pub models: Vec<String>,
    /// Whether the credential's default model is among them.
    pub default_model_available: bool,
    /// Why it did not answer: the provider's refusal (a wrong key), a rate limit, a timeout.
    pub error: Option<String>,
}

#[derive(ApiResponse)]
pub enum CredentialCreated {
    /// The credential.
    #[oai(status = 201)]
    Created(Json<LlmCredential>),
}

/// `raw` parsed and checked against the outbound policy (an address literal is connected to
/// without resolving, so the resolver's guard does not see it).
fn checked_url(policy: &OutboundPolicy, raw: &str) -> Result<(), Invalid> {
    let url = url::Url::parse(raw).map_err(|e| Invalid(format!("is not a URL: {e}")))?;
    policy.check_url(&url)
}

fn base_url(policy: &OutboundPolicy, raw: &str) -> Result<String, Invalid> {
    let refuse = |why: &str| Invalid(format!("must be an http or https URL {why}"));
    let url = url::Url::parse(raw.trim()).map_err(|e| refuse(&format!("({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(refuse("with a host, like https://api.openai.com/v1"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse(
            "without a user or password (the key goes in api_key)",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(refuse("without a query or fragment"));
    }
    policy.check_url(&url)?;
    let url = url.as_str().trim_end_matches('/').to_owned();
    if url.len() > 2048 {
        return Err(refuse("of at most 2,048 characters"));
    }
    Ok(url)
}

/// The key sealed for credential `binding` names.
fn api_key(state: &AppState, binding: &crypto::Binding, raw: &str) -> Result<Vec<u8>, Invalid> {
    let key = raw.trim();
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.chars().any(char::is_control) {
        return Err(Invalid(format!(
            "must be 1 to {MAX_KEY_BYTES} bytes without control characters"
        )));
    }
    crypto::seal_bound(&state.settings.encryption_key, key.as_bytes(), binding)
        .map_err(|e| Invalid(format!("could not be sealed: {e}")))
}

/// Where credential `id` of the caller's organization seals its key.
fn binding(granted: &Granted<ManageLlmCredentials>, id: Uuid) -> crypto::Binding {
    crypto::Binding::new(db::API_KEY, granted.organization_id(), id)
}

/// Parses the present fields; `changed` names them (for the audit log, never their values).
fn columns(
    state: &AppState,
    binding: &crypto::Binding,
    patch: LlmCredentialPatch,
) -> Result<(Columns, Vec<&'static str>), ApiError> {
    let mut fields = Fields::default();
    let mut changed = Vec::new();
    let mut take = |field: &'static str, present: bool| {
        if present {
            changed.push(field);
        }
    };
    take("name", patch.name.is_some());
    take("base_url", patch.base_url.is_some());
    take("api_key", patch.api_key.is_some());
    take("default_model", patch.default_model.is_some());
    let columns = Columns {
        name: patch.name.and_then(|v| fields.take("name", text(100)(&v))),
        base_url: patch
            .base_url
            .and_then(|v| fields.take("base_url", base_url(&state.settings.outbound, &v))),
        sealed_api_key: patch
            .api_key
            .and_then(|v| fields.take("api_key", api_key(state, binding, &v))),
        default_model: patch
            .default_model
            .and_then(|v| fields.take("default_model", text(200)(&v))),
    };
    fields.finish()?;
    Ok((columns, changed))
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "llm_credential_not_found",
        detail: "No LLM credential with this id in the organization.".into(),
    }
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::NotFound => not_found(),
        WriteError::DuplicateName => ApiError::Conflict {
            code: "llm_credential_exists",
            detail: "Another LLM credential of the organization has this name.".into(),
        },
        WriteError::InUse => ApiError::Conflict {
            code: "llm_credential_in_use",
            detail: "Agents still use this credential; point them at another one first.".into(),
        },
        WriteError::Incomplete => {
            ApiError::Internal(anyhow::anyhow!("a parsed credential lacks a field"))
        }
        WriteError::Database(e) => e.into(),
    }
}

async fn load(
    tx: &mut sqlx::PgConnection,
    granted: &Granted<impl Sized>,
    id: Uuid,
) -> Result<LlmCredential, ApiError> {
    db::get(tx, granted, id)
        .await?
        .map(LlmCredential::from)
        .ok_or_else(not_found)
}

#[OpenApi(
    tag = "ApiTags::LlmCredentials",
    prefix_path = "/api/v1/llm-credentials"
)]
impl LlmCredentialsApi {
    /// Add an LLM provider
    ///
    /// Any OpenAI-compatible API: OpenAI, Azure OpenAI, Ollama, vLLM, LiteLLM. The key is sealed
    /// at rest and never returned. 409 `llm_credential_exists` when the name is taken. Needs
    /// `llm_credentials.manage` (admin). Audited as `llm_credential.created`.
    #[oai(path = "/", method = "post", operation_id = "llm_credentials_create")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewLlmCredential>,
    ) -> Result<CredentialCreated, ApiError> {
        let granted = auth.grant::<ManageLlmCredentials>(&state).await?;
        let body = body.0;
        let id = Uuid::now_v7();
        let (columns, _) = columns(
            &state,
            &binding(&granted, id),
            LlmCredentialPatch {
                name: Some(body.name),
                base_url: Some(body.base_url),
                api_key: Some(body.api_key),
                default_model: Some(body.default_model),
            },
        )?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        db::insert(&mut tx, &granted, id, columns)
            .await
            .map_err(write_error)?;
        let credential = load(&mut tx, &granted, id).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("llm_credential.created", &client(req, &state.settings))
                .on("llm_credential", id)
                .with(
                    serde_json::json!({ "name": credential.name, "base_url": credential.base_url }),
                ),
        )
        .await?;
        tx.commit().await?;
        Ok(CredentialCreated::Created(Json(credential)))
    }

    /// List LLM providers
    ///
    /// By name, never with keys. Needs `llm_credentials.read` (manager).
    #[oai(path = "/", method = "get", operation_id = "llm_credentials_list")]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<Json<LlmCredentialList>, ApiError> {
        let granted = auth.grant::<ReadLlmCredentials>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let items = db::list(&mut tx, &granted)
            .await?
            .into_iter()
            .map(LlmCredential::from)
            .collect();
        tx.commit().await?;
        Ok(Json(LlmCredentialList { items }))
    }

    /// Get an LLM provider
    ///
    /// Needs `llm_credentials.read` (manager).
    #[oai(path = "/:id", method = "get", operation_id = "llm_credentials_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<LlmCredential>, ApiError> {
        let granted = auth.grant::<ReadLlmCredentials>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let credential = load(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(Json(credential))
    }

    /// Change an LLM provider
    ///
    /// Absent fields stay; `api_key` replaces the key. Needs `llm_credentials.manage` (admin).
    /// Audited as `llm_credential.updated` with the changed field names (never values).
    #[oai(
        path = "/:id",
        method = "patch",
        operation_id = "llm_credentials_update"
    )]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
        body: JsonBody<LlmCredentialPatch>,
    ) -> Result<Json<LlmCredential>, ApiError> {
        let granted = auth.grant::<ManageLlmCredentials>(&state).await?;
        let (columns, changed) = columns(&state, &binding(&granted, id.0), body.0)?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        db::update(&mut tx, &granted, id.0, columns)
            .await
            .map_err(write_error)?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("llm_credential.updated", &client(req, &state.settings))
                .on("llm_credential", id.0)
                .with(serde_json::json!({ "changed": changed })),
        )
        .await?;
        let credential = load(&mut tx, &granted, id.0).await?;
        tx.commit().await?;
        Ok(Json(credential))
    }

    /// Remove an LLM provider
    ///
    /// 409 `llm_credential_in_use` while agents use it. Needs `llm_credentials.manage` (admin).
    /// Audited as `llm_credential.deleted`.
    #[oai(
        path = "/:id",
        method = "delete",
        operation_id = "llm_credentials_delete"
    )]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, ApiError> {
        let granted = auth.grant::<ManageLlmCredentials>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        db::delete(&mut tx, &granted, id.0)
            .await
            .map_err(write_error)?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("llm_credential.deleted", &client(req, &state.settings))
                .on("llm_credential", id.0),
        )
        .await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Test an LLM provider
    ///
    /// Asks the provider for its models with the stored key (`GET {base_url}/models`, at most
    /// 15 s) and says whether it answered and whether the default model is among them. A
    /// provider's refusal is a result (`ok: false` with its message), not an error of this call.
    /// Needs `llm_credentials.manage` (admin).
    #[oai(
        path = "/:id/test",
        method = "post",
        operation_id = "llm_credentials_test"
    )]
    async fn test(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Json<LlmCredentialTest>, ApiError> {
        let granted = auth.grant::<ManageLlmCredentials>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let sealed = db::for_calling(&mut tx, granted.organization_id(), Some(id.0))
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        let key = crypto::open_bound(
            &state.settings.encryption_key,
            &sealed.sealed_api_key,
            &crypto::Binding::new(db::API_KEY, granted.organization_id(), sealed.id),
        )
        .map_err(|e| ApiError::Internal(e.into()))?;
        let key = String::from_utf8(key).map_err(|e| ApiError::Internal(e.into()))?;
        if let Err(refused) = checked_url(&state.settings.outbound, &sealed.base_url) {
            return Ok(Json(LlmCredentialTest {
                ok: false,
                models: Vec::new(),
                default_model_available: false,
                error: Some(format!("the base URL {}", refused.0)),
            }));
        }
        let chat = zoark_llm::Chat::new(
            &zoark_llm::Endpoint {
                base_url: sealed.base_url,
                api_key: Some(key),
                timeout: TEST_TIMEOUT,
            },
            state.tenant_http.clone(),
        );
        Ok(Json(match chat.models().await {
            Ok(models) => LlmCredentialTest {
                ok: true,
                default_model_available: models.contains(&sealed.default_model),
                models,
                error: None,
            },
            Err(e) => LlmCredentialTest {
                ok: false,
                models: Vec::new(),
                default_model_available: false,
                error: Some(format!("the provider {e}")),
            },
        }))
    }
}
