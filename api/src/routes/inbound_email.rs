//! Inbound email: `POST /api/v1/inbound-email/token` makes the organization's secret token
//! (shown once; a new one replaces the old), and `POST /api/v1/inbound-email/{token}` takes a
//! raw RFC 5322 message (`Content-Type: message/rfc822`, as a mail provider's inbound route
//! posts it): the message is kept and a run of the email parser agent started in one
//! transaction. A redelivered message (same `Message-ID`) answers with the first one's run.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use poem::{Body, Request, RequestBody, http::header, web::Data};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ApiResponse, ExtractParamOptions, Object, OpenApi,
    param::Path,
    payload::{Json, ParsePayload, Payload},
    registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry},
};
use serde::Serialize;
use tokio::io::AsyncReadExt as _;
use uuid::Uuid;
use zoark_core::{
    access::{ManageAgents, ProvenTenant},
    agents::{AgentKind, RunTrigger},
    crypto,
    db::{
        agent_runs::NewRun,
        agents,
        inbound_emails::{self, NewMessage},
        tenant,
    },
};

use crate::{
    auth::BearerAuth,
    error::{ApiError, FieldError},
    routes::ApiTags,
    state::AppState,
};

pub struct InboundEmailApi;

/// The content type of a raw message.
const RFC822: &str = "message/rfc822";

/// A raw message body, read (up to `ZOARK_MAX_UPLOAD_BYTES`) only once the token is known.
pub struct RawMessage {
    body: Body,
    content_type: Option<String>,
}

impl Payload for RawMessage {
    const CONTENT_TYPE: &'static str = RFC822;

    // Any content type reaches the handler: a wrong one is refused after the token is checked.
    fn check_content_type(_content_type: &str) -> bool {
        true
    }

    fn schema_ref() -> MetaSchemaRef {
        let mut schema = MetaSchema::new_with_format("string", "binary");
        schema.example = Some(serde_json::Value::String(
            "From: Ada <ada@vendor.example>\r\nSubject: Fix the gate\r\n\
             Message-ID: <gate-1@vendor.example>\r\n\r\nThe north gate sticks.\r\n"
                .into(),
        ));
        MetaSchemaRef::Inline(Box::new(schema))
    }
}

impl ParsePayload for RawMessage {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        Ok(Self {
            body: body.take().unwrap_or_default(),
            content_type: request
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        })
    }
}

impl<'a> ApiExtractor<'a> for RawMessage {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(_registry: &mut Registry) {}

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: Some("The raw RFC 5322 message."),
            content: vec![MetaMediaType {
                content_type: RFC822,
                schema: <Self as Payload>::schema_ref(),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<Self::ParamType>,
    ) -> poem::Result<Self> {
        <Self as ParsePayload>::from_request(request, body).await
    }
}

impl RawMessage {
    /// The bytes, refused with 415 for another content type and 413 past `limit`.
    async fn read(self, limit: u64) -> Result<Bytes, ApiError> {
        let essence = self
            .content_type
            .as_deref()
            .and_then(|c| c.parse::<mime::Mime>().ok())
            .map(|m| m.essence_str().to_ascii_lowercase());
        if essence.as_deref() != Some(RFC822) {
            return Err(ApiError::UnsupportedMediaType(format!(
                "the body must be a raw message sent as {RFC822}"
            )));
        }
        let mut bytes = Vec::new();
        self.body
            .into_async_read()
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| {
                ApiError::InvalidParameter(FieldError {
                    field: "body".into(),
                    message: format!("the body could not be read: {e}"),
                })
            })?;
        if bytes.len() as u64 > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Ok(Bytes::from(bytes))
    }
}

/// A new inbound token.
#[derive(Debug, Object, Serialize)]
pub struct InboundToken {
    /// The secret: post messages to `/api/v1/inbound-email/{token}`. Shown only now; making a
    /// new one stops this one.
    pub token: String,
    /// The path to post messages to.
    pub path: String,
    pub created_at: DateTime<Utc>,
}

/// A message taken in.
#[derive(Debug, Object, Serialize)]
pub struct InboundAccepted {
    /// The message, as kept.
    pub id: Uuid,
    /// The email parser's run (`GET /agent-runs/{id}`).
    pub run_id: Option<Uuid>,
    /// `true` when the message (its `Message-ID`) had been received already: nothing new was
    /// started.
    pub duplicate: bool,
}

#[derive(ApiResponse)]
pub enum TokenCreated {
    /// The new token, shown once.
    #[oai(status = 201)]
    Created(Json<InboundToken>),
}

#[derive(ApiResponse)]
pub enum MessageAccepted {
    /// Kept; the email parser runs on it.
    #[oai(status = 202)]
    Accepted(Json<InboundAccepted>),
}

fn unknown_token() -> ApiError {
    ApiError::NotFound {
        code: "inbound_token_not_found",
        detail: "No organization takes inbound email with this token.".into(),
    }
}

