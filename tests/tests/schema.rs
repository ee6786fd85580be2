//! The schema's conventions, checked against the migrated database rather than by reading SQL:
//! tenancy columns, time zones, UUIDv7 keys, indexes behind foreign keys, pgvector indexes.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use zoark_tests::TestApp;

/// Tables that are not owned by one organization, each for a reason.
const GLOBAL_TABLES: &[&str] = &[
    "organizations",             // the tenants themselves
    "users", // one identity may belong to several organizations through memberships
    "password_reset_tokens", // a password belongs to the user, not to one organization
    "email_verification_tokens", // likewise, an address
    "backups", // whole-database backups are the platform's, not a tenant's
    "jobs",  // tenant jobs carry organization_id; platform jobs (maintenance) have none
    "job_workers", // worker processes serve every tenant
    "cron_ticks", // the static cron table is the platform's
    "job_diagnostics", // written by diagnostic job kinds, not tenant data
    "login_throttle", // failed sign-ins are counted before any tenant is known
    "queue_pauses", // an organization's pause, or an operator's for every organization (NULL)
    "job_event_watchers", // whether an operator watches platform job events: the platform's
    "job_tallies", // like jobs: tenant rows carry organization_id, platform rows none
    "job_counts", // likewise (folded from job_tallies)
    "job_throughput", // likewise
];

async fn strings(app: &TestApp, sql: &'static str) -> BTreeSet<String> {
    sqlx::query_scalar::<_, String>(sql)
        .fetch_all(&app.pool)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn every_tenant_owned_table_has_a_non_null_organization_id() {
    let app = TestApp::spawn().await;
    let tables = strings(
        &app,
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations'",
    )
    .await;
    assert!(
        tables.len() >= 30,
        "the domain model has {} tables: {tables:?}",
        tables.len()
    );
    let with_org = strings(
        &app,
        "SELECT table_name::text FROM information_schema.columns
         WHERE table_schema = 'public' AND column_name = 'organization_id' AND is_nullable = 'NO'",
    )
    .await;
    let without: BTreeSet<_> = tables.difference(&with_org).cloned().collect();
    let allowed: BTreeSet<_> = GLOBAL_TABLES.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        without, allowed,
        "tables without a NOT NULL organization_id must be listed in GLOBAL_TABLES with a reason"
    );
}

#[tokio::test]
async fn no_timestamp_is_stored_without_a_time_zone() {
    let app = TestApp::spawn().await;
    let naive = strings(
        &app,
        "SELECT table_name || '.' || column_name FROM information_schema.columns
         WHERE table_schema = 'public' AND data_type IN ('timestamp without time zone', 'time with time zone')",
    )
    .await;
    assert!(naive.is_empty(), "use timestamptz: {naive:?}");
}

#[tokio::test]
async fn every_id_is_a_uuid_defaulting_to_uuid_v7() {
    let app = TestApp::spawn().await;
    let bad = strings(
        &app,
        "SELECT c.table_name || ' ' || c.data_type || ' ' || coalesce(c.column_default, 'no default')
         FROM information_schema.columns c
         JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
         WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE' AND c.column_name = 'id'
           AND (c.data_type <> 'uuid' OR coalesce(c.column_default, '') NOT LIKE 'uuid_generate_v7()%')",
    )
    .await;
    assert!(
        bad.is_empty(),
        "ids must be uuid DEFAULT uuid_generate_v7(): {bad:?}"
    );

    let ids: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT uuid_generate_v7() FROM generate_series(1, 50)")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert!(ids.iter().all(|id| id.get_version_num() == 7), "version 7");
    assert!(
        ids.iter()
            .all(|id| id.get_variant() == uuid::Variant::RFC4122),
        "RFC 9562 variant"
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let (secs, nanos) = ids[0].get_timestamp().unwrap().to_unix();
    let ms = secs * 1000 + u64::from(nanos) / 1_000_000;
    assert!(
        now_ms.abs_diff(ms) < 60_000,
        "the embedded timestamp is now"
    );
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 50, "unique");
}

