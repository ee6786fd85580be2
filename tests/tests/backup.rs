//! The nightly database backup (`maintenance.backup_database`) run by the real worker: sealed
//! to a local directory and restored with `zoark-worker open-backup` + `pg_restore` into an
//! empty database; a failing pg_dump stores nothing and retries; an S3-compatible destination
//! (wiremock speaking the S3 REST shapes) receives the dump and expired backups are deleted.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde_json::Value;
use sha2::{Digest as _, Sha256};
use uuid::Uuid;
use zoark_jobs::{Opts, enqueue, maintenance::BackupDatabase};
use zoark_tests::{
    TestApp, binary,
    db::TestDatabase,
    wiremock::{
        Mock, MockServer, ResponseTemplate,
        matchers::{method, path, path_regex, query_param},
    },
};

/// base64 of the bytes 0..32.
const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// The pg_dump `cargo xtask test` found next to the test server (else the one on PATH).
fn pg_dump() -> String {
    std::env::var("ZOARK_PG_DUMP").unwrap_or_else(|_| "pg_dump".into())
}

fn pg_restore() -> PathBuf {
    PathBuf::from(pg_dump()).with_file_name("pg_restore")
}

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zoark-backup-test-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn age(file: &Path, days: u64) {
    let then = SystemTime::now() - Duration::from_secs(days * 86_400);
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(then)
        .unwrap();
}

async fn backup_job(app: &TestApp) -> Uuid {
    let mut conn = app.pool.acquire().await.unwrap();
    enqueue(&mut conn, &BackupDatabase {}, Opts::platform())
        .await
        .unwrap()
        .id
}

