//! The built-in email parser: a message received on `/inbound-email/{token}` becomes a task or
//! an invoice draft (in the agent's `config.project_id`, else the organization's oldest active
//! project; a draft without a stated amount or currency gets 0 USD, the schema's default, for
//! its reviewer to correct), and its attachments documents of the knowledge base (indexed for
//! search).
//! With an LLM, one `llm_call` with a JSON schema reads the message (kind, title, description,
//! invoice fields); without one, only the obvious fields are taken (the subject as the task's
//! title, the sender and the text as its description) and the run says so. The run acts as
//! whoever made the inbound token, with their role at run time.
//!
//! The effect is one `tool_call` step: the task or invoice, the attachments' files and
//! documents and the `email_parsed` / `invoice_processed` activity entry commit with its result
//! (attachment bytes are written to object storage first; a step rolled back leaves them for
//! the sweep of unreferenced uploads). A resumed run reuses the stored LLM answer.

use bytes::Bytes;
use chrono::NaiveDate;
use mail_parser::{MessageParser, MimeHeaders as _};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;
use zoark_core::{
    access::{ManageInvoices, ManageKnowledge, Principal, ProvenTenant, WriteTasks},
    agents::{ActivityAction, StepKind},
    db::{
        agent_runs::{self, Run},
        agents::Agent,
        inbound_emails,
        invoices::{self, Status},
        knowledge::{self, Language, NewDocument, Source},
        stored_files, tasks,
    },
    files::{self, Accept},
};

use super::{End, Resumed, input_id, llm_answer, message_text, notify::EffectStep, stored_answer};
use crate::{WorkerContext, engine::JobError};

/// Characters of the message's text the LLM reads (and a template task keeps).
const MAX_TEXT: usize = 8_000;
/// Attachments taken per message.
const MAX_ATTACHMENTS: usize = 10;

/// What the message is, as the LLM (or the template) read it.
#[derive(Debug, Clone, Deserialize)]
struct Reading {
    kind: String,
    title: String,
    description: String,
    vendor: Option<String>,
    invoice_number: Option<String>,
    /// Decimal, in the currency's major unit: `1200.50`.
    amount: Option<String>,
    currency: Option<String>,
    /// `YYYY-MM-DD`.
    due_on: Option<String>,
}

struct Attachment {
    filename: String,
    bytes: Bytes,
}

/// Runs the email parser.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run, def: &Agent) -> Result<End, JobError> {
    let org = run.organization_id;
    let email_id = match input_id(run, "inbound_email_id") {
        Ok(id) => id,
        Err(end) => return Ok(end),
    };
    let mut conn = ctx.pool.acquire().await?;
    let Some(raw) = inbound_emails::raw(&mut conn, org, email_id).await? else {
        return Ok(End::Failed(format!(
            "inbound email {email_id} no longer exists"
        )));
    };
    let Some(message) = MessageParser::default().parse(&raw) else {
        return Ok(End::Failed("the message is not RFC 5322".into()));
    };
    let Some(maker) = run.triggered_by else {
        return Ok(End::Failed(
            "whoever made the inbound token is gone: make a new token".into(),
        ));
    };
    let Some(role) = agent_runs::acting_role(&mut conn, org, maker, None).await? else {
        return Ok(End::Failed(
            "whoever made the inbound token is no longer a member: make a new token".into(),
        ));
    };
    let principal = Principal::agent_run(org, role, maker, run.id);
    let Resumed {
        llm,
        steps,
        mut position,
    } = Resumed::load(ctx, &mut conn, run, def).await?;
    drop(conn);
    let sender = message
        .from()
        .and_then(|f| f.first())
        .map(|a| match (a.name(), a.address()) {
            (Some(name), Some(address)) => format!("{name} <{address}>"),
            (_, Some(address)) => address.to_owned(),
            (Some(name), None) => name.to_owned(),
            (None, None) => String::new(),
        })
        .unwrap_or_default();
    let subject = message
        .subject()
        .unwrap_or("(no subject)")
        .trim()
        .to_owned();
    let text: String = message
        .body_text(0)
        .map(|t| t.chars().take(MAX_TEXT).collect())
        .unwrap_or_default();
    let attachments: Vec<Attachment> = message
        .attachments()
        .take(MAX_ATTACHMENTS)
        .map(|part| Attachment {
            filename: part.attachment_name().unwrap_or("attachment").to_owned(),
            bytes: Bytes::copy_from_slice(part.contents()),
        })
        .collect();
    let reading = match &llm {
        None => Reading {
            kind: "task".into(),
            title: subject.clone(),
            description: format!("From {sender}\n\n{text}"),
            vendor: None,
            invoice_number: None,
            amount: None,
            currency: None,
            due_on: None,
        },
        Some(llm) => {
            let key = email_id.to_string();
            let stored = stored_answer(&steps, "inbound_email_id", &key)
                .and_then(|m| m.get("content")?.as_str().map(str::to_owned));
            let content = match stored {
                Some(content) => content,
                None => {
                    position += 1;
                    let names: Vec<&str> =
                        attachments.iter().map(|a| a.filename.as_str()).collect();
                    let request = json!({
                        "model": llm.model,
                        "metadata": {"inbound_email_id": key},
                        "messages": [
                            {"role": "system", "content": "You file a team's inbound email. Decide \
                              whether the message is an invoice to pay (kind `invoice`, with its \
                              vendor, number, amount as a decimal, ISO currency and due date \
                              YYYY-MM-DD when stated) or work to do (kind `task`). Write a short \
                              title and a description of what is asked. Use null for what the \
                              message does not say; invent nothing."},
                            {"role": "user", "content": json!({"from": sender, "subject": subject,
                              "text": text, "attachments": names}).to_string()},
                        ],
                        "response_format": {"type": "json_schema", "json_schema": {
                            "name": "inbound_email", "strict": true, "schema": schema()}},
                    });
                    match llm_answer(ctx, run, def, llm, position, request).await? {
                        Ok(message) => message_text(&message),
                        Err(end) => return Ok(end),
                    }
                }
            };
            match serde_json::from_str::<Reading>(&content) {
                Ok(reading) => reading,
                Err(e) => {
                    return Ok(End::Failed(format!(
                        "the LLM's reading is not the JSON asked for: {e}"
                    )));
                }
            }
        }
    };
    position += 1;
    file(
        ctx,
        run,
        def,
        &principal,
        position,
        email_id,
        &reading,
        attachments,
        llm.is_some(),
    )
    .await
}

