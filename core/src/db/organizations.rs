//! Queries on `organizations`.

use sqlx::PgConnection;
use uuid::Uuid;

/// Inserts an organization and returns its id.
///
/// # Errors
/// Database errors (e.g. a CHECK on the name).
pub async fn insert(conn: &mut PgConnection, name: &str) -> sqlx::Result<Uuid> {
    sqlx::query_scalar!(
        "INSERT INTO organizations (id, name) VALUES ($1, $2) RETURNING id",
        Uuid::now_v7(),
        name
    )
    .fetch_one(conn)
    .await
}

/// An organization as its members see it.
#[derive(Debug, Clone)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    pub display_name: Option<String>,
    pub logo_url: Option<String>,
    pub primary_color: Option<String>,
    pub time_zone: String,
    pub default_sender_email_account_id: Option<Uuid>,
    pub llm_monthly_budget_micros: Option<i64>,
    pub api_key_max_lifetime_days: Option<i32>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// The proof's organization.
///
/// # Errors
/// Database errors; `RowNotFound` when it was deleted.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<P>,
) -> sqlx::Result<Organization> {
    sqlx::query_as!(
        Organization,
        r#"
        SELECT id, name, display_name, logo_url, primary_color, time_zone,
               default_sender_email_account_id, llm_monthly_budget_micros,
               api_key_max_lifetime_days, created_at, updated_at
        FROM organizations WHERE id = $1 AND deleted_at IS NULL
        "#,
        proof.organization_id(),
    )
    .fetch_one(conn)
    .await
}

/// What the platform's emails show of an organization: its name in the header and footer, its
/// logo, its color on buttons and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Branding {
    /// The display name, else the name.
    pub name: String,
    pub logo_url: Option<String>,
    pub primary_color: Option<String>,
}

impl Branding {
    /// Zoark's blue, for organizations without a (valid) color of their own.
    pub const DEFAULT_COLOR: &'static str = "#1f6feb";

    /// Zoark's own branding, for emails no organization sends (password resets).
    pub fn zoark() -> Self {
        Self {
            name: "Zoark".to_owned(),
            logo_url: None,
            primary_color: None,
        }
    }

    /// The primary color when it is `#rrggbb`, else [`Self::DEFAULT_COLOR`]: the value goes into
    /// inline CSS, so nothing but a hex color may reach it, whatever is stored.
    pub fn color(&self) -> &str {
        let valid = |c: &&str| {
            c.strip_prefix('#')
                .is_some_and(|hex| hex.len() == 6 && hex.chars().all(|h| h.is_ascii_hexdigit()))
        };
        self.primary_color
            .as_deref()
            .filter(valid)
            .unwrap_or(Self::DEFAULT_COLOR)
    }

    /// The logo URL when it is an http(s) URL (never `javascript:` or `data:`).
    pub fn logo(&self) -> Option<&str> {
        self.logo_url
            .as_deref()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
    }
}

/// The branding of organization `organization_id`, or `None` when it does not exist (or was
/// deleted). For platform connections (workers), which see every organization.
///
/// # Errors
/// Database errors.
pub async fn branding(
    conn: &mut PgConnection,
    organization_id: Uuid,
) -> sqlx::Result<Option<Branding>> {
    sqlx::query_as!(
        Branding,
        r#"
        SELECT coalesce(display_name, name) AS "name!", logo_url, primary_color
        FROM organizations WHERE id = $1 AND deleted_at IS NULL
        "#,
        organization_id,
    )
    .fetch_optional(conn)
    .await
}

/// A partial update: `None` leaves a field alone; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default)]
pub struct Patch {
    pub name: Option<String>,
    pub display_name: Option<Option<String>>,
    pub logo_url: Option<Option<String>>,
    pub primary_color: Option<Option<String>>,
    pub time_zone: Option<String>,
    pub default_sender_email_account_id: Option<Option<Uuid>>,
    pub llm_monthly_budget_micros: Option<Option<i64>>,
    pub api_key_max_lifetime_days: Option<Option<i32>>,
}

/// Applies `patch` and returns the organization before and after.
///
/// # Errors
/// Database errors: a CHECK violation for a value the schema refuses, a foreign-key violation
/// for a sender account that is not the organization's.
pub async fn update(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::UpdateOrganization>,
    patch: &Patch,
) -> sqlx::Result<(Organization, Organization)> {
    let before = get(&mut *conn, proof).await?;
    let after = sqlx::query_as!(
        Organization,
        r#"
        UPDATE organizations SET
            name = coalesce($2, name),
            display_name = CASE WHEN $3 THEN $4 ELSE display_name END,
            logo_url = CASE WHEN $5 THEN $6 ELSE logo_url END,
            primary_color = CASE WHEN $7 THEN $8 ELSE primary_color END,
            time_zone = coalesce($9, time_zone),
            default_sender_email_account_id = CASE WHEN $10 THEN $11 ELSE default_sender_email_account_id END,
            llm_monthly_budget_micros = CASE WHEN $12 THEN $13 ELSE llm_monthly_budget_micros END,
            api_key_max_lifetime_days = CASE WHEN $14 THEN $15 ELSE api_key_max_lifetime_days END
        WHERE id = $1 AND deleted_at IS NULL
        RETURNING id, name, display_name, logo_url, primary_color, time_zone,
                  default_sender_email_account_id, llm_monthly_budget_micros,
                  api_key_max_lifetime_days, created_at, updated_at
        "#,
        proof.organization_id(),
        patch.name,
        patch.display_name.is_some(),
        patch.display_name.clone().flatten(),
        patch.logo_url.is_some(),
        patch.logo_url.clone().flatten(),
        patch.primary_color.is_some(),
        patch.primary_color.clone().flatten(),
        patch.time_zone,
        patch.default_sender_email_account_id.is_some(),
        patch.default_sender_email_account_id.flatten(),
        patch.llm_monthly_budget_micros.is_some(),
        patch.llm_monthly_budget_micros.flatten(),
        patch.api_key_max_lifetime_days.is_some(),
        patch.api_key_max_lifetime_days.flatten(),
    )
    .fetch_one(conn)
    .await?;
    Ok((before, after))
}

/// Deletes the organization (a soft delete: its rows stay for the retention period) and ends
/// every session and API key in it.
///
/// # Errors
/// Database errors.
pub async fn soft_delete(
    conn: &mut PgConnection,
    proof: &crate::access::Granted<crate::access::DeleteOrganization>,
) -> sqlx::Result<()> {
    let org = proof.organization_id();
    sqlx::query!(
        "UPDATE organizations SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
        org
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = 'admin' WHERE organization_id = $1 AND revoked_at IS NULL",
        org
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "UPDATE api_keys SET revoked_at = now() WHERE organization_id = $1 AND revoked_at IS NULL",
        org
    )
    .execute(conn)
    .await
    .map(|_| ())
}
