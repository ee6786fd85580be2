//! File uploads and downloads shared by every endpoint that takes or serves a file.
//!
//! An upload is a `multipart/form-data` body that [`UploadBody`] does not read until the handler
//! has authorized the caller (so a 401/403/404 never costs reading 50 MB). [`UploadBody::read`]
//! then takes one of the replica's upload slots (`ZOARK_MAX_CONCURRENT_UPLOADS`; 503 after 5 s
//! without one), streams the file to a temporary file while it enforces
//! `ZOARK_MAX_UPLOAD_BYTES` (413, nothing stored), sniffs it chunk by chunk against the
//! allow-list of `zoark_core::files` (415) and hashes it; [`put`] streams it to the object store
//! under an unguessable per-organization key. No upload is ever held whole in memory.
//! [`FileBody`] serves a file back as an attachment.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    marker::PhantomData,
};

use bytes::Bytes;
use poem::{
    FromRequest, IntoResponse, Request, RequestBody, Response,
    error::ParseMultipartError,
    http::{HeaderValue, header},
    web::Multipart,
};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    payload::{ParsePayload, Payload},
    registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry},
};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use uuid::Uuid;
use zoark_core::files::{self, Accept, FileType, Sniffer};

use crate::{
    error::{ApiError, FieldError},
    state::AppState,
};

/// The form field that carries the file.
pub const FILE_FIELD: &str = "file";

/// Largest text field of an upload form (names, kinds).
const MAX_TEXT_FIELD_BYTES: u64 = 16 * 1024;

/// A `multipart/form-data` request body, documented with the form `T` (a poem-openapi
/// `Multipart` type) and read only by [`UploadBody::read`].
pub struct UploadBody<T> {
    multipart: Result<Multipart, ParseMultipartError>,
    content_length: Option<u64>,
    form: PhantomData<fn() -> T>,
}

impl<T: Payload> Payload for UploadBody<T> {
    const CONTENT_TYPE: &'static str = "multipart/form-data";

    // Any content type reaches the handler: a wrong one is refused after authorization.
    fn check_content_type(_content_type: &str) -> bool {
        true
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Payload + Send> ParsePayload for UploadBody<T> {
    const IS_REQUIRED: bool = true;

    async fn from_request(request: &Request, body: &mut RequestBody) -> poem::Result<Self> {
        let content_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let multipart = match <Multipart as FromRequest>::from_request(request, body).await {
            Ok(m) => Ok(m),
            Err(e) => Err(match e.downcast::<ParseMultipartError>() {
                Ok(e) => e,
                Err(e) => ParseMultipartError::Io(std::io::Error::other(e.to_string())),
            }),
        };
        Ok(Self {
            multipart,
            content_length,
            form: PhantomData,
        })
    }
}

impl<'a, T: Payload + Send> ApiExtractor<'a> for UploadBody<T> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(registry: &mut Registry) {
        <Self as Payload>::register(registry);
    }

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: <Self as Payload>::CONTENT_TYPE,
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

/// A file received, checked and hashed, with the form's text fields. The file waits in a
/// temporary file, removed (and the upload slot freed) when this is dropped.
#[derive(Debug)]
pub struct Received {
    /// Sanitised: no path, no control characters, at most 255 characters.
    pub filename: String,
    spool: tempfile::TempPath,
    /// Bytes of the file.
    pub size: u64,
    pub sha256: [u8; 32],
    pub file_type: FileType,
    /// The text fields that were sent, by name.
    pub fields: BTreeMap<String, String>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

/// How long a request waits for an upload slot before it is told to come back.
const SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A file field as it streamed to disk.
struct Spooled {
    filename: String,
    spool: tempfile::TempPath,
    sniffer: Sniffer,
    sha256: [u8; 32],
}

/// Streams `reader` to a new temporary file, at most `limit` bytes (`None` when there were
/// more), hashing and sniffing it on the way.
async fn spool(
    reader: impl tokio::io::AsyncRead + Send,
    filename: String,
    limit: u64,
) -> Result<Option<Spooled>, ApiError> {
    let failed =
        |e: std::io::Error| ApiError::Internal(anyhow::Error::new(e).context("spooling an upload"));
    let (file, path) = tempfile::NamedTempFile::new().map_err(failed)?.into_parts();
    let mut out = tokio::fs::File::from_std(file);
    let mut reader = std::pin::pin!(reader);
    let mut buf = vec![0u8; 64 * 1024];
    let mut hasher = Sha256::new();
    let mut sniffer = Sniffer::default();
    loop {
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| bad_form(format!("the body could not be read: {e}")))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).unwrap_or_default();
        sniffer.feed(chunk);
        if sniffer.size() > limit {
            return Ok(None);
        }
        hasher.update(chunk);
        out.write_all(chunk).await.map_err(failed)?;
    }
    out.flush().await.map_err(failed)?;
    Ok(Some(Spooled {
        filename,
        spool: path,
        sniffer,
        sha256: hasher.finalize().into(),
    }))
}

/// Whether the file at `path` (after a UTF-8 byte order mark) is one JSON value, read as a
/// stream.
fn json_file_parses(path: &std::path::Path) -> bool {
    use std::io::BufRead as _;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut reader = std::io::BufReader::new(file);
    if reader
        .fill_buf()
        .is_ok_and(|head| head.starts_with(b"\xEF\xBB\xBF"))
    {
        reader.consume(3);
    }
    serde_json::from_reader::<_, serde::de::IgnoredAny>(reader).is_ok()
}

fn bad_form(message: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter(FieldError {
        field: "body".into(),
        message: message.into(),
    })
}

fn multipart_error(e: ParseMultipartError) -> ApiError {
    match e {
        ParseMultipartError::InvalidContentType(_) | ParseMultipartError::ContentTypeRequired => {
            ApiError::UnsupportedMediaType(
                "the body must be multipart/form-data with a boundary".into(),
            )
        }
        other => bad_form(format!("not a readable multipart/form-data body: {other}")),
    }
}

/// Reads at most `limit` bytes; `None` when there were more.
async fn read_bounded(
    reader: impl tokio::io::AsyncRead + Send,
    limit: u64,
) -> Result<Option<Vec<u8>>, ApiError> {
    let mut bytes = Vec::new();
    std::pin::pin!(reader.take(limit.saturating_add(1)))
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| bad_form(format!("the body could not be read: {e}")))?;
    Ok((bytes.len() as u64 <= limit).then_some(bytes))
}

