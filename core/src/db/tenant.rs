//! Transactions scoped for row-level security.
//!
//! [`begin`] takes a permission proof ([`TenantProof`]) and sets the transaction's tenant, so
//! even a query that forgot its `organization_id` filter sees only that organization.
//! [`system`] sees everything; it is for authentication and registration, which must find a
//! user, key or session before any tenant is known.

use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};

use crate::access::TenantProof;

/// A transaction of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn begin(
    pool: &PgPool,
    proof: &impl TenantProof,
) -> sqlx::Result<Transaction<'static, Postgres>> {
    // One round trip: the tenant is a UUID (no quoting issue), set for this transaction only.
    pool.begin_with(AssertSqlSafe(format!(
        "BEGIN; SET LOCAL zoark.organization_id = '{}'",
        proof.tenant()
    )))
    .await
}

/// A transaction that sees every organization: authentication and registration only.
///
/// # Errors
/// Database errors.
pub async fn system(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    pool.begin_with("BEGIN; SET LOCAL zoark.rls = 'bypass'")
        .await
}