#[tokio::test]
async fn every_foreign_key_is_backed_by_an_index() {
    let app = TestApp::spawn().await;
    // A foreign key is covered when some index's leading columns are exactly its columns (in any order).
    let uncovered = strings(
        &app,
        "SELECT c.conrelid::regclass::text || ' ' || c.conname
         FROM pg_constraint c
         WHERE c.contype = 'f' AND c.connamespace = 'public'::regnamespace
           AND NOT EXISTS (
             SELECT 1 FROM pg_index i
             WHERE i.indrelid = c.conrelid
               AND (SELECT array_agg(k ORDER BY k) FROM unnest((i.indkey::int2[])[0:cardinality(c.conkey) - 1]) k)
                 = (SELECT array_agg(k ORDER BY k) FROM unnest(c.conkey) k)
           )",
    )
    .await;
    assert!(
        uncovered.is_empty(),
        "foreign keys without an index (deletes of the parent would scan): {uncovered:?}"
    );
}

#[tokio::test]
async fn document_chunks_have_hnsw_vector_indexes() {
    let app = TestApp::spawn().await;
    let hnsw = strings(
        &app,
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = 'public' AND indexdef ILIKE '%USING hnsw%'",
    )
    .await;
    assert!(
        !hnsw.is_empty(),
        "an HNSW index on the RAG chunks' embeddings"
    );
    let extensions = strings(&app, "SELECT extname::text FROM pg_extension").await;
    for ext in ["vector", "pgcrypto", "btree_gin"] {
        assert!(extensions.contains(ext), "extension {ext}");
    }
}

#[tokio::test]
async fn a_fresh_database_has_no_apalis_schema_and_needs_no_hstore() {
    let app = TestApp::spawn().await;
    let schemas = strings(
        &app,
        "SELECT nspname::text FROM pg_namespace
         WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'",
    )
    .await;
    assert_eq!(
        schemas,
        BTreeSet::from(["public".to_owned()]),
        "Zoark's tables, the job engine's among them, all live in public"
    );
    // hstore may come with the server's template1 (created there by a superuser), but the
    // migrations neither create it nor use it.
    let created_by_us: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hstore' AND pg_get_userbyid(extowner) = current_user)",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(!created_by_us, "the migrations created hstore");
    let hstore_columns = strings(
        &app,
        "SELECT attrelid::regclass::text || '.' || attname::text FROM pg_attribute
         WHERE atttypid IN (SELECT oid FROM pg_type WHERE typname = 'hstore') AND NOT attisdropped",
    )
    .await;
    assert!(
        hstore_columns.is_empty(),
        "hstore columns: {hstore_columns:?}"
    );
}

#[tokio::test]
async fn migrating_a_database_that_has_apalis_postgres_schema_drops_it_and_its_hstore() {
    let db = zoark_tests::db::TestDatabase::create_empty().await.unwrap();
    let pool = zoark_tests::db::platform_pool(&db.url).await;
    // What apalis-postgres's migrations left on databases migrated before: the `apalis` schema
    // with its own migration table and a jobs table whose metadata is hstore, which those
    // migrations created as the application role (hstore is a trusted extension).
    for sql in [
        "CREATE EXTENSION IF NOT EXISTS hstore",
        "CREATE SCHEMA apalis",
        "CREATE TABLE apalis._sqlx_migrations (version bigint PRIMARY KEY)",
        "CREATE TABLE apalis.jobs (id text PRIMARY KEY, metadata hstore)",
        "CREATE FUNCTION apalis.generate_ulid() RETURNS text LANGUAGE sql AS 'SELECT 1::text'",
    ] {
        sqlx::query(sql).execute(&pool).await.unwrap();
    }
    let ours: bool = sqlx::query_scalar(
        "SELECT pg_has_role(extowner, 'USAGE') FROM pg_extension WHERE extname = 'hstore'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();

    zoark_core::db::migrate_all(&pool).await.unwrap();

    let apalis: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'apalis')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!apalis, "the apalis schema is dropped");
    let hstore: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'hstore')")
            .fetch_one(&pool)
            .await
            .unwrap();
    // The application role can drop hstore only when it owns it; a superuser's copy (a server
    // whose template1 carries it) stays, and the migration still succeeds.
    assert_eq!(hstore, !ours, "hstore dropped when ours ({ours})");
    pool.close().await;
}

