//! Failed sign-ins per (account, client address) and per client address: a few are free, then
//! each further failure makes the key wait (1 s, 2 s, 4 s, … doubling), and past a limit the key
//! is locked for 15 minutes. Counters start over 15 minutes after their first failure. Unknown
//! addresses are counted like known ones, so the answers reveal nothing about which accounts
//! exist. An account is throttled per client address, so that someone failing on purpose
//! cannot lock its owner out.
//!
//! Every attempt is counted as a failure *before* its password is checked ([`attempt`]), under
//! the keys' row locks: a burst of parallel attempts cannot get past the limits. A right
//! password takes the count back ([`succeeded`]).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// The thresholds of one kind of key.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Failures without any wait.
    pub free: i32,
    /// Failures after which the key is locked for [`LOCKOUT`].
    pub lock_at: i32,
}

/// Per account: generous enough for typos, short of guessing.
pub const ACCOUNT: Policy = Policy {
    free: 5,
    lock_at: 10,
};
/// Per client address: many people may share one (an office's NAT).
pub const CLIENT: Policy = Policy {
    free: 20,
    lock_at: 50,
};
/// How long a key stays locked past [`Policy::lock_at`] failures.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// Counters older than this start over.
pub const WINDOW: Duration = Duration::from_secs(15 * 60);

/// The key of an account (by the normalised address the lookup uses) signing in from `client`.
pub fn account_key(email: &str, client: Option<std::net::IpAddr>) -> String {
    let email = account_prefix(email);
    match client {
        Some(ip) => format!("{email}|ip:{ip}"),
        None => email,
    }
}

/// What every key of an account starts with.
fn account_prefix(email: &str) -> String {
    let normalised = crate::identity::EmailAddress::parse(email)
        .map(|e| e.as_str().to_lowercase())
        .unwrap_or_else(|_| email.trim().to_lowercase());
    format!("email:{normalised}")
}

pub fn client_key(ip: std::net::IpAddr) -> String {
    format!("ip:{ip}")
}

/// Counts a sign-in attempt as a failure of each key (with its policy) before the password is
/// checked; refuses, counting nothing, while any key must wait. Run it in a transaction and
/// commit before checking the password: the keys' rows stay locked until then.
///
/// # Errors
/// Database errors.
pub async fn attempt(
    conn: &mut PgConnection,
    keys: &[(String, Policy)],
) -> sqlx::Result<Option<DateTime<Utc>>> {
    let mut names: Vec<String> = keys.iter().map(|(k, _)| k.clone()).collect();
    names.sort_unstable();
    sqlx::query!(
        r#"
        INSERT INTO login_throttle (key, failures, first_failure_at)
        SELECT k, 0, now() FROM unnest($1::text[]) AS k ORDER BY k
        ON CONFLICT (key) DO NOTHING
        "#,
        &names,
    )
    .execute(&mut *conn)
    .await?;
    let until = sqlx::query_scalar!(
        r#"
        WITH locked AS (
            SELECT locked_until FROM login_throttle WHERE key = ANY($1) ORDER BY key FOR UPDATE
        )
        SELECT max(locked_until) FROM locked WHERE locked_until > clock_timestamp()
        "#,
        &names,
    )
    .fetch_one(&mut *conn)
    .await?;
    if until.is_some() {
        return Ok(until);
    }
    for (key, policy) in keys {
        record_failure(conn, key, *policy).await?;
    }
    Ok(None)
}

/// The attempt's password was right: the account's failures are forgiven, and the failure
/// [`attempt`] counted against each of `others` (the client address) is taken back.
///
/// # Errors
/// Database errors.
pub async fn succeeded(
    conn: &mut PgConnection,
    account_key: &str,
    others: &[String],
) -> sqlx::Result<()> {
    clear(&mut *conn, account_key).await?;
    sqlx::query!(
        r#"
        UPDATE login_throttle SET failures = greatest(failures - 1, 0), locked_until = NULL,
                                  updated_at = now()
        WHERE key = ANY($1)
        "#,
        others,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Forgets the failures of an account from every address (its password was reset).
///
/// # Errors
/// Database errors.
pub async fn clear_account(conn: &mut PgConnection, email: &str) -> sqlx::Result<()> {
    let prefix = account_prefix(email);
    sqlx::query!(
        "DELETE FROM login_throttle WHERE key = $1 OR starts_with(key, $1 || '|')",
        prefix,
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Counts one failure of `key` and sets its wait.
///
/// # Errors
/// Database errors.
pub async fn record_failure(
    conn: &mut PgConnection,
    key: &str,
    policy: Policy,
) -> sqlx::Result<()> {
    let failures = sqlx::query_scalar!(
        r#"
        INSERT INTO login_throttle (key, failures, first_failure_at) VALUES ($1, 1, now())
        ON CONFLICT (key) DO UPDATE SET
            failures = CASE WHEN login_throttle.first_failure_at < now() - make_interval(secs => $2)
                            THEN 1 ELSE login_throttle.failures + 1 END,
            first_failure_at = CASE WHEN login_throttle.first_failure_at < now() - make_interval(secs => $2)
                                    THEN now() ELSE login_throttle.first_failure_at END,
            updated_at = now()
        RETURNING failures
        "#,
        key,
        WINDOW.as_secs_f64(),
    )
    .fetch_one(&mut *conn)
    .await?;
    let wait = wait_after(failures, policy);
    // The wait runs from now, not from the start of a transaction that may have spent a second
    // verifying a password.
    sqlx::query!(
        "UPDATE login_throttle SET locked_until = clock_timestamp() + make_interval(secs => $2) WHERE key = $1",
        key,
        wait.map(|w| w.as_secs_f64()),
    )
    .execute(conn)
    .await
    .map(|_| ())
}

/// Forgets one key's failures.
///
/// # Errors
/// Database errors.
pub async fn clear(conn: &mut PgConnection, key: &str) -> sqlx::Result<()> {
    sqlx::query!("DELETE FROM login_throttle WHERE key = $1", key)
        .execute(conn)
        .await
        .map(|_| ())
}

/// How long a key waits after its `failures`-th failure.
pub fn wait_after(failures: i32, policy: Policy) -> Option<Duration> {
    if failures >= policy.lock_at {
        Some(LOCKOUT)
    } else if failures > policy.free {
        let doublings = u32::try_from(failures - policy.free - 1)
            .unwrap_or(0)
            .min(16);
        Some(Duration::from_secs(1 << doublings))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_free_then_double_then_lock() {
        let waits: Vec<_> = (1..=10).map(|n| wait_after(n, ACCOUNT)).collect();
        assert_eq!(waits[..5], [None; 5]);
        assert_eq!(
            waits[5..9],
            [1, 2, 4, 8].map(|s| Some(Duration::from_secs(s)))
        );
        assert_eq!(waits[9], Some(LOCKOUT));
        assert_eq!(wait_after(21, CLIENT), Some(Duration::from_secs(1)));
        assert_eq!(wait_after(50, CLIENT), Some(LOCKOUT));
    }

    #[test]
    fn an_account_is_keyed_by_its_normalised_address_and_the_client() {
        let ip = Some("192.0.2.7".parse().unwrap());
        assert_eq!(
            account_key(" Ada@Example.COM ", ip),
            "email:ada@example.com|ip:192.0.2.7"
        );
        assert_eq!(
            account_key("ada@example.com", None),
            "email:ada@example.com"
        );
        assert!(account_key("ada@example.com", ip).starts_with(&account_prefix("ADA@example.com")));
    }
}