async fn state_and_errors(app: &TestApp, id: Uuid) -> (String, Value) {
    sqlx::query_as("SELECT state::text, errors FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_sealed_backup_restores_into_an_empty_database_and_expired_backups_go() {
    let dir = scratch_dir();
    let app = TestApp::builder()
        .env(
            "ZOARK_BACKUP_DESTINATION",
            format!("file://{}/", dir.display()),
        )
        .env("ZOARK_BACKUP_ENCRYPTION_KEY", KEY)
        .env("ZOARK_BACKUP_RETENTION_DAYS", "30")
        .env("ZOARK_PG_DUMP", pg_dump())
        .spawn()
        .await;
    let marker = format!("Backup Marker {}", Uuid::now_v7());
    sqlx::query("INSERT INTO organizations (name) VALUES ($1)")
        .bind(&marker)
        .execute(&app.pool)
        .await
        .unwrap();
    // An expired backup, a recent one, and a file that is not a backup at all.
    for (name, days) in [
        ("zoark-20200101T020000.000Z.dump.sealed", 31),
        ("zoark-20991231T020000.000Z.dump.sealed", 29),
        ("notes.txt", 400),
    ] {
        std::fs::write(dir.join(name), b"old").unwrap();
        age(&dir.join(name), days);
    }

    let job = backup_job(&app).await;
    app.drain_jobs(Duration::from_secs(60)).await.unwrap();
    let (state, errors) = state_and_errors(&app, job).await;
    assert_eq!(state, "completed", "errors: {errors}");

    let names = files(&dir);
    assert!(!names.contains(&"zoark-20200101T020000.000Z.dump.sealed".to_owned()));
    assert!(names.contains(&"zoark-20991231T020000.000Z.dump.sealed".to_owned()));
    assert!(names.contains(&"notes.txt".to_owned()));
    let new: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".dump.sealed") && !n.starts_with("zoark-2099"))
        .collect();
    assert_eq!(new.len(), 1, "one new backup in {names:?}");
    let sealed = std::fs::read(dir.join(new[0])).unwrap();
    let (status, key, size, sha256, encrypted): (String, String, i64, Vec<u8>, bool) =
        sqlx::query_as("SELECT status, storage_key, size_bytes, sha256, encrypted FROM backups")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), key.as_str(), encrypted),
        ("succeeded", new[0].as_str(), true)
    );
    assert_eq!(size, sealed.len() as i64);
    assert_eq!(
        sha256,
        Sha256::digest(&sealed).to_vec(),
        "the stored object's digest"
    );
    assert!(sealed.starts_with(b"ZKSEAL1\n"));
    assert!(
        !sealed.windows(5).any(|w| w == b"PGDMP"),
        "the dump must not be readable without the key"
    );

    // Open it with the operator's command, then restore into a database with no schema.
    let opened = dir.join("restore.dump");
    let output = std::process::Command::new(binary("zoark-worker"))
        .arg("open-backup")
        .arg(dir.join(new[0]))
        .arg("--output")
        .arg(&opened)
        .env("ZOARK_BACKUP_ENCRYPTION_KEY", KEY)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(std::fs::read(&opened).unwrap().starts_with(b"PGDMP"));
    let wrong_key = std::process::Command::new(binary("zoark-worker"))
        .arg("open-backup")
        .arg(dir.join(new[0]))
        .arg("--output")
        .arg(dir.join("wrong.dump"))
        .env(
            "ZOARK_BACKUP_ENCRYPTION_KEY",
            "AQECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
        )
        .output()
        .unwrap();
    assert!(!wrong_key.status.success());
    assert!(
        !dir.join("wrong.dump").exists(),
        "a failed open leaves no partial file"
    );

    let target = TestDatabase::create_empty().await.unwrap();
    // As the database owner, not a superuser: skip the comments on extensions (only their
    // owner, the superuser who installed them, may set those), exactly as operations.md says.
    let listing = std::process::Command::new(pg_restore())
        .arg("--list")
        .arg(&opened)
        .output()
        .unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let list: String = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter(|l| !l.contains("COMMENT - EXTENSION"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(dir.join("restore.list"), list).unwrap();
    let restore = std::process::Command::new(pg_restore())
        .args(["--no-owner", "--exit-on-error", "--use-list"])
        .arg(dir.join("restore.list"))
        .arg("--dbname")
        .arg(&target.url)
        .arg(&opened)
        .output()
        .unwrap();
    assert!(restore.status.success(), "{restore:?}");
    let restored = zoark_tests::db::platform_pool(&target.url).await;
    let found: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations WHERE name = $1")
        .bind(&marker)
        .fetch_one(&restored)
        .await
        .unwrap();
    assert_eq!(found, 1);
    let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&restored)
        .await
        .unwrap();
    assert!(
        migrations > 0,
        "the restored database knows its schema version"
    );
    restored.close().await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_failing_pg_dump_stores_nothing_and_the_job_retries_with_its_error() {
    let dir = scratch_dir();
    let app = TestApp::builder()
        .env(
            "ZOARK_BACKUP_DESTINATION",
            format!("file://{}/", dir.display()),
        )
        // Exits 1 with no output, like pg_dump refusing a newer server.
        .env("ZOARK_PG_DUMP", "false")
        .spawn()
        .await;
    let job = backup_job(&app).await;
    app.drain_jobs(Duration::from_secs(30)).await.unwrap();
    let (state, errors) = state_and_errors(&app, job).await;
    assert_eq!(state, "retryable");
    assert!(
        errors.to_string().contains("pg_dump failed"),
        "the attempt's error says why: {errors}"
    );
    assert_eq!(files(&dir), Vec::<String>::new(), "no partial backup");
    let (status, error): (String, String) =
        sqlx::query_as("SELECT status, error FROM backups WHERE finished_at IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.contains("pg_dump failed"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_backup_streams_to_an_s3_compatible_bucket_and_expires_old_objects() {
    let s3 = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path_regex(
            r"^/zoark-backups/nightly/zoark-\d{8}T\d{6}\.\d{3}Z\.dump$",
        ))
        .respond_with(ResponseTemplate::new(200).insert_header("ETag", "\"etag-new\""))
        .expect(1)
        .mount(&s3)
        .await;
    let listing = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>zoark-backups</Name><Prefix>nightly/</Prefix><KeyCount>3</KeyCount>
  <MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>
  <Contents><Key>nightly/zoark-20200101T020000.000Z.dump</Key>
    <LastModified>2020-01-01T02:00:05.000Z</LastModified><ETag>"old"</ETag><Size>3</Size>
    <StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>nightly/keep-me.txt</Key>
    <LastModified>2020-01-01T02:00:05.000Z</LastModified><ETag>"k"</ETag><Size>3</Size>
    <StorageClass>STANDARD</StorageClass></Contents>
  <Contents><Key>nightly/zoark-20991231T020000.000Z.dump</Key>
    <LastModified>2099-12-31T02:00:05.000Z</LastModified><ETag>"new"</ETag><Size>3</Size>
    <StorageClass>STANDARD</StorageClass></Contents>
</ListBucketResult>"#;
    Mock::given(method("GET"))
        .and(path("/zoark-backups"))
        .and(query_param("list-type", "2"))
        .and(query_param("prefix", "nightly/"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "application/xml")
                .set_body_string(listing),
        )
        .expect(1)
        .mount(&s3)
        .await;
    // object_store deletes through DeleteObjects (POST ?delete with an XML list of keys).
    Mock::given(method("POST"))
        .and(path("/zoark-backups"))
        .and(query_param("delete", ""))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Content-Type", "application/xml")
                .set_body_string(
                    r#"<?xml version="1.0" encoding="UTF-8"?>
<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Deleted><Key>nightly/zoark-20200101T020000.000Z.dump</Key></Deleted>
</DeleteResult>"#,
                ),
        )
        .expect(1)
        .mount(&s3)
        .await;

    let app = TestApp::builder()
        .env("ZOARK_BACKUP_DESTINATION", "s3://zoark-backups/nightly")
        .env("ZOARK_S3_BUCKET", "zoark-documents")
        .env("ZOARK_S3_ENDPOINT", s3.uri())
        .env("ZOARK_S3_REGION", "eu-west-1")
        .env("ZOARK_S3_ACCESS_KEY_ID", "test-access-key")
        .env("ZOARK_S3_SECRET_ACCESS_KEY", "test-secret-key")
        .env("ZOARK_PG_DUMP", pg_dump())
        .spawn()
        .await;
    let job = backup_job(&app).await;
    app.drain_jobs(Duration::from_secs(60)).await.unwrap();
    let (state, errors) = state_and_errors(&app, job).await;
    assert_eq!(state, "completed", "errors: {errors}");

    let requests = s3.received_requests().await.unwrap();
    let put = requests
        .iter()
        .find(|r| r.method.as_str() == "PUT")
        .expect("the dump was uploaded");
    assert!(put.body.starts_with(b"PGDMP"), "pg_dump's custom format");
    let auth = put
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        auth.starts_with("AWS4-HMAC-SHA256 Credential=test-access-key/")
            && auth.contains("/eu-west-1/s3/aws4_request"),
        "signed with SigV4: {auth}"
    );
    let delete = requests
        .iter()
        .find(|r| r.method.as_str() == "POST")
        .expect("the expired backup was deleted");
    let keys = String::from_utf8_lossy(&delete.body);
    assert!(keys.contains("<Key>nightly/zoark-20200101T020000.000Z.dump</Key>"));
    assert!(
        !keys.contains("keep-me") && !keys.contains("2099"),
        "{keys}"
    );
    // The expectations above (one PUT, one listing, one DeleteObjects) are verified when the
    // mock server drops.
}
