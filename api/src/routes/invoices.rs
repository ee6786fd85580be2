//! `/api/v1/invoices`: invoices of projects with an optional PDF. Their status moves only along
//! explicit transitions (`zoark_core::db::invoices::Status::change_to`); `approved` and
//! `rejected` belong to approval pipelines.

use chrono::{DateTime, NaiveDate, Utc};
use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Multipart, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
    types::{MaybeUndefined, multipart::Upload},
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::{ManageInvoices, ReadInvoices},
    db::{
        audit::{self, Entry},
        invoices::{self, Status, Transition, WriteError},
        knowledge::{Language, Source},
        stored_files, tenant,
    },
    files::{Accept, FileType},
};

use crate::{
    auth::{BearerAuth, client},
    error::{ApiError, Fields},
    etag,
    files::{self, FileBody, FileError, UploadBody},
    idempotency,
    json::JsonBody,
    pagination::PageRequest,
    routes::{
        ApiTags, NoContent, documents::Download, knowledge::index_upload, team_members::text,
    },
    state::AppState,
};

pub struct InvoicesApi;

/// Where an invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Pending,
    Approved,
    Rejected,
    Paid,
    Void,
}

impl From<InvoiceStatus> for Status {
    fn from(s: InvoiceStatus) -> Self {
        match s {
            InvoiceStatus::Draft => Status::Draft,
            InvoiceStatus::Pending => Status::Pending,
            InvoiceStatus::Approved => Status::Approved,
            InvoiceStatus::Rejected => Status::Rejected,
            InvoiceStatus::Paid => Status::Paid,
            InvoiceStatus::Void => Status::Void,
        }
    }
}

impl From<Status> for InvoiceStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Draft => Self::Draft,
            Status::Pending => Self::Pending,
            Status::Approved => Self::Approved,
            Status::Rejected => Self::Rejected,
            Status::Paid => Self::Paid,
            Status::Void => Self::Void,
        }
    }
}

/// `POST /invoices`.
#[derive(Debug, Object, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct NewInvoice {
    pub project_id: Uuid,
    /// Unique in the organization, e.g. `INV-2026-0042`.
    pub number: String,
    pub vendor: String,
    /// In the currency's minor unit (cents), at least 0.
    pub amount_minor: i64,
    /// ISO 4217, three capital letters, e.g. `EUR`.
    pub currency: String,
    pub issued_on: NaiveDate,
    /// On or after `issued_on`.
    pub due_on: NaiveDate,
    /// `draft` or `pending` (default).
    pub status: Option<InvoiceStatus>,
}

impl poem_openapi::types::Example for NewInvoice {
    fn example() -> Self {
        Self {
            project_id: Uuid::nil(),
            number: "INV-2026-0042".into(),
            vendor: "Acme Supplies".into(),
            amount_minor: 125_000,
            currency: "EUR".into(),
            issued_on: NaiveDate::from_ymd_opt(2026, 11, 2).unwrap_or_default(),
            due_on: NaiveDate::from_ymd_opt(2026, 12, 2).unwrap_or_default(),
            status: Some(InvoiceStatus::Pending),
        }
    }
}

/// `PATCH /invoices/{id}`: absent fields stay; none of them can be `null`.
#[derive(Debug, Object, Deserialize)]
#[serde(deny_unknown_fields)]
#[oai(example)]
pub struct InvoicePatch {
    #[serde(default)]
    pub project_id: MaybeUndefined<Uuid>,
    #[serde(default)]
    pub number: MaybeUndefined<String>,
    #[serde(default)]
    pub vendor: MaybeUndefined<String>,
    #[serde(default)]
    pub amount_minor: MaybeUndefined<i64>,
    #[serde(default)]
    pub currency: MaybeUndefined<String>,
    #[serde(default)]
    pub issued_on: MaybeUndefined<NaiveDate>,
    #[serde(default)]
    pub due_on: MaybeUndefined<NaiveDate>,
    /// `pending` ⇄ `draft`, `rejected` → `pending`, `approved` → `paid`, anything but `paid`
    /// → `void`. `approved` and `rejected` are set by approval pipelines only.
    #[serde(default)]
    pub status: MaybeUndefined<InvoiceStatus>,
}

