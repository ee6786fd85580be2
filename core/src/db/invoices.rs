//! Invoices of projects: number, vendor, amount in minor units, dates, an optional PDF, and a
//! status that moves only along [`Status::change_to`].

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::access::{Granted, ManageInvoices, ReadInvoices};

/// Where an invoice stands. `approved` and `rejected` are set by approval pipelines only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Draft,
    Pending,
    Approved,
    Rejected,
    Paid,
    Void,
}

/// Why a status change is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Transition {
    #[error("`approved` and `rejected` are decided by the invoice's approval pipeline")]
    ByApprovalOnly,
    #[error("an invoice cannot go from `{from}` to `{to}`")]
    NotAllowed {
        from: &'static str,
        to: &'static str,
    },
}

impl Status {
    pub const ALL: [Status; 6] = [
        Self::Draft,
        Self::Pending,
        Self::Approved,
        Self::Rejected,
        Self::Paid,
        Self::Void,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Paid => "paid",
            Self::Void => "void",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Checks a change asked for through the API: `paid` only from `approved`; `void` from
    /// anything but `paid`; `draft` ⇄ `pending`, and a `rejected` invoice back to `pending`
    /// once corrected. Staying put is allowed.
    ///
    /// # Errors
    /// [`Transition`] naming the rule.
    pub fn change_to(self, to: Status) -> Result<(), Transition> {
        use Status::*;
        if self == to {
            return Ok(());
        }
        match (self, to) {
            (_, Approved | Rejected) => Err(Transition::ByApprovalOnly),
            (Approved, Paid) | (Pending, Draft) | (Draft | Rejected, Pending) => Ok(()),
            (from, Void) if from != Paid => Ok(()),
            (from, to) => Err(Transition::NotAllowed {
                from: from.as_str(),
                to: to.as_str(),
            }),
        }
    }

    /// Whether amounts, dates, number, vendor and project may still change.
    pub fn editable(self) -> bool {
        matches!(self, Self::Draft | Self::Pending | Self::Rejected)
    }

    /// Whether the invoice may be deleted (anything decided or paid stays, for the books).
    pub fn deletable(self) -> bool {
        matches!(self, Self::Draft | Self::Pending | Self::Void)
    }
}

/// An invoice as stored, with its PDF's metadata when it has one.
#[derive(Debug, Clone)]
pub struct Invoice {
    pub id: Uuid,
    pub project_id: Uuid,
    pub number: Option<String>,
    pub vendor: Option<String>,
    pub amount_minor: i64,
    pub currency: String,
    pub status: String,
    pub issued_on: Option<NaiveDate>,
    pub due_on: Option<NaiveDate>,
    pub pdf_file_id: Option<Uuid>,
    pub pdf_filename: Option<String>,
    pub pdf_size_bytes: Option<i64>,
    pub pdf_sha256: Option<Vec<u8>>,
    pub pdf_storage_key: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Parsed fields; a create sets all of them, a patch the `Some` ones.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    pub project_id: Option<Uuid>,
    pub number: Option<String>,
    pub vendor: Option<String>,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
    pub status: Option<Status>,
    pub issued_on: Option<NaiveDate>,
    pub due_on: Option<NaiveDate>,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("another invoice of the organization has this number")]
    NumberTaken,
    #[error("no such project")]
    ProjectNotFound,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn write_error(e: sqlx::Error) -> WriteError {
    match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23505") => {
            WriteError::NumberTaken
        }
        sqlx::Error::Database(db) if db.code().as_deref() == Some("23503") => {
            WriteError::ProjectNotFound
        }
        _ => WriteError::Database(e),
    }
}

/// Creates an invoice (every field but `status` required by the caller); returns its id.
///
/// # Errors
/// [`WriteError::NumberTaken`], [`WriteError::ProjectNotFound`]; database errors.
pub async fn insert(
    conn: &mut PgConnection,
    proof: &Granted<ManageInvoices>,
    fields: &Fields,
) -> Result<Uuid, WriteError> {
    sqlx::query_scalar!(
        r#"
        INSERT INTO invoices (organization_id, project_id, number, vendor, amount_minor, currency,
                              status, issued_on, due_on, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, coalesce($7, 'pending'), $8, $9, $10)
        RETURNING id
        "#,
        proof.organization_id(),
        fields.project_id,
        fields.number,
        fields.vendor,
        fields.amount_minor,
        fields.currency,
        fields.status.map(Status::as_str),
        fields.issued_on,
        fields.due_on,
        proof.actor().user_id(),
    )
    .fetch_one(conn)
    .await
    .map_err(write_error)
}

/// List filter and page.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub project_id: Option<Uuid>,
    pub status: Option<Status>,
    /// Due on or after.
    pub due_from: Option<NaiveDate>,
    /// Due on or before.
    pub due_to: Option<NaiveDate>,
    pub before_id: Option<Uuid>,
}

