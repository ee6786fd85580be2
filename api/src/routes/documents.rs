//! Team members' documents (timesheets, reports, contracts): uploaded under
//! `/api/v1/team-members/{id}/documents`, then read, downloaded and deleted as
//! `/api/v1/documents/{id}`. The bytes live in object storage (`crate::files`).

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
    access::{ManageDocuments, ReadDocuments},
    db::{
        audit::{self, Entry},
        knowledge::{Language, Source},
        stored_files, team_documents, team_members, tenant,
    },
    files::Accept,
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, Fields},
    etag,
    files::{self, FileBody, FileError, Received, UploadBody},
    idempotency,
    pagination::PageRequest,
    routes::{ApiTags, NoContent, knowledge::index_upload},
    state::AppState,
};

pub struct DocumentsApi;

/// What a document is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Timesheet,
    Report,
    Contract,
    Other,
}

impl DocumentKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Timesheet => "timesheet",
            Self::Report => "report",
            Self::Contract => "contract",
            Self::Other => "other",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        [Self::Timesheet, Self::Report, Self::Contract, Self::Other]
            .into_iter()
            .find(|k| k.as_str() == raw)
    }
}

/// `POST /team-members/{id}/documents`: a `multipart/form-data` form.
#[derive(Debug, Multipart)]
pub struct DocumentUpload {
    /// The file: PDF, Word or Excel (97–2003 or OOXML), ZIP, or UTF-8 text (txt, csv, json,
    /// xml). Its type is sniffed from its bytes; at most `ZOARK_MAX_UPLOAD_BYTES` (50 MB by
    /// default).
    pub file: Upload,
    /// A display name (default: the file's name).
    pub name: Option<String>,
    /// `timesheet`, `report`, `contract` or `other` (default).
    pub kind: Option<DocumentKind>,
}