impl poem_openapi::types::Example for InvoicePatch {
    fn example() -> Self {
        Self {
            project_id: MaybeUndefined::Undefined,
            number: MaybeUndefined::Undefined,
            vendor: MaybeUndefined::Undefined,
            amount_minor: MaybeUndefined::Value(130_000),
            currency: MaybeUndefined::Undefined,
            issued_on: MaybeUndefined::Undefined,
            due_on: MaybeUndefined::Value(
                NaiveDate::from_ymd_opt(2026, 12, 16).unwrap_or_default(),
            ),
            status: MaybeUndefined::Undefined,
        }
    }
}

impl From<NewInvoice> for InvoicePatch {
    fn from(n: NewInvoice) -> Self {
        Self {
            project_id: MaybeUndefined::Value(n.project_id),
            number: MaybeUndefined::Value(n.number),
            vendor: MaybeUndefined::Value(n.vendor),
            amount_minor: MaybeUndefined::Value(n.amount_minor),
            currency: MaybeUndefined::Value(n.currency),
            issued_on: MaybeUndefined::Value(n.issued_on),
            due_on: MaybeUndefined::Value(n.due_on),
            status: n
                .status
                .map_or(MaybeUndefined::Undefined, MaybeUndefined::Value),
        }
    }
}

/// An invoice's PDF.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct InvoicePdf {
    pub filename: String,
    pub size_bytes: i64,
    /// Hex SHA-256 of the bytes.
    pub sha256: String,
}