impl<T> UploadBody<T> {
    /// Reads the form: one [`FILE_FIELD`] of at most `max_bytes` whose bytes `accept` takes,
    /// and the `text_fields`.
    ///
    /// # Errors
    /// 413 over the limit, 415 for a type off the allow-list or a body that is not multipart,
    /// 422 for a missing or empty file or an unknown or repeated field, 400 for a broken body.
    pub async fn read(
        self,
        state: &AppState,
        text_fields: &[&str],
        accept: Accept,
    ) -> Result<Received, ApiError> {
        let max_bytes = state.settings.storage.max_upload_bytes;
        let too_large = ApiError::PayloadTooLarge { limit: max_bytes };
        // A declared length far beyond the limit is refused before reading anything; the form's
        // own framing gets a generous allowance.
        if self
            .content_length
            .is_some_and(|n| n > max_bytes.saturating_add(64 * 1024))
        {
            return Err(too_large);
        }
        let slot = tokio::time::timeout(SLOT_WAIT, state.upload_slots.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
            .ok_or_else(|| ApiError::Unavailable {
                code: "uploads_busy",
                detail: "This server is receiving as many uploads as it may; retry in a moment."
                    .into(),
            })?;
        let mut multipart = self.multipart.map_err(multipart_error)?;
        let mut file: Option<Spooled> = None;
        let mut fields = BTreeMap::new();
        let mut problems = crate::error::Fields::default();
        while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
            let name = field.name().unwrap_or_default().to_owned();
            if name == FILE_FIELD {
                if file.is_some() {
                    problems.reject(FILE_FIELD, "send exactly one file");
                    continue;
                }
                let filename = files::safe_filename(field.file_name().unwrap_or_default());
                let spooled = spool(field.into_async_read(), filename, max_bytes)
                    .await?
                    .ok_or(ApiError::PayloadTooLarge { limit: max_bytes })?;
                file = Some(spooled);
            } else if !text_fields.contains(&name.as_str()) {
                problems.reject(&name, "unknown field");
            } else {
                let text = match read_bounded(field.into_async_read(), MAX_TEXT_FIELD_BYTES).await?
                {
                    None => Err("is longer than 16 KiB"),
                    Some(bytes) => String::from_utf8(bytes).map_err(|_| "is not UTF-8 text"),
                };
                match (text, fields.entry(name)) {
                    (_, Entry::Occupied(e)) => problems.reject(e.key(), "sent more than once"),
                    (Err(message), Entry::Vacant(e)) => problems.reject(e.key(), message),
                    (Ok(text), Entry::Vacant(e)) => {
                        e.insert(text);
                    }
                }
            }
        }
        let file = match file {
            Some(file) if file.sniffer.size() == 0 => {
                problems.reject(FILE_FIELD, "is empty");
                return Err(problems.finish().err().unwrap_or_else(|| bad_form("empty")));
            }
            Some(file) => file,
            None => {
                problems.reject(FILE_FIELD, "is required");
                return Err(problems
                    .finish()
                    .err()
                    .unwrap_or_else(|| bad_form("no file")));
            }
        };
        problems.finish()?;
        // The type: from the file's first bytes and what streaming saw; JSON read back from disk.
        let Spooled {
            filename,
            spool,
            sniffer,
            sha256,
        } = file;
        let (spool, sniffer, checked) = tokio::task::spawn_blocking(move || {
            // The file is read back (for JSON) at most once.
            let found = sniffer.file_type(&filename, || json_file_parses(&spool));
            let checked = sniffer.accepted_as(found.clone(), &filename, accept);
            (
                spool,
                sniffer,
                checked.map(|t| (t, filename)).map_err(|e| (e, found)),
            )
        })
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
        let (file_type, filename) = checked.map_err(|(e, found)| {
            ApiError::UnsupportedMediaType(match (accept, found) {
                (Accept::Only(only), Ok(found)) => format!(
                    "the file must be {}; its bytes are {}",
                    only.mime(),
                    found.mime()
                ),
                _ => format!("the file is not accepted: {e}"),
            })
        })?;
        Ok(Received {
            filename,
            spool,
            size: sniffer.size(),
            sha256,
            file_type,
            fields,
            _slot: slot,
        })
    }
}