/// The structured output asked of the LLM.
fn schema() -> Value {
    let text = json!({"type": "string"});
    let optional = json!({"type": ["string", "null"]});
    json!({
        "type": "object", "additionalProperties": false,
        "required": ["kind", "title", "description", "vendor", "invoice_number", "amount",
                     "currency", "due_on"],
        "properties": {
            "kind": {"type": "string", "enum": ["task", "invoice"]},
            "title": text, "description": text, "vendor": optional, "invoice_number": optional,
            "amount": optional, "currency": optional, "due_on": optional,
        },
    })
}

/// `1200.50` → 120050 (two decimals at most).
fn minor_units(amount: &str) -> Option<i64> {
    let cleaned: String = amount.chars().filter(|c| *c != ',' && *c != ' ').collect();
    let (whole, fraction) = cleaned.split_once('.').unwrap_or((&cleaned, ""));
    if fraction.len() > 2 || whole.is_empty() {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let fraction: i64 = format!("{fraction:0<2}").parse().ok()?;
    whole.checked_mul(100)?.checked_add(fraction)
}

/// The project a task goes to: the agent's `config.project_id`, else the oldest active one.
async fn project(
    conn: &mut sqlx::PgConnection,
    organization_id: Uuid,
    def: &Agent,
) -> sqlx::Result<Option<Uuid>> {
    let configured = def
        .config
        .get("project_id")
        .and_then(Value::as_str)
        .and_then(|id| id.parse::<Uuid>().ok());
    sqlx::query_scalar(
        "SELECT id FROM projects WHERE organization_id = $1 AND archived_at IS NULL
         ORDER BY (id = $2) DESC, created_at LIMIT 1",
    )
    .bind(organization_id)
    .bind(configured)
    .fetch_optional(conn)
    .await
}

/// Why filing did nothing: refused (the run fails with the reason), or an error the job
/// retries.
enum Refused {
    Because(String),
    Retry(JobError),
}

impl From<zoark_core::access::Denied> for Refused {
    fn from(denied: zoark_core::access::Denied) -> Self {
        Self::Because(format!("refused: {denied}"))
    }
}

impl From<sqlx::Error> for Refused {
    fn from(e: sqlx::Error) -> Self {
        Self::Retry(e.into())
    }
}

impl From<zoark_jobs::EnqueueError> for Refused {
    fn from(e: zoark_jobs::EnqueueError) -> Self {
        Self::Retry(JobError::from(anyhow::Error::from(e)))
    }
}

impl From<invoices::WriteError> for Refused {
    fn from(e: invoices::WriteError) -> Self {
        match e {
            invoices::WriteError::Database(e) => e.into(),
            refused => Self::Because(refused.to_string()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn file(
    ctx: &WorkerContext,
    run: &Run,
    def: &Agent,
    principal: &Principal,
    position: i32,
    email_id: Uuid,
    reading: &Reading,
    attachments: Vec<Attachment>,
    asked_llm: bool,
) -> Result<End, JobError> {
    let org = run.organization_id;
    // Attachments the knowledge base takes, written to object storage first.
    let mut stored = Vec::new();
    let mut skipped = Vec::new();
    for a in attachments {
        match files::sniff_accepted(&a.bytes, &a.filename, Accept::Documents) {
            Ok(file_type) => {
                let key = ctx.uploads.full_key(&files::new_object_name(org));
                ctx.uploads
                    .put(&key, a.bytes.clone())
                    .await
                    .map_err(anyhow::Error::from)?;
                let sha256: [u8; 32] = Sha256::digest(&a.bytes).into();
                stored.push((a, file_type, key, sha256));
            }
            Err(why) => skipped.push(json!({"filename": a.filename, "reason": why.to_string()})),
        }
    }
    let scope = ProvenTenant {
        organization_id: org,
        actor: Some(principal.actor()),
    };
    let request = json!({"inbound_email_id": email_id, "kind": reading.kind,
                         "attachments": stored.iter().map(|s| &s.0.filename).collect::<Vec<_>>()});
    let mut step =
        EffectStep::begin_as(ctx, run, &scope, position, StepKind::ToolCall, &request).await?;
    let outcome: Result<(ActivityAction, Value), Refused> = async {
        let conn = step.conn();
        let project = project(conn, org, def).await?.ok_or_else(|| {
            Refused::Because("the organization has no active project to file it in".into())
        })?;
        let (action, mut result) = if reading.kind == "invoice" {
            let granted = principal.authorize::<ManageInvoices>()?;
            // A draft to review: what the message does not state stays empty or zero.
            let fields = invoices::Fields {
                project_id: Some(project),
                number: reading.invoice_number.clone(),
                vendor: reading.vendor.clone(),
                amount_minor: Some(reading.amount.as_deref().and_then(minor_units).unwrap_or(0)),
                currency: reading
                    .currency
                    .as_ref()
                    .map(|c| c.trim().to_ascii_uppercase())
                    .filter(|c| c.len() == 3 && c.chars().all(|ch| ch.is_ascii_uppercase()))
                    .or_else(|| Some("USD".to_owned())),
                status: Some(Status::Draft),
                issued_on: None,
                due_on: reading
                    .due_on
                    .as_deref()
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
            };
            let id = invoices::insert(conn, &granted, &fields).await?;
            (
                ActivityAction::InvoiceProcessed,
                json!({"invoice_id": id, "project_id": project}),
            )
        } else {
            let granted = principal.authorize::<WriteTasks>()?;
            let fields = tasks::Fields {
                title: Some(reading.title.chars().take(500).collect()),
                description: Some(Some(reading.description.chars().take(10_000).collect())),
                ..tasks::Fields::default()
            };
            let id = tasks::insert(conn, &granted, project, "backlog", &fields)
                .await?
                .ok_or_else(|| Refused::Because("the project is gone".into()))?;
            (
                ActivityAction::EmailParsed,
                json!({"task_id": id, "project_id": project}),
            )
        };
        let granted = principal.authorize::<ManageKnowledge>()?;
        let mut documents = Vec::new();
        for (a, file_type, key, sha256) in &stored {
            if let Some(existing) = knowledge::find_knowledge(conn, &granted, sha256).await? {
                documents.push(existing);
                continue;
            }
            let file_id = stored_files::insert(
                conn,
                &granted,
                &stored_files::NewFile {
                    storage_key: key,
                    filename: &a.filename,
                    content_type: file_type.mime(),
                    size_bytes: i64::try_from(a.bytes.len()).unwrap_or(i64::MAX),
                    sha256,
                },
            )
            .await?;
            let document = NewDocument {
                source: Source::Knowledge,
                title: &a.filename,
                file_id,
                content_type: file_type.mime(),
                sha256,
                language: Language::ENGLISH,
            };
            documents.push(zoark_jobs::rag::index(conn, &granted, &document).await?);
        }
        result["documents"] = json!(documents);
        result["skipped_attachments"] = json!(skipped);
        result["inbound_email_id"] = json!(email_id);
        Ok((action, result))
    }
    .await;
    match outcome {
        Ok((action, result)) => {
            let summary = format!("\"{}\" filed as {}", reading.title, reading.kind);
            step.activity(action, &summary, &result).await?;
            step.finish(result.clone()).await?;
            let mut output = result;
            output["kind"] = json!(reading.kind);
            output["reading"] = json!(if asked_llm { "llm" } else { "template" });
            if !asked_llm {
                output["note"] = json!(
                    "no LLM provider: only the subject (title), the sender and the text were taken"
                );
            }
            Ok(End::Succeeded(output))
        }
        Err(Refused::Because(reason)) => {
            drop(step);
            Ok(End::Failed(format!(
                "the message could not be filed: {reason}"
            )))
        }
        Err(Refused::Retry(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_become_minor_units() {
        assert_eq!(minor_units("1200.50"), Some(120_050));
        assert_eq!(minor_units("1,200.5"), Some(120_050));
        assert_eq!(minor_units("99"), Some(9_900));
        assert_eq!(minor_units("1.234"), None);
        assert_eq!(minor_units("abc"), None);
    }
}