/// An invoice.
#[derive(Debug, Object, Serialize, Deserialize)]
#[oai(example)]
pub struct Invoice {
    pub id: Uuid,
    pub project_id: Uuid,
    pub number: Option<String>,
    pub vendor: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub status: InvoiceStatus,
    pub issued_on: Option<NaiveDate>,
    pub due_on: Option<NaiveDate>,
    /// The attached PDF, if any (`GET /invoices/{id}/pdf` downloads it).
    pub pdf: Option<InvoicePdf>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl poem_openapi::types::Example for Invoice {
    fn example() -> Self {
        Self {
            id: uuid::Uuid::from_u128(0x0192_5f3a_7c1e_7b2d_9a41_3e6f_0c8d_2b17),
            project_id: uuid::Uuid::from_u128(0x0192_5f3a_6b00_7d11_8e22_4f33_5a44_6b55),
            number: Some("INV-2026-0042".into()),
            vendor: Some("Acme Supplies".into()),
            amount_minor: 125_000,
            currency: "EUR".into(),
            status: InvoiceStatus::Pending,
            issued_on: chrono::NaiveDate::from_ymd_opt(2026, 11, 2),
            due_on: chrono::NaiveDate::from_ymd_opt(2026, 12, 2),
            pdf: Some(InvoicePdf {
                filename: "INV-2026-0042.pdf".into(),
                size_bytes: 48_213,
                sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            }),
            created_by: Some(uuid::Uuid::from_u128(
                0x0192_5f3a_6b00_7d11_8e22_4f33_5a44_6b55,
            )),
            created_at: chrono::DateTime::from_timestamp(1_795_687_200, 0).unwrap_or_default(),
            updated_at: chrono::DateTime::from_timestamp(1_795_694_400, 0).unwrap_or_default(),
        }
    }
}

impl From<invoices::Invoice> for Invoice {
    fn from(i: invoices::Invoice) -> Self {
        let pdf = match (i.pdf_filename, i.pdf_size_bytes, i.pdf_sha256) {
            (Some(filename), Some(size_bytes), Some(sha256)) => Some(InvoicePdf {
                filename,
                size_bytes,
                sha256: hex::encode(sha256),
            }),
            _ => None,
        };
        Self {
            id: i.id,
            project_id: i.project_id,
            number: i.number,
            vendor: i.vendor,
            amount_minor: i.amount_minor,
            currency: i.currency,
            status: Status::parse(&i.status).map_or(InvoiceStatus::Pending, Into::into),
            issued_on: i.issued_on,
            due_on: i.due_on,
            pdf,
            created_by: i.created_by,
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

#[derive(Debug, Object)]
pub struct InvoiceList {
    pub items: Vec<Invoice>,
    pub next_cursor: Option<String>,
}

/// `PUT /invoices/{id}/pdf`: a `multipart/form-data` form.
#[derive(Debug, Multipart)]
pub struct InvoicePdfUpload {
    /// The PDF (sniffed from its bytes), at most `ZOARK_MAX_UPLOAD_BYTES`.
    pub file: Upload,
}

#[derive(ApiResponse)]
pub enum InvoiceCreated {
    /// The invoice.
    #[oai(status = 201)]
    Created(
        Json<Invoice>,
        /// `true` when replaying the first response of this `Idempotency-Key`.
        #[oai(header = "Idempotent-Replayed")]
        Option<bool>,
    ),
}

fn currency(raw: &str) -> Result<String, zoark_core::identity::Invalid> {
    if raw.len() == 3 && raw.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(raw.to_owned())
    } else {
        Err(zoark_core::identity::Invalid(
            "must be an ISO 4217 code: three capital letters, e.g. EUR".into(),
        ))
    }
}

fn amount(raw: &i64) -> Result<i64, zoark_core::identity::Invalid> {
    if *raw >= 0 {
        Ok(*raw)
    } else {
        Err(zoark_core::identity::Invalid(
            "must be at least 0 (in the currency's minor unit)".into(),
        ))
    }
}

/// One field of a patch: a value parsed, `null` refused, absent required on create.
fn field<T: Clone, U>(
    fields: &mut Fields,
    name: &str,
    value: &MaybeUndefined<T>,
    creating: bool,
    parse: impl Fn(&T) -> Result<U, zoark_core::identity::Invalid>,
) -> Option<U> {
    match value {
        MaybeUndefined::Value(v) => fields.take(name, parse(v)),
        MaybeUndefined::Null => {
            fields.reject(name, "cannot be null");
            None
        }
        MaybeUndefined::Undefined => {
            if creating {
                fields.reject(name, "is required");
            }
            None
        }
    }
}

fn same<T: Copy>(v: &T) -> Result<T, zoark_core::identity::Invalid> {
    Ok(*v)
}

/// Parses a patch (a create is a patch with every field set); dates are checked against each
/// other, with `current` dates for the one a patch leaves out.
fn parse(
    body: &InvoicePatch,
    creating: bool,
    current: (Option<NaiveDate>, Option<NaiveDate>),
) -> Result<invoices::Fields, ApiError> {
    let mut fields = Fields::default();
    let out = invoices::Fields {
        project_id: field(&mut fields, "project_id", &body.project_id, creating, same),
        number: field(
            &mut fields,
            "number",
            &body.number,
            creating,
            |v: &String| text(100)(v),
        ),
        vendor: field(
            &mut fields,
            "vendor",
            &body.vendor,
            creating,
            |v: &String| text(200)(v),
        ),
        amount_minor: field(
            &mut fields,
            "amount_minor",
            &body.amount_minor,
            creating,
            amount,
        ),
        currency: field(
            &mut fields,
            "currency",
            &body.currency,
            creating,
            |v: &String| currency(v),
        ),
        issued_on: field(&mut fields, "issued_on", &body.issued_on, creating, same),
        due_on: field(&mut fields, "due_on", &body.due_on, creating, same),
        status: field(&mut fields, "status", &body.status, false, |s| {
            Ok(Status::from(*s))
        }),
    };
    if let (Some(issued), Some(due)) = (out.issued_on.or(current.0), out.due_on.or(current.1))
        && due < issued
    {
        fields.reject("due_on", "must be on or after issued_on");
    }
    if creating && !matches!(out.status, None | Some(Status::Draft | Status::Pending)) {
        fields.reject("status", "a new invoice is draft or pending");
    }
    fields.finish()?;
    Ok(out)
}

fn not_found() -> ApiError {
    ApiError::NotFound {
        code: "invoice_not_found",
        detail: "No invoice with this id in the organization.".into(),
    }
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::NumberTaken => ApiError::Conflict {
            code: "invoice_number_taken",
            detail: "Another invoice of the organization has this number.".into(),
        },
        WriteError::ProjectNotFound => ApiError::Validation(vec![crate::error::FieldError {
            field: "project_id".into(),
            message: "no such project in the organization".into(),
        }]),
        WriteError::Database(e) => e.into(),
    }
}

fn transition_error(e: Transition) -> ApiError {
    ApiError::Conflict {
        code: match e {
            Transition::ByApprovalOnly => "invoice_status_set_by_approval",
            Transition::NotAllowed { .. } => "invoice_transition_not_allowed",
        },
        detail: e.to_string(),
    }
}

/// The locked invoice's status (the column's check constraint makes it one of ours).
fn status_of(locked: &invoices::Locked) -> Result<Status, ApiError> {
    Status::parse(&locked.status).ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!("unknown invoice status {}", locked.status))
    })
}