/// A storage failure: logged once here, answered 503 (the request can be retried).
fn storage_error(e: zoark_core::storage::StorageError) -> ApiError {
    tracing::error!(error = %e, "object storage failed");
    ApiError::Unavailable {
        code: "storage_unavailable",
        detail: "The file store did not answer; retry later.".into(),
    }
}

/// Writes a received file under a new unguessable key of the organization; returns the key.
///
/// # Errors
/// 503 when object storage fails.
pub async fn put(
    state: &AppState,
    organization_id: Uuid,
    file: &Received,
) -> Result<String, ApiError> {
    let key = state
        .uploads
        .full_key(&files::new_object_name(organization_id));
    state
        .uploads
        .put_file(&key, &file.spool)
        .await
        .map_err(storage_error)?;
    Ok(key)
}

/// Deletes an object; a missing one is fine.
///
/// # Errors
/// 503 when object storage fails.
pub async fn delete(state: &AppState, key: &str) -> Result<(), ApiError> {
    state.uploads.delete(key).await.map_err(storage_error)
}

/// Deletes an object a failed request wrote, logging (not answering) a failure: the request's
/// own error is what the client must see.
pub async fn discard(state: &AppState, key: &str) {
    if let Err(e) = state.uploads.delete(key).await {
        tracing::warn!(error = %e, "an orphaned upload could not be deleted");
    }
}

/// Reads an object back.
///
/// # Errors
/// 503 when object storage fails; 500 when the object is missing (its row says it exists).
pub async fn get(state: &AppState, key: &str) -> Result<Bytes, ApiError> {
    match state.uploads.get(key).await {
        Ok(bytes) => Ok(bytes),
        Err(zoark_core::storage::StorageError::Store(e @ object_store::Error::NotFound { .. })) => {
            Err(ApiError::Internal(anyhow::Error::new(e).context(
                "a stored file's object is missing from object storage",
            )))
        }
        Err(e) => Err(storage_error(e)),
    }
}

/// The errors of an operation that reads or writes files: [`ApiError`]'s, documented with the
/// 413, 415 and 503 answers uploads and object storage add.
#[derive(Debug)]
pub struct FileError(pub ApiError);

impl<E: Into<ApiError>> From<E> for FileError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl From<FileError> for poem::Error {
    fn from(e: FileError) -> Self {
        e.0.into()
    }
}

impl poem_openapi::ApiResponse for FileError {
    fn meta() -> poem_openapi::registry::MetaResponses {
        crate::error::meta_with(&[
            (
                413,
                "`payload_too_large`: the file is larger than `ZOARK_MAX_UPLOAD_BYTES`; nothing \
                 was stored.",
            ),
            (
                415,
                "`unsupported_media_type`: the body is not multipart/form-data, or the file's \
                 bytes are not an accepted type.",
            ),
            (
                503,
                "`storage_unavailable`: object storage failed; retry later.",
            ),
        ])
    }

    fn register(registry: &mut Registry) {
        ApiError::register(registry);
    }
}

/// A file served as an attachment: its stored content type, `Content-Disposition: attachment`
/// with a safe filename, `X-Content-Type-Options: nosniff`, and a private cache policy.
pub struct FileBody {
    pub content_type: String,
    pub filename: String,
    pub bytes: Bytes,
}

impl Payload for FileBody {
    const CONTENT_TYPE: &'static str = "application/octet-stream";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema::new_with_format("string", "binary")))
    }
}

/// `attachment; filename="ascii"; filename*=UTF-8''percent-encoded` (RFC 6266).
fn content_disposition(filename: &str) -> String {
    let ascii: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, '"' | '\\' | ';' | '%') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = filename
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

impl IntoResponse for FileBody {
    fn into_response(self) -> Response {
        let mut response = Response::builder()
            .header(header::CONTENT_TYPE, self.content_type.as_str())
            .header(header::CONTENT_LENGTH, self.bytes.len())
            .header("X-Content-Type-Options", "nosniff")
            .header(header::CACHE_CONTROL, "private, no-cache")
            .body(self.bytes);
        if let Ok(value) = HeaderValue::from_str(&content_disposition(&self.filename)) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::content_disposition;

    #[test]
    fn content_disposition_quotes_nothing_it_should_not() {
        assert_eq!(
            content_disposition("report.pdf"),
            "attachment; filename=\"report.pdf\"; filename*=UTF-8''report.pdf"
        );
        assert_eq!(
            content_disposition("Zeit; bericht \"é\".txt"),
            "attachment; filename=\"Zeit_ bericht ___.txt\"; \
             filename*=UTF-8''Zeit%3B%20bericht%20%22%C3%A9%22.txt"
        );
    }
}
