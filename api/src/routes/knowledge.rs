//! The knowledge base: an organization's own documents, uploaded to be found by
//! `GET /api/v1/search`. Each upload is stored (`crate::files`), recorded `pending` and indexed by
//! a `rag.index_document` job enqueued in the same transaction; its status and progress are on
//! the document.

use chrono::{DateTime, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Multipart, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::multipart::Upload,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{ManageKnowledge, ReadKnowledge},
    db::{
        audit::{self, Entry},
        knowledge::{self, Language, NewDocument, Source},
        stored_files, tenant,
    },
    files::Accept,
    knowledge::IndexStatus,
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, Fields},
    etag,
    files::{self, FileError, Received, UploadBody},
    idempotency,
    pagination::PageRequest,
    routes::{ApiTags, NoContent, documents::UploadFingerprint},
    state::AppState,
};

pub struct KnowledgeApi;

/// How far a document's indexing has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum KnowledgeStatus {
    /// Waiting for its indexing job.
    Pending,
    /// Being indexed: see `chunks_done` of `chunks_total`.
    Indexing,
    /// Searchable.
    Indexed,
    /// Not searchable; `error` says why.
    Failed,
}

impl From<IndexStatus> for KnowledgeStatus {
    fn from(s: IndexStatus) -> Self {
        match s {
            IndexStatus::Pending => Self::Pending,
            IndexStatus::Indexing => Self::Indexing,
            IndexStatus::Indexed => Self::Indexed,
            IndexStatus::Failed => Self::Failed,
        }
    }
}

impl From<KnowledgeStatus> for IndexStatus {
    fn from(s: KnowledgeStatus) -> Self {
        match s {
            KnowledgeStatus::Pending => Self::Pending,
            KnowledgeStatus::Indexing => Self::Indexing,
            KnowledgeStatus::Indexed => Self::Indexed,
            KnowledgeStatus::Failed => Self::Failed,
        }
    }
}

/// `POST /knowledge`: a `multipart/form-data` form.
#[derive(Debug, Multipart)]
pub struct KnowledgeUpload {
    /// The document: PDF (with a text layer), DOCX, HTML, Markdown (`.md`), plain text, CSV or
    /// JSON, sniffed from its bytes; at most `ZOARK_MAX_UPLOAD_BYTES`.
    pub file: Upload,
    /// A title (default: the file's name).
    pub title: Option<String>,
    /// The language keyword search stems it in: a Postgres text search configuration such as
    /// `english` (the default), `french`, `german` or `simple` (no stemming).
    pub language: Option<String>,
}

