//! The built-in document indexer: documents of the organization still waiting to be indexed
//! after a while (their indexing job was lost, discarded or never enqueued) get their
//! `rag.index_document` job again. One `tool_call` step per run enqueues the jobs with a
//! `document_indexed` activity entry in its transaction (a job already unfinished for a document
//! is not doubled: the job is unique per document). The indexing itself is the job's (document
//! search): this agent asks no LLM.

use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{
    agents::{ActivityAction, StepKind},
    db::{agent_runs::Run, knowledge},
};
use zoark_jobs::{Opts, enqueue, rag::IndexDocument};

use super::{End, notify::EffectStep, resume_position};
use crate::{WorkerContext, engine::JobError};

/// Minutes a document waits for its own job before the indexer takes it up.
const STALE_MINUTES: i32 = 10;
/// Documents taken up per run.
const MAX_DOCUMENTS: i64 = 500;

/// Whether a tick has anything to do.
///
/// # Errors
/// Database errors.
pub async fn pending(conn: &mut PgConnection, organization_id: Uuid) -> sqlx::Result<bool> {
    Ok(
        !knowledge::unindexed(conn, organization_id, STALE_MINUTES, 1)
            .await?
            .is_empty(),
    )
}

/// Runs the document indexer.
///
/// # Errors
/// [`JobError`]: the job's next move.
pub async fn run(ctx: &WorkerContext, run: &Run) -> Result<End, JobError> {
    let position = resume_position(ctx, run).await? + 1;
    let org = run.organization_id;
    let mut conn = ctx.pool.acquire().await?;
    let documents = knowledge::unindexed(&mut conn, org, STALE_MINUTES, MAX_DOCUMENTS).await?;
    drop(conn);
    if !documents.is_empty() {
        let request =
            json!({"enqueue": <IndexDocument as zoark_jobs::Job>::NAME, "documents": documents});
        let mut step = EffectStep::begin(ctx, run, position, StepKind::ToolCall, &request).await?;
        for document_id in &documents {
            let job = IndexDocument {
                document_id: *document_id,
            };
            enqueue(step.conn(), &job, Opts::organization(org))
                .await
                .map_err(anyhow::Error::from)?;
        }
        let summary = format!("{} document(s) queued for indexing", documents.len());
        let context = json!({"documents": documents});
        step.activity(ActivityAction::DocumentIndexed, &summary, &context)
            .await?;
        step.finish(json!({"queued": documents.len()})).await?;
    }
    Ok(End::Succeeded(json!({
        "documents_queued": documents,
        "note": "indexing runs as rag.index_document jobs; this agent asks no LLM",
    })))
}