/// Invoices, newest first.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadInvoices>,
    filter: &Filter,
    limit: i64,
) -> sqlx::Result<Vec<Invoice>> {
    sqlx::query_as!(
        Invoice,
        r#"
        SELECT i.id, i.project_id, i.number, i.vendor, i.amount_minor, i.currency, i.status,
               i.issued_on, i.due_on, i.pdf_file_id, f.filename AS "pdf_filename?",
               f.size_bytes AS "pdf_size_bytes?", f.sha256 AS "pdf_sha256?",
               f.storage_key AS "pdf_storage_key?", i.created_by, i.created_at, i.updated_at
        FROM invoices i
        LEFT JOIN stored_files f ON f.organization_id = i.organization_id AND f.id = i.pdf_file_id
        WHERE i.organization_id = $1
          AND ($2::uuid IS NULL OR i.project_id = $2)
          AND ($3::text IS NULL OR i.status = $3)
          AND ($4::date IS NULL OR i.due_on >= $4)
          AND ($5::date IS NULL OR i.due_on <= $5)
          AND ($6::uuid IS NULL OR i.id < $6)
        ORDER BY i.id DESC
        LIMIT $7
        "#,
        proof.organization_id(),
        filter.project_id,
        filter.status.map(Status::as_str),
        filter.due_from,
        filter.due_to,
        filter.before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// One invoice of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Invoice>> {
    sqlx::query_as!(
        Invoice,
        r#"
        SELECT i.id, i.project_id, i.number, i.vendor, i.amount_minor, i.currency, i.status,
               i.issued_on, i.due_on, i.pdf_file_id, f.filename AS "pdf_filename?",
               f.size_bytes AS "pdf_size_bytes?", f.sha256 AS "pdf_sha256?",
               f.storage_key AS "pdf_storage_key?", i.created_by, i.created_at, i.updated_at
        FROM invoices i
        LEFT JOIN stored_files f ON f.organization_id = i.organization_id AND f.id = i.pdf_file_id
        WHERE i.organization_id = $1 AND i.id = $2
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// What a change must check, read under a row lock so concurrent changes serialise.
#[derive(Debug, Clone)]
pub struct Locked {
    pub status: String,
    pub issued_on: Option<NaiveDate>,
    pub due_on: Option<NaiveDate>,
    pub pdf_file_id: Option<Uuid>,
}

/// Locks an invoice for a change.
///
/// # Errors
/// Database errors.
pub async fn lock(
    conn: &mut PgConnection,
    proof: &Granted<ManageInvoices>,
    id: Uuid,
) -> sqlx::Result<Option<Locked>> {
    sqlx::query_as!(
        Locked,
        r#"
        SELECT status, issued_on, due_on, pdf_file_id FROM invoices
        WHERE organization_id = $1 AND id = $2
        FOR UPDATE
        "#,
        proof.organization_id(),
        id,
    )
    .fetch_optional(conn)
    .await
}

/// Applies the `Some` fields (checked by the caller against the locked row).
///
/// # Errors
/// [`WriteError::NumberTaken`], [`WriteError::ProjectNotFound`]; database errors.
pub async fn update(
    conn: &mut PgConnection,
    proof: &Granted<ManageInvoices>,
    id: Uuid,
    fields: &Fields,
) -> Result<(), WriteError> {
    sqlx::query!(
        r#"
        UPDATE invoices SET
            project_id = coalesce($3, project_id),
            number = coalesce($4, number),
            vendor = coalesce($5, vendor),
            amount_minor = coalesce($6, amount_minor),
            currency = coalesce($7, currency),
            status = coalesce($8, status),
            issued_on = coalesce($9, issued_on),
            due_on = coalesce($10, due_on)
        WHERE organization_id = $1 AND id = $2
        "#,
        proof.organization_id(),
        id,
        fields.project_id,
        fields.number,
        fields.vendor,
        fields.amount_minor,
        fields.currency,
        fields.status.map(Status::as_str),
        fields.issued_on,
        fields.due_on,
    )
    .execute(conn)
    .await
    .map_err(write_error)?;
    Ok(())
}

/// Points the invoice at a new PDF file (or none).
///
/// # Errors
/// Database errors.
pub async fn set_pdf(
    conn: &mut PgConnection,
    proof: &Granted<ManageInvoices>,
    id: Uuid,
    file_id: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE invoices SET pdf_file_id = $3 WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
        file_id,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes an invoice row (its PDF file row is the caller's, after the object).
///
/// # Errors
/// Database errors.
pub async fn delete(
    conn: &mut PgConnection,
    proof: &Granted<ManageInvoices>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        "DELETE FROM invoices WHERE organization_id = $1 AND id = $2",
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::Status::*;
    use super::*;

    #[test]
    fn status_moves_only_along_the_documented_transitions() {
        assert_eq!(Approved.change_to(Paid), Ok(()));
        for from in [Draft, Pending, Rejected, Void] {
            assert!(
                matches!(from.change_to(Paid), Err(Transition::NotAllowed { .. })),
                "{from:?}"
            );
        }
        for from in [Draft, Pending, Approved, Rejected, Void] {
            assert_eq!(from.change_to(Void), Ok(()), "{from:?}");
        }
        assert!(Paid.change_to(Void).is_err());
        for from in Status::ALL {
            for to in [Approved, Rejected] {
                if from != to {
                    assert_eq!(from.change_to(to), Err(Transition::ByApprovalOnly));
                }
            }
        }
        assert_eq!(Draft.change_to(Pending), Ok(()));
        assert_eq!(Rejected.change_to(Pending), Ok(()));
        assert!(Void.change_to(Pending).is_err());
        assert!(Paid.change_to(Draft).is_err());
    }
}