/// What the message says of itself, bounded to what `inbound_emails` keeps.
fn header_text(value: Option<&str>, max: usize) -> Option<String> {
    value
        .map(|v| {
            v.chars()
                .filter(|c| !c.is_control())
                .take(max)
                .collect::<String>()
        })
        .filter(|v| !v.trim().is_empty())
}

#[OpenApi(tag = "ApiTags::Agents", prefix_path = "/api/v1")]
impl InboundEmailApi {
    /// Make the inbound email token
    ///
    /// Makes the organization's secret inbound token, shown once; a new one replaces (and
    /// stops) the old. The email parser acts as whoever made it, with their role at run time.
    /// Needs `agents.manage` (manager).
    #[oai(
        path = "/inbound-email/token",
        method = "post",
        operation_id = "inbound_email_token_create"
    )]
    async fn create_token(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
    ) -> Result<TokenCreated, ApiError> {
        let granted = auth.grant::<ManageAgents>(&state).await?;
        let token = format!("ie_{}", crypto::random_token(32));
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let created_at =
            inbound_emails::rotate_token(&mut tx, &granted, &crypto::token_digest(&token)).await?;
        tx.commit().await?;
        Ok(TokenCreated::Created(Json(InboundToken {
            path: format!("/api/v1/inbound-email/{token}"),
            token,
            created_at,
        })))
    }

    /// Receive an inbound email
    ///
    /// Takes a raw RFC 5322 message (`Content-Type: message/rfc822`, at most
    /// `ZOARK_MAX_UPLOAD_BYTES`), keeps it and starts a run of the organization's email parser,
    /// which turns it into a task or an invoice draft with its attachments in the knowledge
    /// base. The token in the path is the organization's secret (no other authentication). A
    /// message whose `Message-ID` was received already answers with the first one's run.
    #[oai(
        path = "/inbound-email/:token",
        method = "post",
        operation_id = "inbound_email_receive"
    )]
    async fn receive(
        &self,
        state: Data<&AppState>,
        /// The organization's inbound token.
        token: Path<String>,
        body: RawMessage,
    ) -> Result<MessageAccepted, ApiError> {
        if token.0.len() > 200 {
            return Err(unknown_token());
        }
        let mut tx = tenant::system(&state.pool).await?;
        let (organization_id, maker) =
            inbound_emails::by_token(&mut tx, &crypto::token_digest(&token.0))
                .await?
                .ok_or_else(unknown_token)?;
        tx.commit().await?;
        let raw = body.read(state.settings.storage.max_upload_bytes).await?;
        let parsed = mail_parser::MessageParser::default()
            .parse(&raw)
            .filter(|m| m.from().is_some() || m.subject().is_some())
            .ok_or_else(|| {
                ApiError::InvalidParameter(FieldError {
                    field: "body".into(),
                    message: "is not an RFC 5322 message (no From and no Subject header)".into(),
                })
            })?;
        let message_id = header_text(parsed.message_id(), 1000);
        let sender = header_text(
            parsed
                .from()
                .and_then(|f| f.first())
                .and_then(|a| a.address()),
            1000,
        );
        let subject = header_text(parsed.subject(), 2000);
        let scope = ProvenTenant {
            organization_id,
            actor: None,
        };
        let mut tx = tenant::begin(&state.pool, &scope).await?;
        let new = NewMessage {
            message_id: message_id.as_deref(),
            sender: sender.as_deref(),
            subject: subject.as_deref(),
            raw: &raw,
        };
        let Some(id) = inbound_emails::insert(&mut tx, organization_id, &new).await? else {
            let (id, run_id) = match message_id.as_deref() {
                Some(m) => inbound_emails::by_message_id(&mut tx, organization_id, m)
                    .await?
                    .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("a duplicate vanished")))?,
                None => {
                    return Err(ApiError::Internal(anyhow::anyhow!(
                        "no Message-ID to dedupe"
                    )));
                }
            };
            tx.commit().await?;
            return Ok(MessageAccepted::Accepted(Json(InboundAccepted {
                id,
                run_id,
                duplicate: true,
            })));
        };
        let parser = agents::builtin(&mut tx, organization_id, AgentKind::EmailParser)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no email parser agent")))?;
        let input = serde_json::json!({ "inbound_email_id": id });
        let run = NewRun {
            agent_id: parser,
            schedule_id: None,
            trigger: RunTrigger::Event,
            triggered_by: maker,
            max_role: None,
            input: &input,
        };
        let run_id = zoark_jobs::agents::start(&mut tx, organization_id, &run)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        if let Some(run_id) = run_id {
            inbound_emails::set_run(&mut tx, organization_id, id, run_id).await?;
        }
        tx.commit().await?;
        Ok(MessageAccepted::Accepted(Json(InboundAccepted {
            id,
            run_id,
            duplicate: false,
        })))
    }
}