/// A document of the knowledge base and its indexing.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct KnowledgeDocument {
    pub id: Uuid,
    pub title: String,
    /// The uploaded file's sanitised name.
    pub filename: String,
    /// Sniffed from the bytes, e.g. `application/pdf`.
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the bytes: the same bytes uploaded again are this document.
    pub sha256: String,
    /// The text search configuration of its keywords.
    pub language: String,
    pub status: KnowledgeStatus,
    /// Why it is `failed` (or why the last attempt failed while it is retried).
    pub error: Option<String>,
    /// Chunks embedded and written so far.
    pub chunks_done: i32,
    /// Chunks in all, once its text has been cut.
    pub chunks_total: Option<i32>,
    /// The model of its vectors, once indexed.
    pub embedding_model: Option<String>,
    /// Tokens the embedding provider counted for it (usage), every index together.
    pub embedding_tokens: i64,
    pub indexed_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<knowledge::Document> for KnowledgeDocument {
    fn from(d: knowledge::Document) -> Self {
        Self {
            id: d.id,
            title: d.title,
            filename: d.filename,
            content_type: d.content_type,
            size_bytes: d.size_bytes,
            sha256: hex::encode(&d.sha256),
            language: d.language,
            status: d.status.into(),
            error: d.error,
            chunks_done: d.chunks_done,
            chunks_total: d.chunks_total,
            embedding_model: d.embedding_model,
            embedding_tokens: d.embedding_tokens,
            indexed_at: d.indexed_at,
            created_by: d.created_by,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct KnowledgeList {
    pub items: Vec<KnowledgeDocument>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum KnowledgeCreated {
    /// The new document, `pending` until its indexing job runs.
    #[oai(status = 201)]
    Created(
        Json<KnowledgeDocument>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
    /// The organization already has these exact bytes: that document, unchanged.
    #[oai(status = 200)]
    Existing(Json<KnowledgeDocument>),
}

#[derive(ApiResponse)]
pub enum Reindexing {
    /// The document, `pending` again; its current chunks stay searchable until the new ones
    /// replace them.
    #[oai(status = 202)]
    Accepted(Json<KnowledgeDocument>),
}

/// Indexes an uploaded file for search in the upload's transaction (a `rag.index_document`
/// job), when text can be extracted from its type; returns the indexed document's id, `None`
/// for a type without text (a spreadsheet, an archive). The knowledge base, team documents and
/// invoice PDFs all index their uploads through here.
///
/// # Errors
/// Database errors; 409 `knowledge_document_exists` when the same bytes became a knowledge
/// document concurrently.
pub async fn index_upload<P>(
    conn: &mut sqlx::PgConnection,
    proof: &zoark_core::access::Granted<P>,
    source: Source,
    title: &str,
    language: Language,
    file_id: Uuid,
    file: &Received,
) -> Result<Option<Uuid>, ApiError> {
    let content_type = file.file_type.mime();
    if zoark_embed::extract::Format::from_mime(content_type).is_none() {
        return Ok(None);
    }
    let document = NewDocument {
        source,
        title,
        file_id,
        content_type,
        sha256: &file.sha256,
        language,
    };
    zoark_jobs::rag::index(conn, proof, &document)
        .await
        .map(Some)
        .map_err(|e| match e {
            zoark_jobs::EnqueueError::Database(sqlx::Error::Database(db))
                if db.constraint() == Some("rag_documents_knowledge_sha_key") =>
            {
                ApiError::Conflict {
                    code: "knowledge_document_exists",
                    detail: "The same file was uploaded at the same moment; list the knowledge \
                             base to find it."
                        .into(),
                }
            }
            other => ApiError::Internal(other.into()),
        })
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "knowledge_document_not_found",
        detail: "No knowledge base document with this id in the organization.".into(),
    }
}

fn parse_form(file: &Received) -> Result<(String, Language), ApiError> {
    let mut fields = Fields::default();
    let title = match file.fields.get("title").map(|t| t.trim()) {
        None | Some("") => file.filename.clone(),
        Some(t) if t.chars().count() > 500 || t.chars().any(char::is_control) => {
            fields.reject("title", "must be at most 500 characters on one line");
            String::new()
        }
        Some(t) => t.to_owned(),
    };
    let language = match file.fields.get("language").map(|l| l.trim()) {
        None | Some("") => Language::ENGLISH,
        Some(l) => Language::parse(l).unwrap_or_else(|| {
            fields.reject(
                "language",
                &format!("must be one of {}", knowledge::LANGUAGES.join(", ")),
            );
            Language::ENGLISH
        }),
    };
    fields.finish()?;
    Ok((title, language))
}

#[OpenApi(tag = "ApiTags::Knowledge")]
impl KnowledgeApi {
    /// Upload a document to the knowledge base
    ///
    /// A `multipart/form-data` form with `file`, and optionally `title` and `language`. The file
    /// is sniffed from its bytes: PDF, DOCX, HTML, Markdown, plain text, CSV or JSON (415
    /// `unsupported_media_type` otherwise), at most `ZOARK_MAX_UPLOAD_BYTES` (413). The
    /// document is `pending` until its `rag.index_document` job (queue `indexing`) has indexed
    /// it; a file without text (encrypted, a scan, empty) ends `failed` with the reason. Bytes
    /// the organization already uploaded answer 200 with that document. `Idempotency-Key`
    /// replays the first response of a retried upload. Needs `knowledge.manage` (member).
    #[oai(
        path = "/api/v1/knowledge",
        method = "post",
        operation_id = "knowledge_create"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: UploadBody<KnowledgeUpload>,
        /// Makes a retried upload safe: the same key and form replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<KnowledgeCreated, FileError> {
        let granted = auth.grant::<ManageKnowledge>(&state).await?;
        let organization_id = granted.organization_id();
        let file = body
            .read(&state, &["title", "language"], Accept::Documents)
            .await?;
        let (title, language) = parse_form(&file)?;
        let key = idempotency::Key::parse(
            idempotency_key.0.as_deref(),
            "knowledge_create",
            &UploadFingerprint::of(organization_id, &file),
        )?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key
                .begin::<KnowledgeDocument>(&mut tx, organization_id)
                .await?
        {
            tx.commit().await?;
            return Ok(KnowledgeCreated::Created(Json(replay), Some(true)));
        }
        if let Some(existing) = knowledge::find_knowledge(&mut tx, &granted, &file.sha256).await? {
            let document = knowledge::get(&mut tx, &granted, existing)
                .await?
                .ok_or_else(not_found)?;
            tx.commit().await?;
            return Ok(KnowledgeCreated::Existing(Json(document.into())));
        }
        let object = files::put(&state, organization_id, &file).await?;
        let result = async {
            let file_id = stored_files::insert(
                &mut tx,
                &granted,
                &stored_files::NewFile {
                    storage_key: &object,
                    filename: &file.filename,
                    content_type: file.file_type.mime(),
                    size_bytes: i64::try_from(file.size).unwrap_or(i64::MAX),
                    sha256: &file.sha256,
                },
            )
            .await?;
            let document_id = index_upload(
                &mut tx,
                &granted,
                Source::Knowledge,
                &title,
                language,
                file_id,
                &file,
            )
            .await?
            .ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("an accepted document is not indexable"))
            })?;
            audit::record_granted(
                &mut tx,
                &granted,
                Entry::new("knowledge.created", &client(req, &state.settings))
                    .on("knowledge_document", document_id)
                    .with(serde_json::json!({ "sha256": hex::encode(file.sha256) })),
            )
            .await?;
            let document: KnowledgeDocument = knowledge::get(&mut tx, &granted, document_id)
                .await?
                .ok_or_else(not_found)?
                .into();
            if let Some(key) = &key {
                key.store(&mut tx, organization_id, 201, &document).await?;
            }
            tx.commit().await?;
            Ok::<_, ApiError>(document)
        }
        .await;
        match result {
            Ok(document) => Ok(KnowledgeCreated::Created(Json(document), None)),
            Err(e) => {
                files::discard(&state, &object).await;
                Err(e.into())
            }
        }
    }

    /// List the knowledge base
    ///
    /// Newest first; filter by `status`. Needs `knowledge.read` (viewer).
    #[oai(
        path = "/api/v1/knowledge",
        method = "get",
        operation_id = "knowledge_list"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        status: Query<Option<KnowledgeStatus>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<KnowledgeList>, ApiError> {
        let granted = auth.grant::<ReadKnowledge>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = knowledge::list(
            &mut tx,
            &granted,
            status.0.map(IndexStatus::from),
            page.before_id,
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |d| d.id);
        Ok(Json(KnowledgeList {
            items: rows.into_iter().map(KnowledgeDocument::from).collect(),
            next_cursor,
        }))
    }

    /// Get a knowledge base document and its indexing
    ///
    /// `status`, `error`, `chunks_done` and `chunks_total` follow its indexing. With an `ETag`;
    /// `If-None-Match` with it answers 304 while nothing changed. Needs `knowledge.read`
    /// (viewer).
    #[oai(
        path = "/api/v1/knowledge/:id",
        method = "get",
        operation_id = "knowledge_get"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<KnowledgeDocument>, ApiError> {
        let granted = auth.grant::<ReadKnowledge>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let document: KnowledgeDocument = knowledge::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        tx.commit().await?;
        Ok(etag::found(document, if_none_match.0.as_deref()))
    }

    /// Index a knowledge base document again
    ///
    /// After a failure, or to pick up a change of embedding model. Its current chunks stay
    /// searchable until the new ones replace them, all at once. Needs `knowledge.manage`
    /// (member).
    #[oai(
        path = "/api/v1/knowledge/:id/reindex",
        method = "post",
        operation_id = "knowledge_reindex"
    )]
    async fn reindex(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Reindexing, ApiError> {
        let granted = auth.grant::<ManageKnowledge>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if !knowledge::reset(&mut tx, &granted, id.0).await? {
            return Err(not_found());
        }
        zoark_jobs::rag::reindex(&mut tx, &granted, id.0)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
        let document = knowledge::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Reindexing::Accepted(Json(document.into())))
    }

    /// Delete a knowledge base document
    ///
    /// The document, its chunks (searches stop finding it at once) and its file. Needs
    /// `knowledge.manage` (member). Audited as `knowledge.deleted`.
    #[oai(
        path = "/api/v1/knowledge/:id",
        method = "delete",
        operation_id = "knowledge_delete"
    )]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, FileError> {
        let granted = auth.grant::<ManageKnowledge>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let document = knowledge::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        // The file's row goes, and with it (by foreign key) the document and its chunks; a
        // concurrent delete waits for this one and then deletes nothing.
        if !stored_files::delete(&mut tx, &granted, document.file_id).await? {
            return Err(not_found().into());
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("knowledge.deleted", &client(req, &state.settings))
                .on("knowledge_document", id.0)
                .with(serde_json::json!({
                    "title": document.title,
                    "sha256": hex::encode(&document.sha256),
                })),
        )
        .await?;
        // The object goes before the commit: if storage fails, the rows stay.
        files::delete(&state, &document.storage_key).await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}
