//! `rag.index_document`: reads a document's file from object storage, extracts its text
//! (`zoark_embed::extract`), cuts it into chunks of at most 256 of the model's word pieces
//! (`zoark_embed::chunk`), embeds them in batches (the local model, or the OpenAI-compatible API
//! the settings name) and writes each batch as
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
    MAX_TOKENS,
    chunk::{self, Chunk},
    extract::{self, ExtractError, Format},
    provider::EmbedError,
};
use zoark_jobs::{
    NewJob, Opts, Progress, enqueue_many,
    rag::{IndexDocument, ReindexOrganization, ReindexStale},
};

use crate::{
    WorkerContext,
    engine::{JobContext, JobError, JobResult, Registry},
};

/// Word pieces shared by consecutive chunks of one section.
pub const OVERLAP_TOKENS: usize = 32;
/// Chunks embedded and written together.
pub const BATCH: usize = 32;

pub fn register(registry: Registry, ctx: &WorkerContext) -> Registry {
    let (a, b, c) = (ctx.clone(), ctx.clone(), ctx.clone());
    registry
        .register(move |job: IndexDocument, run: JobContext| index(a.clone(), job, run))
        .register(move |job: ReindexStale, _: JobContext| reindex_stale(b.clone(), job))
        .register(move |job: ReindexOrganization, _: JobContext| {
            reindex_organization(c.clone(), job)
        })
}

async fn reindex_stale(ctx: WorkerContext, job: ReindexStale) -> JobResult {
    let mut tx = ctx.pool.begin().await?;
    let organizations = knowledge::organizations_with_stale_index(&mut tx, &job.model).await?;
    let jobs = organizations
        .iter()
        .map(|&organization_id| {
            NewJob::new(
                &ReindexOrganization {
                    organization_id,
                    model: job.model.clone(),
                },
                Opts::organization(organization_id),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    enqueue_many(&mut tx, jobs).await?;
    tx.commit().await?;
    if !organizations.is_empty() {
        tracing::info!(
            model = %job.model,
            organizations = organizations.len(),
            "re-indexing documents of another embedding model"
        );
    }
    Ok(())
}

async fn reindex_organization(ctx: WorkerContext, job: ReindexOrganization) -> JobResult {
    let mut tx = ctx.pool.begin().await?;
    let documents = knowledge::reset_stale(&mut tx, job.organization_id, &job.model).await?;
    let jobs = documents
        .into_iter()
        .map(|document_id| {
            NewJob::new(
                &IndexDocument { document_id },
                Opts::organization(job.organization_id),
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    enqueue_many(&mut tx, jobs).await?;
    tx.commit().await?;
    Ok(())
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
            // The last attempt's error fails the document too (the job keeps it as well).
            if let Some(error) = e.last_error(&run) {
                let mut conn = ctx.pool.acquire().await?;
                knowledge::fail(&mut conn, &target, &format!("{error:#}")).await?;
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
        let embedded = ctx.embedder.embed(texts).await.map_err(embed_failure)?;
        let rows: Vec<NewChunk> = batch
            .iter()
            .zip(embedded.vectors)
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
        let tokens = i64::try_from(embedded.tokens).unwrap_or(i64::MAX);
        let done =
            knowledge::write_chunks(&mut conn, target, ctx.embedder.model(), &rows, tokens).await?;
        let progress = Progress {
            done: i64::from(done),
            total: i64::from(total),
        };
        zoark_jobs::report_progress::<IndexDocument>(
            &mut conn,
            run.id,
            target.organization_id,
            run.attempt,
            progress,
        )
        .await?;
    }
    let mut tx = ctx.pool.begin().await?;
    let dimensions = i32::try_from(ctx.embedder.dimensions()).unwrap_or(i32::MAX);
    let switched = knowledge::finish(&mut tx, target, ctx.embedder.model(), dimensions).await?;
    tx.commit().await?;
    Ok(switched)
}

/// How long a rate-limited provider is left alone when it does not say (`Retry-After`).
const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(30);

/// A provider's answer, as the job's outcome: a 429 snoozes (no attempt spent), an outage or a
/// model error retries with backoff, a refusal (a wrong key, an unknown model, vectors of the
/// wrong size) fails the document with the reason.
fn embed_failure(e: EmbedError) -> Failure {
    match e {
        EmbedError::RateLimited { retry_after, .. } => Failure::Job(JobError::Snooze(
            retry_after
                .unwrap_or(RATE_LIMIT_PAUSE)
                .min(Duration::from_secs(3600)),
        )),
        e @ (EmbedError::Unavailable(_) | EmbedError::Model(_)) => {
            Failure::Job(JobError::Retry(anyhow::Error::new(e)))
        }
        e @ (EmbedError::Rejected(_) | EmbedError::Invalid(_)) => {
            Failure::Job(JobError::Fatal(anyhow::Error::new(e)))
        }
    }
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
