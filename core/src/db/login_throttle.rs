//! Failed sign-ins per account and per client address: a few are free, then each further
//! failure makes the key wait (1 s, 2 s, 4 s, … doubling), and past a limit the key is locked
//! for 15 minutes. Counters start over 15 minutes after their first failure. Unknown addresses
//! are counted like known ones, so the answers reveal nothing about which accounts exist.

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

pub fn account_key(email: &str) -> String {
    format!("email:{}", email.trim().to_lowercase())
}

pub fn client_key(ip: std::net::IpAddr) -> String {
    format!("ip:{ip}")
}

/// Until when the most restricted of `keys` must wait, if any must.
///
/// # Errors
/// Database errors.
pub async fn locked_until(
    conn: &mut PgConnection,
    keys: &[String],
) -> sqlx::Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar!(
        "SELECT max(locked_until) FROM login_throttle WHERE key = ANY($1) AND locked_until > now()",
        keys,
    )
    .fetch_one(conn)
    .await
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

/// A successful sign-in forgives the account's failures (not the client's).
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
}