#[test]
fn migration_files_are_named_timestamp_verb_noun() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(!names.is_empty());
    for name in &names {
        let (stamp, rest) = name.split_at(14.min(name.len()));
        assert!(
            stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()),
            "{name}: YYYYMMDDHHMMSS prefix"
        );
        let words: Vec<&str> = rest
            .trim_start_matches('_')
            .trim_end_matches(".sql")
            .split('_')
            .collect();
        assert!(
            rest.starts_with('_') && rest.ends_with(".sql") && words.len() >= 2,
            "{name}: _verb_noun.sql"
        );
        assert!(
            words.iter().all(|w| !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
            "{name}"
        );
    }
}

#[tokio::test]
async fn a_row_cannot_point_at_another_tenants_row() {
    let app = TestApp::spawn().await;
    let mut tx = app.pool.begin().await.unwrap();
    let org_a = zoark_core::db::organizations::insert(&mut tx, "A")
        .await
        .unwrap();
    let org_b = zoark_core::db::organizations::insert(&mut tx, "B")
        .await
        .unwrap();
    let project_a: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO projects (organization_id, name) VALUES ($1, 'p') RETURNING id",
    )
    .bind(org_a)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let err =
        sqlx::query("INSERT INTO tasks (organization_id, project_id, title) VALUES ($1, $2, 't')")
            .bind(org_b)
            .bind(project_a)
            .execute(&app.pool)
            .await
            .unwrap_err();
    assert_eq!(
        err.as_database_error().unwrap().code().as_deref(),
        Some("23503"),
        "{err}"
    );
}

#[tokio::test]
async fn work_history_is_append_only_but_survives_the_deletion_of_its_actor() {
    let app = TestApp::spawn().await;
    let mut tx = app.pool.begin().await.unwrap();
    let org = zoark_core::db::organizations::insert(&mut tx, "A")
        .await
        .unwrap();
    let user = zoark_core::db::users::insert(&mut tx, "ann@example.com", "Ann", "$argon2id$v=19$x")
        .await
        .unwrap();
    let project: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO projects (organization_id, name) VALUES ($1, 'p') RETURNING id",
    )
    .bind(org)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let task: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO tasks (organization_id, project_id, title) VALUES ($1, $2, 't') RETURNING id",
    )
    .bind(org)
    .bind(project)
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    sqlx::query("INSERT INTO task_work_history (organization_id, task_id, actor_user_id, action) VALUES ($1, $2, $3, 'moved')")
        .bind(org)
        .bind(task)
        .bind(user)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let err = sqlx::query("UPDATE task_work_history SET action = 'rewritten'")
        .execute(&app.pool)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");

    sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user)
        .execute(&app.pool)
        .await
        .unwrap();
    let (action, actor): (String, Option<uuid::Uuid>) =
        sqlx::query_as("SELECT action, actor_user_id FROM task_work_history")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        (action.as_str(), actor),
        ("moved", None),
        "history kept, actor forgotten"
    );
}

