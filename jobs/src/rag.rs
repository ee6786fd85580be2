//! Document search's indexing: [`index`] records a document to index and enqueues its
//! [`IndexDocument`] job in the caller's transaction (the upload that brought the file).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;
use zoark_core::{access::Granted, db::knowledge};

use crate::{EnqueueError, Job, Opts, enqueue};

/// Extracts one document's text, cuts it into chunks, embeds them in batches and switches the
/// document's searchable chunks to them at once. Unique while unfinished: a document changed
/// while it is indexed is indexed again by the same job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexDocument {
    pub document_id: Uuid,
}

impl Job for IndexDocument {
    const NAME: &'static str = "rag.index_document";
    const QUEUE: &'static str = "indexing";
    const MAX_ATTEMPTS: i32 = 10;
    /// A 50 MB text of dense prose is a few thousand chunks: minutes on two cores.
    const TIMEOUT: Duration = Duration::from_secs(30 * 60);

    fn unique_key(&self) -> Option<String> {
        Some(self.document_id.to_string())
    }
}

/// Records `doc` as a document to index (or, for an invoice's new PDF, points its document at the
/// new file) and enqueues its [`IndexDocument`] job, in the caller's transaction. Returns the
/// document's id.
///
/// # Errors
/// Database errors, a knowledge document's duplicate bytes among them
/// (`rag_documents_knowledge_sha_key`: use [`knowledge::find_knowledge`] first).
pub async fn index<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    doc: &knowledge::NewDocument<'_>,
) -> Result<Uuid, EnqueueError> {
    let document_id = knowledge::upsert(conn, proof, doc).await?;
    reindex(conn, proof, document_id).await?;
    Ok(document_id)
}

/// Enqueues the [`IndexDocument`] job of a recorded document (none is added while one is
/// unfinished: that one indexes what the document holds when it runs).
///
/// # Errors
/// Database errors.
pub async fn reindex<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    document_id: Uuid,
) -> Result<(), EnqueueError> {
    enqueue(
        conn,
        &IndexDocument { document_id },
        Opts::organization(proof.organization_id()),
    )
    .await?;
    Ok(())
}

/// Finds the organizations with documents indexed by another model than the configured one and
/// enqueues a [`ReindexOrganization`] for each: what a change of embedding model or provider
/// costs. A platform job, enqueued by workers of the `indexing` queue when they start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReindexStale {
    /// The configured model.
    pub model: String,
}

impl Job for ReindexStale {
    const NAME: &'static str = "rag.reindex_stale";
    const QUEUE: &'static str = "indexing";

    fn unique_key(&self) -> Option<String> {
        Some(self.model.clone())
    }
}

/// Makes every document of one organization indexed by another model than `model` pending
/// again and enqueues its [`IndexDocument`] job. Its searches keep finding those documents by
/// keyword meanwhile; by meaning once each is re-indexed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReindexOrganization {
    pub organization_id: Uuid,
    pub model: String,
}

impl Job for ReindexOrganization {
    const NAME: &'static str = "rag.reindex_organization";
    const QUEUE: &'static str = "indexing";

    fn unique_key(&self) -> Option<String> {
        Some(self.model.clone())
    }
}
