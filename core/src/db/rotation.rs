//! `zoark-api rotate-keys`: every stored secret re-sealed under the current
//! `ZOARK_ENCRYPTION_KEY` and bound to its row ([`crypto::seal_bound`]), so that the keys of
//! `ZOARK_ENCRYPTION_OLD_KEYS` can be retired and no unbound value is left.
//! Each value is replaced only if it did not change meanwhile (compare and set), so the command
//! runs safely beside the live platform and can be run again.

use sqlx::{AssertSqlSafe, PgPool, Row as _};
use uuid::Uuid;

use crate::{crypto, settings::EncryptionKey};

/// Every column that holds a [`crypto::seal`]ed value, by table.
pub const SEALED_COLUMNS: &[(&str, &str)] = &[
    // Each table has `id` and `organization_id`: the binding of its values.
    ("email_accounts", "smtp_password_ciphertext"),
    ("email_accounts", "oauth_access_token_ciphertext"),
    ("email_accounts", "oauth_refresh_token_ciphertext"),
    ("oauth_states", "pkce_verifier_ciphertext"),
    ("llm_credentials", "api_key_ciphertext"),
    ("webhooks", "secret_ciphertext"),
];

/// Rows read at a time.
const BATCH: i64 = 500;

/// What one column's pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resealed {
    /// `table.column`, or `jobs.args.sealed_params`.
    pub what: String,
    /// Values now sealed under the current key.
    pub resealed: u64,
    /// Values already under it.
    pub current: u64,
    /// Values that changed while this ran (left alone: they were written with the current key).
    pub changed: u64,
}

/// Re-seals every stored secret under `key`'s current key; `progress` hears each column's
/// result as it finishes.
///
/// # Errors
/// Database errors, or a value no key of the ring opens (nothing after it is touched).
pub async fn reseal_all(
    pool: &PgPool,
    key: &EncryptionKey,
    mut progress: impl FnMut(&Resealed),
) -> anyhow::Result<Vec<Resealed>> {
    let mut out = Vec::new();
    for (table, column) in SEALED_COLUMNS {
        let done = reseal_column(pool, key, table, column).await?;
        progress(&done);
        out.push(done);
    }
    let done = reseal_system_email_jobs(pool, key).await?;
    progress(&done);
    out.push(done);
    Ok(out)
}

async fn reseal_column(
    pool: &PgPool,
    key: &EncryptionKey,
    table: &'static str,
    column: &'static str,
) -> anyhow::Result<Resealed> {
    let mut done = Resealed {
        what: format!("{table}.{column}"),
        ..Resealed::default()
    };
    let mut after = Uuid::nil();
    loop {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT id, organization_id, {column} AS sealed FROM {table}
             WHERE {column} IS NOT NULL AND id > $1 ORDER BY id LIMIT $2"
        )))
        .bind(after)
        .bind(BATCH)
        .fetch_all(pool)
        .await?;
        let Some(last) = rows.last() else {
            return Ok(done);
        };
        after = last.try_get("id")?;
        for row in rows {
            let id: Uuid = row.try_get("id")?;
            let organization_id: Uuid = row.try_get("organization_id")?;
            let sealed: Vec<u8> = row.try_get("sealed")?;
            let binding = crypto::Binding::new((table, column), organization_id, id);
            if crypto::is_bound(&sealed) && crypto::sealed_with(&sealed) == Some(key.id()) {
                done.current += 1;
                continue;
            }
            let plain = crypto::open_bound(key, &sealed, &binding)
                .map_err(|e| anyhow::anyhow!("{table}.{column} of {id}: {e}"))?;
            let resealed = crypto::seal_bound(key, &plain, &binding)?;
            let updated = sqlx::query(AssertSqlSafe(format!(
                "UPDATE {table} SET {column} = $2 WHERE id = $1 AND {column} = $3"
            )))
            .bind(id)
            .bind(&resealed)
            .bind(&sealed)
            .execute(pool)
            .await?;
            done.count(updated.rows_affected());
        }
    }
}

/// `sealed` under the current key, or `None` when it is already.
fn reseal(
    key: &EncryptionKey,
    sealed: &[u8],
    what: impl FnOnce() -> String,
) -> anyhow::Result<Option<Vec<u8>>> {
    if crypto::sealed_with(sealed) == Some(key.id()) {
        return Ok(None);
    }
    let plain = crypto::open(key, sealed).map_err(|e| anyhow::anyhow!("{}: {e}", what()))?;
    Ok(Some(crypto::seal(key, &plain)?))
}

impl Resealed {
    /// One compare-and-set update: it replaced the value, or the value had changed.
    fn count(&mut self, rows_affected: u64) {
        if rows_affected == 1 {
            self.resealed += 1;
        } else {
            self.changed += 1;
        }
    }
}

/// The sealed parameters of system emails still in the queue (their links' tokens).
async fn reseal_system_email_jobs(pool: &PgPool, key: &EncryptionKey) -> anyhow::Result<Resealed> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut done = Resealed {
        what: "jobs.args.sealed_params".into(),
        ..Resealed::default()
    };
    let rows = sqlx::query(
        "SELECT id, args->>'sealed_params' AS sealed FROM jobs
         WHERE kind = 'email.send_system' AND args ? 'sealed_params'",
    )
    .fetch_all(pool)
    .await?;
    for row in rows {
        let id: Uuid = row.try_get("id")?;
        let sealed: String = row.try_get("sealed")?;
        let bytes = b64
            .decode(&sealed)
            .map_err(|e| anyhow::anyhow!("the parameters of job {id}: {e}"))?;
        let Some(resealed) = reseal(key, &bytes, || format!("the parameters of job {id}"))? else {
            done.current += 1;
            continue;
        };
        let updated = sqlx::query(
            "UPDATE jobs SET args = jsonb_set(args, '{sealed_params}', to_jsonb($2::text))
             WHERE id = $1 AND args->>'sealed_params' = $3",
        )
        .bind(id)
        .bind(b64.encode(resealed))
        .bind(&sealed)
        .execute(pool)
        .await?;
        done.count(updated.rows_affected());
    }
    Ok(done)
}