#[OpenApi(tag = "ApiTags::Invoices", prefix_path = "/api/v1/invoices")]
impl InvoicesApi {
    /// Create an invoice
    ///
    /// For a project of the organization (422 on `project_id` otherwise). 409
    /// `invoice_number_taken` when the number is used. `Idempotency-Key` replays the first
    /// response of a retried request. Needs `invoices.manage` (lead).
    #[oai(path = "/", method = "post", operation_id = "invoices_create")]
    async fn create(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        body: JsonBody<NewInvoice>,
        /// Makes a retried create safe: the same key and body replay the first response.
        #[oai(name = "Idempotency-Key")]
        idempotency_key: Header<Option<String>>,
    ) -> Result<InvoiceCreated, ApiError> {
        let granted = auth.grant::<ManageInvoices>(&state).await?;
        let body = body.0;
        let key = idempotency::Key::parse(idempotency_key.0.as_deref(), "invoices_create", &body)?;
        let organization_id = granted.organization_id();
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        if let Some(key) = &key
            && let Some(replay) = key.begin::<Invoice>(&mut tx, organization_id).await?
        {
            tx.commit().await?;
            return Ok(InvoiceCreated::Created(Json(replay), Some(true)));
        }
        let fields = parse(&body.into(), true, (None, None))?;
        let id = invoices::insert(&mut tx, &granted, &fields)
            .await
            .map_err(write_error)?;
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("invoice.created", &client(req, &state.settings)).on("invoice", id),
        )
        .await?;
        let invoice: Invoice = invoices::get(&mut tx, &granted, id)
            .await?
            .ok_or_else(not_found)?
            .into();
        if let Some(key) = &key {
            key.store(&mut tx, organization_id, 201, &invoice).await?;
        }
        tx.commit().await?;
        Ok(InvoiceCreated::Created(Json(invoice), None))
    }

    /// List invoices
    ///
    /// Newest first; filter by `project_id`, `status`, and due date (`due_from`, `due_to`,
    /// inclusive). Needs `invoices.read` (member).
    #[oai(path = "/", method = "get", operation_id = "invoices_list")]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        project_id: Query<Option<Uuid>>,
        status: Query<Option<InvoiceStatus>>,
        /// Due on or after this date.
        due_from: Query<Option<NaiveDate>>,
        /// Due on or before this date.
        due_to: Query<Option<NaiveDate>>,
        limit: Query<Option<i64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<InvoiceList>, ApiError> {
        let granted = auth.grant::<ReadInvoices>(&state).await?;
        let page = PageRequest::parse(limit.0, cursor.0.as_deref())?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let rows = invoices::list(
            &mut tx,
            &granted,
            &invoices::Filter {
                project_id: project_id.0,
                status: status.0.map(Into::into),
                due_from: due_from.0,
                due_to: due_to.0,
                before_id: page.before_id,
            },
            page.fetch(),
        )
        .await?;
        tx.commit().await?;
        let (rows, next_cursor) = page.page(rows, |i| i.id);
        Ok(Json(InvoiceList {
            items: rows.into_iter().map(Invoice::from).collect(),
            next_cursor,
        }))
    }

    /// Get an invoice
    ///
    /// With an `ETag`; `If-None-Match` with it answers 304 while nothing changed. Needs
    /// `invoices.read` (member).
    #[oai(path = "/:id", method = "get", operation_id = "invoices_get")]
    async fn get(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
        /// An entity tag from an earlier answer.
        #[oai(name = "If-None-Match")]
        if_none_match: Header<Option<String>>,
    ) -> Result<etag::Found<Invoice>, ApiError> {
        let granted = auth.grant::<ReadInvoices>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let invoice: Invoice = invoices::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?
            .into();
        tx.commit().await?;
        Ok(etag::found(invoice, if_none_match.0.as_deref()))
    }

    /// Change an invoice
    ///
    /// Absent fields stay. Amounts, dates, number, vendor and project change only while the
    /// invoice is `draft`, `pending` or `rejected` (409 `invoice_not_editable`). `status` moves
    /// only along the transitions: `approved` → `paid`; anything but `paid` → `void`; `draft`
    /// ⇄ `pending`; `rejected` → `pending`. Others are 409 `invoice_transition_not_allowed`;
    /// `approved` and `rejected` are 409 `invoice_status_set_by_approval` (approval pipelines
    /// decide them). Needs `invoices.manage` (lead); audited as `invoice.status_changed` when
    /// the status changes.
    #[oai(path = "/:id", method = "patch", operation_id = "invoices_update")]
    async fn update(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
        body: JsonBody<InvoicePatch>,
    ) -> Result<Json<Invoice>, ApiError> {
        let granted = auth.grant::<ManageInvoices>(&state).await?;
        let body = body.0;
        // Field errors first, without the stored dates: a 422 needs no lock.
        parse(&body, false, (None, None))?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let locked = invoices::lock(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        let fields = parse(&body, false, (locked.issued_on, locked.due_on))?;
        let from = status_of(&locked)?;
        let edits_fields = fields.project_id.is_some()
            || fields.number.is_some()
            || fields.vendor.is_some()
            || fields.amount_minor.is_some()
            || fields.currency.is_some()
            || fields.issued_on.is_some()
            || fields.due_on.is_some();
        if edits_fields && !from.editable() {
            return Err(ApiError::Conflict {
                code: "invoice_not_editable",
                detail: format!(
                    "A {} invoice's amounts, dates, number, vendor and project are final.",
                    from.as_str()
                ),
            });
        }
        if let Some(to) = fields.status {
            from.change_to(to).map_err(transition_error)?;
        }
        invoices::update(&mut tx, &granted, id.0, &fields)
            .await
            .map_err(write_error)?;
        if let Some(to) = fields.status.filter(|to| *to != from) {
            audit::record_granted(
                &mut tx,
                &granted,
                Entry::new("invoice.status_changed", &client(req, &state.settings))
                    .on("invoice", id.0)
                    .with(serde_json::json!({ "from": from.as_str(), "to": to.as_str() })),
            )
            .await?;
        }
        let invoice = invoices::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        tx.commit().await?;
        Ok(Json(invoice.into()))
    }

    /// Delete an invoice
    ///
    /// Only a `draft`, `pending` or `void` invoice (409 `invoice_not_deletable` otherwise:
    /// approved, rejected and paid invoices stay for the books; void them instead). Its PDF
    /// is deleted from object storage too. Needs `invoices.manage` (lead). Audited as
    /// `invoice.deleted`.
    #[oai(path = "/:id", method = "delete", operation_id = "invoices_delete")]
    async fn delete(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
    ) -> Result<NoContent, FileError> {
        let granted = auth.grant::<ManageInvoices>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let locked = invoices::lock(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        let status = status_of(&locked)?;
        if !status.deletable() {
            return Err(ApiError::Conflict {
                code: "invoice_not_deletable",
                detail: format!(
                    "A {} invoice is kept for the books; only draft, pending and void invoices \
                     can be deleted (void it instead).",
                    status.as_str()
                ),
            }
            .into());
        }
        let pdf = match locked.pdf_file_id {
            Some(file_id) => stored_files::get(&mut tx, &granted, file_id).await?,
            None => None,
        };
        invoices::delete(&mut tx, &granted, id.0).await?;
        if let Some(pdf) = &pdf {
            stored_files::delete(&mut tx, &granted, pdf.id).await?;
        }
        audit::record_granted(
            &mut tx,
            &granted,
            Entry::new("invoice.deleted", &client(req, &state.settings))
                .on("invoice", id.0)
                .with(serde_json::json!({ "status": status.as_str() })),
        )
        .await?;
        // The object goes before the commit: if storage fails, the rows stay.
        if let Some(pdf) = &pdf {
            files::delete(&state, &pdf.storage_key).await?;
        }
        tx.commit().await?;
        Ok(NoContent::NoContent)
    }

    /// Attach the invoice's PDF
    ///
    /// A `multipart/form-data` form with `file`, whose bytes must be a PDF (415
    /// `unsupported_media_type` otherwise), at most `ZOARK_MAX_UPLOAD_BYTES` (413). Replaces
    /// the previous PDF, which is deleted. Needs `invoices.manage` (lead).
    #[oai(path = "/:id/pdf", method = "put", operation_id = "invoices_pdf_put")]
    async fn put_pdf(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        req: &Request,
        id: Path<Uuid>,
        body: UploadBody<InvoicePdfUpload>,
    ) -> Result<Json<Invoice>, FileError> {
        let granted = auth.grant::<ManageInvoices>(&state).await?;
        let organization_id = granted.organization_id();
        // Refuse an unknown invoice before reading a large body.
        {
            let mut tx = tenant::begin(&state.pool, &granted).await?;
            invoices::get(&mut tx, &granted, id.0)
                .await?
                .ok_or_else(not_found)?;
            tx.commit().await?;
        }
        let file = body.read(&state, &[], Accept::Only(FileType::Pdf)).await?;
        let object = files::put(&state, organization_id, &file).await?;
        let result = async {
            let mut tx = tenant::begin(&state.pool, &granted).await?;
            let locked = invoices::lock(&mut tx, &granted, id.0)
                .await?
                .ok_or_else(not_found)?;
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
            invoices::set_pdf(&mut tx, &granted, id.0, Some(file_id)).await?;
            // Before the previous file goes: its index moves to the new file (deleting the file
            // an index names deletes the index).
            let number = invoices::get(&mut tx, &granted, id.0)
                .await?
                .ok_or_else(not_found)?
                .number;
            let title = match &number {
                Some(number) => format!("Invoice {number}"),
                None => format!("Invoice {}", file.filename),
            };
            index_upload(
                &mut tx,
                &granted,
                Source::Invoice(id.0),
                &title,
                Language::ENGLISH,
                file_id,
                &file,
            )
            .await?;
            let previous = match locked.pdf_file_id {
                Some(old) => {
                    let previous = stored_files::get(&mut tx, &granted, old).await?;
                    stored_files::delete(&mut tx, &granted, old).await?;
                    previous
                }
                None => None,
            };
            audit::record_granted(
                &mut tx,
                &granted,
                Entry::new("invoice.pdf_attached", &client(req, &state.settings))
                    .on("invoice", id.0)
                    .with(serde_json::json!({
                        "sha256": hex::encode(file.sha256),
                        "replaced": previous.is_some(),
                    })),
            )
            .await?;
            let invoice = invoices::get(&mut tx, &granted, id.0)
                .await?
                .ok_or_else(not_found)?;
            tx.commit().await?;
            Ok::<_, ApiError>((invoice, previous))
        }
        .await;
        match result {
            Ok((invoice, previous)) => {
                // After the commit, the old object is unreferenced: losing it now loses nothing.
                if let Some(previous) = previous {
                    files::discard(&state, &previous.storage_key).await;
                }
                Ok(Json(invoice.into()))
            }
            Err(e) => {
                files::discard(&state, &object).await;
                Err(e.into())
            }
        }
    }

    /// Download the invoice's PDF
    ///
    /// As an attachment, `application/pdf`, with `X-Content-Type-Options: nosniff`. 404
    /// `invoice_pdf_not_found` when none is attached. Needs `invoices.read` (member).
    #[oai(path = "/:id/pdf", method = "get", operation_id = "invoices_pdf_get")]
    async fn get_pdf(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        id: Path<Uuid>,
    ) -> Result<Download, FileError> {
        let granted = auth.grant::<ReadInvoices>(&state).await?;
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let invoice = invoices::get(&mut tx, &granted, id.0)
            .await?
            .ok_or_else(not_found)?;
        let pdf = match invoice.pdf_file_id {
            Some(file_id) => stored_files::get(&mut tx, &granted, file_id).await?,
            None => None,
        }
        .ok_or_else(|| ApiError::NotFound {
            code: "invoice_pdf_not_found",
            detail: "This invoice has no PDF attached.".into(),
        })?;
        tx.commit().await?;
        let bytes = files::get(&state, &pdf.storage_key).await?;
        Ok(Download::Ok(FileBody {
            content_type: pdf.content_type,
            filename: pdf.filename,
            bytes,
        }))
    }
}
