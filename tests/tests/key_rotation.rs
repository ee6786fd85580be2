//! Rotating `ZOARK_ENCRYPTION_KEY`: values record the key that sealed them, a keyring of old
//! keys still opens them, and `zoark-api rotate-keys` re-seals every stored secret under the
//! new key, after which the old one can go.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use reqwest::Method;
use serde_json::json;
use zoark_core::{crypto, settings::EncryptionKey};
use zoark_tests::{TestApp, binary, call, fixtures};

/// The development key every test app seals with (id 1).
const OLD: &str = "em9hcmstZGV2LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=";
const NEW: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn key(b64: &str) -> [u8; 32] {
    *EncryptionKey::parse("test", b64).unwrap().bytes()
}

/// Every stored secret with where it is bound.
async fn sealed_values(app: &TestApp) -> Vec<(crypto::Binding, Vec<u8>)> {
    let mut out = Vec::new();
    for (table, column) in zoark_core::db::rotation::SEALED_COLUMNS {
        let rows: Vec<(uuid::Uuid, uuid::Uuid, Vec<u8>)> = sqlx::query_as(sqlx::AssertSqlSafe(
            format!("SELECT id, organization_id, {column} FROM {table} WHERE {column} IS NOT NULL"),
        ))
        .fetch_all(&app.pool)
        .await
        .unwrap();
        out.extend(
            rows.into_iter().map(|(id, org, sealed)| {
                (crypto::Binding::new((*table, *column), org, id), sealed)
            }),
        );
    }
    out
}

#[tokio::test]
async fn rotate_keys_reseals_every_secret_under_the_new_key_and_the_old_one_can_go() {
    let app = TestApp::spawn().await;
    let admin = fixtures::register(&app, "admin@example.com", "Engines").await;
    let token = admin.access_token.as_str();
    for (path, body) in [
        (
            "/api/v1/email-accounts",
            json!({"provider": "smtp", "display_name": "Ops", "from_address": "ops@engines.test",
                   "host": "smtp.example.com", "port": 587, "security": "starttls",
                   "username": "ops", "password": "smtp-secret-password"}),
        ),
        (
            "/api/v1/llm-credentials",
            json!({"name": "OpenAI", "base_url": "https://api.openai.com/v1",
                   "api_key": "sk-rotate-me", "default_model": "gpt-4o-mini"}),
        ),
        (
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/z", "event_types": ["*"]}),
        ),
    ] {
        let (status, created) = call(&app, Method::POST, path, token, Some(body)).await;
        assert_eq!(status, 201, "{created}");
    }
    let before = sealed_values(&app).await;
    assert_eq!(before.len(), 3);
    assert!(
        before
            .iter()
            .all(|(_, v)| crypto::sealed_with(v) == Some(1))
    );

    let output = std::process::Command::new(binary("zoark-api"))
        .arg("rotate-keys")
        .env("ZOARK_ENV", "development")
        .env("DATABASE_URL", &app.database.url)
        .env("ZOARK_ENCRYPTION_KEY", NEW)
        .env("ZOARK_ENCRYPTION_KEY_ID", "2")
        .env("ZOARK_ENCRYPTION_OLD_KEYS", format!("1:{OLD}"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("email_accounts.smtp_password_ciphertext") && printed.contains("Done: 3"),
        "{printed}"
    );

    // Everything is under key 2 now, and opens with it alone.
    let new_only = EncryptionKey::with_id(2, key(NEW));
    let old_only = EncryptionKey::with_id(1, key(OLD));
    let after = sealed_values(&app).await;
    assert_eq!(after.len(), 3);
    let mut opened: Vec<String> = after
        .iter()
        .map(|(binding, v)| {
            assert_eq!(crypto::sealed_with(v), Some(2));
            assert!(crypto::is_bound(v));
            assert!(crypto::open_bound(&old_only, v, binding).is_err());
            String::from_utf8(crypto::open_bound(&new_only, v, binding).unwrap()).unwrap()
        })
        .collect();
    opened.sort();
    assert_eq!(opened[1], "smtp-secret-password");
    assert_eq!(opened[0], "sk-rotate-me");
    assert!(opened[2].starts_with("whsec_"), "{opened:?}");

    // Run again: nothing left to do.
    let again = std::process::Command::new(binary("zoark-api"))
        .arg("rotate-keys")
        .env("ZOARK_ENV", "development")
        .env("DATABASE_URL", &app.database.url)
        .env("ZOARK_ENCRYPTION_KEY", NEW)
        .env("ZOARK_ENCRYPTION_KEY_ID", "2")
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("Done: 0"));
}

#[test]
fn a_keyring_opens_what_any_of_its_keys_sealed_and_names_a_missing_key() {
    let old = EncryptionKey::with_id(1, [1; 32]);
    let ring = EncryptionKey::with_id(2, [2; 32]).and_older(1, [1; 32]);
    let sealed_old = crypto::seal(&old, b"secret").unwrap();
    assert_eq!(crypto::open(&ring, &sealed_old).unwrap(), b"secret");
    let sealed_new = crypto::seal(&ring, b"secret").unwrap();
    assert_eq!(crypto::sealed_with(&sealed_new), Some(2));
    assert!(matches!(
        crypto::open(&old, &sealed_new),
        Err(crypto::CryptoError::UnknownKey(2))
    ));
    // Sealed before keys had ids: `nonce || ciphertext`, opened by whichever key fits.
    let legacy = &sealed_old[4..];
    assert_eq!(crypto::open(&ring, legacy).unwrap(), b"secret");
    // Links signed before a rotation still verify.
    let signature = crypto::sign(&old, "unsubscribe", b"delivery");
    assert!(crypto::verify(
        &ring,
        "unsubscribe",
        b"delivery",
        &signature
    ));
    assert!(!crypto::verify(
        &EncryptionKey::with_id(3, [3; 32]),
        "unsubscribe",
        b"delivery",
        &signature
    ));
}