#[tokio::test]
async fn the_development_organization_is_created_once_with_a_working_password() {
    let app = TestApp::spawn().await;
    let created = zoark_core::db::dev_seed::ensure_dev_organization(&app.pool)
        .await
        .unwrap()
        .expect("first run creates it");
    assert!(created.password.len() >= 20);
    assert!(
        zoark_core::db::dev_seed::ensure_dev_organization(&app.pool)
            .await
            .unwrap()
            .is_none(),
        "second run is a no-op"
    );

    let mut conn = app.pool.acquire().await.unwrap();
    let user = zoark_core::db::users::find_id_by_email(&mut conn, "ADMIN@zoark.localhost")
        .await
        .unwrap()
        .unwrap();
    let hash = zoark_core::db::users::password_hash(&mut conn, user)
        .await
        .unwrap()
        .unwrap();
    assert!(zoark_core::crypto::verify_password(
        &created.password,
        &hash
    ));
    let orgs: i64 = sqlx::query_scalar("SELECT count(*) FROM organizations")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(orgs, 1);
    let role: String = sqlx::query_scalar("SELECT role FROM memberships WHERE user_id = $1")
        .bind(user)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(role, "admin");
}

#[tokio::test]
async fn every_table_is_under_forced_row_level_security_with_a_policy() {
    let app = TestApp::spawn().await;
    let unprotected = strings(
        &app,
        "SELECT c.relname::text FROM pg_class c
         WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r'
           AND c.relname <> '_sqlx_migrations'
           -- Ranked outside row security so that full-text matches use their index; read only
           -- joined to rag_chunks, which is under it (see its migration).
           AND c.relname <> 'rag_chunk_terms'
           -- COPY FROM (bulk enqueue) is refused under applied policies, and `jobs`' trigger
           -- writes job_tallies in any transaction that writes jobs: see the migrations.
           AND NOT (c.relrowsecurity AND (c.relforcerowsecurity OR c.relname IN ('jobs', 'job_tallies'))
                    AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid))",
    )
    .await;
    assert!(
        unprotected.is_empty(),
        "enable and force row-level security, with a policy, on: {unprotected:?}"
    );
}

#[tokio::test]
async fn row_level_security_confines_a_tenant_transaction_to_its_organization() {
    use zoark_core::{
        access::{Actor, Principal, ReadOrganization, Role},
        db::tenant,
    };
    let app = TestApp::spawn().await;
    let a = zoark_tests::fixtures::organization(&app.pool, "A").await;
    let b = zoark_tests::fixtures::organization(&app.pool, "B").await;
    for org in [a, b] {
        sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, 'p')")
            .bind(org)
            .execute(&app.pool)
            .await
            .unwrap();
    }
    let api_pool = zoark_core::db::api_pool(&app.settings).unwrap();
    let proof = Principal::authenticated(
        a,
        Role::Viewer,
        Actor::ApiKey {
            key_id: uuid::Uuid::now_v7(),
        },
    )
    .authorize::<ReadOrganization>()
    .unwrap();

    // No filter at all, yet only A's rows.
    let mut tx = tenant::begin(&api_pool, &proof).await.unwrap();
    let orgs: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT organization_id FROM projects")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(orgs, vec![a]);
    let visible: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM organizations")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, vec![a]);
    // Writing into B is refused by the policy's check.
    let err = sqlx::query("INSERT INTO projects (organization_id, name) VALUES ($1, 'x')")
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        err.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("42501"),
        "{err}"
    );
    drop(tx);

    // Outside a tenant transaction the API's connections see nothing.
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&api_pool)
        .await
        .unwrap();
    assert_eq!(none, 0);
    // The tenant setting does not leak into the connection's next transaction.
    let mut conn = api_pool.acquire().await.unwrap();
    let leaked: Option<String> =
        sqlx::query_scalar("SELECT nullif(current_setting('zoark.organization_id', true), '')")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(leaked, None);
    // The system transaction (authentication) sees everything.
    let mut system = tenant::system(&api_pool).await.unwrap();
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM projects")
        .fetch_one(&mut *system)
        .await
        .unwrap();
    assert_eq!(all, 2);
}
