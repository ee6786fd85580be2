//! `rag.index_document`: reads a document's file from object storage, extracts its text
//! (`zoark_embed::extract`), cuts it into chunks of at most 256 of the model's word pieces
//! (`zoark_embed::chunk`), embeds them in batches with the local model and writes each batch as
//! it is done (progress on the document: `chunks_done` of `chunks_total`), then switches the
//! document's searchable chunks to the new ones in one transaction.
//!
//! A file that yields no text (unreadable, encrypted, a scan without a text layer, empty) ends
//! the document `failed` with the reason and the job completed: trying again would read the same
//! bytes. Storage, database and model errors are retried, with the error kept on the job.

use std::{path::PathBuf, time::Duration};

use anyhow::Context as _;
use zoark_core::{
    db::knowledge::{self, NewChunk, Target},
    storage::{Location, StorageError},
};
use zoark_embed::{
    MAX_TOKENS, MODEL,
    chunk::{self, Chunk},
    extract::{self, ExtractError, Format},
};
use zoark_jobs::rag::IndexDocument;

use crate::{
    WorkerContext,
    engine::{JobContext, JobError, JobResult, Registry},
};

/// Word pieces shared by consecutive chunks of one section.
pub const OVERLAP_TOKENS: usize = 32;
/// Chunks embedded and written together.
pub const BATCH: usize = 32;

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let ctx = ctx.clone();
    registry.register(move |job: IndexDocument, run: JobContext| index(ctx.clone(), job, run))
}

/// Why a document cannot be indexed, recorded on it.
enum Failure {
    /// The file: the document is `failed`, the job done.
    Document(String),
    /// Anything else: retried.
    Job(JobError),
}

impl<E: Into<JobError>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::Job(e.into())
    }
}

async fn index(ctx: WorkerContext, job: IndexDocument, run: JobContext) -> JobResult {
    let mut conn = ctx.pool.acquire().await?;
    let Some(target) = knowledge::begin_indexing(&mut conn, job.document_id).await? else {
        // Deleted since it was enqueued: nothing to index.
        return Ok(());
    };
    drop(conn);
    match index_target(&ctx, &target, &run).await {
        Ok(true) => Ok(()),
        // Its file changed while it was indexed: index what it holds now.
        Ok(false) => Err(JobError::Snooze(Duration::ZERO)),
        Err(Failure::Document(reason)) => {
            let mut conn = ctx.pool.acquire().await?;
            knowledge::fail(&mut conn, &target, &reason).await?;
            tracing::info!(document.id = %target.id, %reason, "document cannot be indexed");
            Ok(())
        }
        Err(Failure::Job(e)) => {
            // Say so on the document while the job retries; the error stays on the job.
            if let Ok(mut conn) = ctx.pool.acquire().await {
                let reason = match &e {
                    JobError::Retry(e) | JobError::RetryAfter(e, _) | JobError::Fatal(e) => {
                        format!("{e:#}")
                    }
                    JobError::Snooze(_) => "interrupted".to_owned(),
                };
                let last = run.attempt >= run.max_attempts || matches!(e, JobError::Fatal(_));
                if last {
                    knowledge::fail(&mut conn, &target, &reason).await?;
                }
            }
            Err(e)
        }
    }
}

/// Indexes the target; `false` when its file changed meanwhile.
async fn index_target(
    ctx: &WorkerContext,
    target: &Target,
    run: &JobContext,
) -> Result<bool, Failure> {
    let format = Format::from_mime(&target.content_type).ok_or_else(|| {
        Failure::Document(format!(
            "text cannot be extracted from {}",
            target.content_type
        ))
    })?;
    let uploads =
        zoark_core::storage::uploads(&ctx.settings.storage).context("opening object storage")?;
    let bytes = read(&uploads, &target.storage_key).await?;
    let dir = ctx.settings.embeddings.model_dir.clone();
    let chunks = cut(dir.clone(), format, bytes).await?;
    let total = i32::try_from(chunks.len()).unwrap_or(i32::MAX);
    let mut conn = ctx.pool.acquire().await?;
    knowledge::set_total(&mut conn, target.id, total).await?;
    drop(conn);
    for batch in chunks.chunks(BATCH) {
        if run.cancelled.is_cancelled() {
            return Err(Failure::Job(JobError::Retry(anyhow::anyhow!(
                "stopped while indexing"
            ))));
        }
        let texts = batch.iter().map(|c| c.text.clone()).collect();
        let vectors = zoark_embed::embed_async(dir.clone(), texts)
            .await
            .context("embedding the chunks")?;
        let rows: Vec<NewChunk> = batch
            .iter()
            .zip(vectors)
            .map(|(c, embedding)| NewChunk {
                ordinal: i32::try_from(c.ordinal).unwrap_or(i32::MAX),
                content: c.text.clone(),
                token_count: i32::try_from(c.tokens).unwrap_or(i32::MAX),
                page: c.page.and_then(|p| i32::try_from(p).ok()),
                heading: c.heading.clone(),
                embedding,
            })
            .collect();
        let mut conn = ctx.pool.acquire().await?;
        knowledge::write_chunks(&mut conn, target, MODEL, &rows).await?;
    }
    let mut tx = ctx.pool.begin().await?;
    let dimensions = i32::try_from(zoark_embed::DIMENSION).unwrap_or(i32::MAX);
    let switched = knowledge::finish(&mut tx, target, MODEL, dimensions).await?;
    tx.commit().await?;
    Ok(switched)
}

async fn read(uploads: &Location, key: &str) -> Result<bytes::Bytes, Failure> {
    match uploads.get(key).await {
        Ok(bytes) => Ok(bytes),
        Err(StorageError::Store(object_store::Error::NotFound { .. })) => Err(Failure::Document(
            "the document's file is missing from object storage".into(),
        )),
        Err(e) => Err(Failure::Job(
            anyhow::Error::new(e).context("reading the file").into(),
        )),
    }
}

/// Extraction and chunking, on a blocking thread: both are CPU work.
async fn cut(dir: PathBuf, format: Format, bytes: bytes::Bytes) -> Result<Vec<Chunk>, Failure> {
    tokio::task::spawn_blocking(move || {
        let sections =
            extract::extract(format, &bytes).map_err(|e| Failure::Document(e.to_string()))?;
        let model = zoark_embed::shared(&dir).context("loading the embedding model")?;
        let chunks = chunk::chunk(model.tokenizer(), &sections, MAX_TOKENS, OVERLAP_TOKENS)
            .map_err(|e| {
                Failure::Job(anyhow::anyhow!("cutting the text into chunks: {e}").into())
            })?;
        if chunks.is_empty() {
            return Err(Failure::Document(ExtractError::Empty.to_string()));
        }
        Ok(chunks)
    })
    .await
    .context("the extraction task failed")?
}