/// A document and its file's metadata.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct Document {
    pub id: Uuid,
    pub team_member_id: Uuid,
    pub name: String,
    pub kind: DocumentKind,
    /// The uploaded file's sanitised name, used for downloads.
    pub filename: String,
    /// Sniffed from the bytes, e.g. `application/pdf`.
    pub content_type: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
    pub uploaded_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<team_documents::Document> for Document {
    fn from(d: team_documents::Document) -> Self {
        Self {
            id: d.id,
            team_member_id: d.team_member_id,
            name: d.name,
            kind: DocumentKind::parse(&d.kind).unwrap_or(DocumentKind::Other),
            filename: d.filename,
            content_type: d.content_type,
            size_bytes: d.size_bytes,
            sha256: hex::encode(&d.sha256),
            uploaded_by: d.uploaded_by,
            created_at: d.created_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct DocumentList {
    pub items: Vec<Document>,
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum DocumentCreated {
    /// The document.
    #[oai(status = 201)]
    Created(
        Json<Document>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

#[derive(ApiResponse)]
pub enum Download {
    /// The file, as an attachment, with its stored content type (`Content-Type`),
    /// `Content-Disposition: attachment`, `Content-Length` and `X-Content-Type-Options: nosniff`.
    #[oai(status = 200)]
    Ok(FileBody),
}

/// What an upload's `Idempotency-Key` fingerprints: the form's fields and the file's hash.
#[derive(Serialize)]
pub struct UploadFingerprint<'a> {
    pub parent_id: Uuid,
    pub filename: &'a str,
    pub sha256: String,
    pub fields: &'a std::collections::BTreeMap<String, String>,
}

impl<'a> UploadFingerprint<'a> {
    pub fn of(parent_id: Uuid, file: &'a Received) -> Self {
        Self {
            parent_id,
            filename: &file.filename,
            sha256: hex::encode(file.sha256),
            fields: &file.fields,
        }
    }
}

fn member_not_found() -> ApiError {
    ApiError::NotFound {
        code: "team_member_not_found",
        detail: "No team member with this id in the organization.".into(),
    }
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "document_not_found",
        detail: "No document with this id in the organization.".into(),
    }
}

fn parse_form(file: &Received) -> Result<(String, DocumentKind), ApiError> {
    let mut fields = Fields::default();
    let name = match file.fields.get("name").map(|n| n.trim()) {
        None | Some("") => file.filename.clone(),
        Some(n) if n.chars().count() > 255 || n.chars().any(char::is_control) => {
            fields.reject("name", "must be at most 255 characters on one line");
            String::new()
        }
        Some(n) => n.to_owned(),
    };
    let kind = match file.fields.get("kind").map(|k| k.trim()) {
        None | Some("") => DocumentKind::Other,
        Some(k) => DocumentKind::parse(k).unwrap_or_else(|| {
            fields.reject("kind", "must be timesheet, report, contract or other");
            DocumentKind::Other
        }),
    };
    fields.finish()?;
    Ok((name, kind))
}

#[OpenApi(tag = "ApiTags::Documents")]
impl DocumentsApi {
    /// Upload a team member's document
    ///
    /// A `multipart/form-data` form with `file`, and optionally `name` and `kind`. The file's
    /// type is sniffed from its bytes — PDF, Word, Excel, ZIP or UTF-8 text; anything else is
    /// 415 `unsupported_media_type` — and it may be at most `ZOARK_MAX_UPLOAD_BYTES` (413
    /// `payload_too_large`); nothing is stored then. `Idempotency-Key` replays the first
    /// response of a retried upload (same fields, same bytes). Needs `documents.manage`
    /// (member).
    #[oai(
        path = "/api/v1/team-members/:id/documents",
        method = "post",
        operation_id = "documents_create"
    )]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        /// The team member.
        id: Path<Uuid>,
        body: UploadBody<DocumentUpload>,
        /// Makes a retried upload safe: the same key and form replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<DocumentCreated, FileError> {
        let granted = auth.grant::<ManageDocuments>(&state).await?;
        let organization_id = granted.organization_id();
        // Refuse an unknown member before reading a large body.
        {
            let mut tx = tenant::begin(&state.pool, &granted).await?;
            team_members::get(&mut tx, &granted, id.0)
                .await?
                .ok_or_else(member_not_found)?;
            tx.commit().await?;
        }
        let file = body
            .read(&state, &["name", "kind"], Accept::Uploads)
            .await?;
        let (name, kind) = parse_form(&file)?;
        let key = idempotency::Key::parse(
            idempotency_key.0.as_deref(),
            "documents_create",
            &UploadFingerprint::of(id.0, &file),
        )?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<Document>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(DocumentCreated::Created(Json(replay), Some(true)));
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
            // The member may have gone since the check: the foreign key says so.
            let document_id =
                team_documents::insert(&mut tx, &granted, id.0, file_id, &name, kind.as_str())
                    .await
                    .map_err(|e| match &e {
                        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
                            member_not_found()
                        }
                        _ => e.into(),
                    })?;
            // Titles are at most 255 characters here, within the index's 500.
            index_upload(
                &mut tx,
                &granted,
                Source::TeamDocument(document_id),
                &name,
                Language::ENGLISH,
                file_id,
                &file,
            )
            .await?;
            audit::record_granted(
                &mut tx,
                &granted,
                Entry::new("document.created", &client(req, &state.settings))
                    .on("team_document", document_id)
                    .with(serde_json::json!({ "team_member_id": id.0, "kind": kind.as_str() })),
            )
            .await?;
            let document: Document = team_documents::get(&mut tx, &granted, document_id)
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
            Ok(document) => Ok(DocumentCreated::Created(Json(document), None)),
            Err(e) => {
                files::discard(&state, &object).await;
                Err(e.into())
            }
        }
    }

    /// List a team member's documents
    ///
    /// Newest first; filter by `kind`. Needs `documents.read` (viewer).
    #[oai(
        path = "/api/v1/team-members/:id/documents",
        method = "get",
        operation_id = "documents_list"
    )]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// The team member.
        id: Path<Uuid>,
        kind: Query<Option<DocumentKind>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<DocumentList>, ApiError> {
        let granted = auth.grant::<ReadDocuments>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        team_members::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(member_not_found)?;
        let rows = team_documents::list(
            &mut tx,
            &granted,
            id.0,
            kind.0.map(DocumentKind::as_str),
            page.before_id,
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |d| d.id);
        Ok(Json(DocumentList {
            items: rows.into_iter().map(Document::from).collect(),
            next_cursor,
        }))
    }

    /// Get a document's metadata
    ///
    /// With an `ETag`; `If-None-Match` with it answers 304 while nothing changed. Needs
    /// `documents.read` (viewer).
    #[oai(
        path = "/api/v1/documents/:id",
        method = "get",
        operation_id = "documents_get"
    )]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<Document>, ApiError> {
        let granted = auth.grant::<ReadDocuments>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let document: Document = team_documents::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        tx.commit().await?;
        Ok(etag::found(document, if_none_match.0.as_deref()))
    }

    /// Download a document
    ///
    /// The bytes as uploaded, as an attachment with the stored (sniffed) content type and
    /// `X-Content-Type-Options: nosniff`. Needs `documents.read` (viewer).
    #[oai(
        path = "/api/v1/documents/:id/content",
        method = "get",
        operation_id = "documents_download"
    )]
    async fn download(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Download, FileError> {
        let granted = auth.grant::<ReadDocuments>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let document = team_documents::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        let bytes = files::get(&state, &document.storage_key).await?;
        Ok(Download::Ok(FileBody {
            content_type: document.content_type,
            filename: document.filename,
            bytes,
        }))
    }

    /// Delete a document
    ///
    /// Deletes the file from object storage, then the document. Needs `documents.manage`
    /// (member). Audited as `document.deleted`.
    #[oai(
        path = "/api/v1/documents/:id",
        method = "delete",
        operation_id = "documents_delete"
    )]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, FileError> {
        let granted = auth.grant::<ManageDocuments>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let document = team_documents::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        // The row delete locks the document; a concurrent delete waits here and then finds
        // nothing. The object goes before the commit: if storage fails, the rows stay.
        if !team_documents::delete(&mut tx, &granted, id.0).await? {
            return Err(not_found().into());
        }
        stored_files::delete(&mut tx, &granted, document.file_id).await?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("document.deleted", &client(req, &state.settings))
                .on("team_document", id.0)
                .with(serde_json::json!({
                    "team_member_id": document.team_member_id,
                    "filename": document.filename,
                    "sha256": hex::encode(&document.sha256),
                })),
        )
        .await?;
        files::delete(&state, &document.storage_key).await?;
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }
}
