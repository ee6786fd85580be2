//! The database backup behind `maintenance.backup_database`: `pg_dump` streamed (and sealed when
//! a key is configured) into object storage, then retention.
//!
//! Nothing is held in memory or on local disk: pg_dump's output goes through the sealer into a
//! buffered upload (a multipart upload once it exceeds one part). The upload is completed only
//! after pg_dump exited successfully, so a failed or interrupted dump never leaves an object that
//! looks like a backup. Restore: `zoark-worker open-backup <file>` when sealed, then
//! `pg_restore` (docs/operations.md).

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use futures_util::TryStreamExt as _;
use object_store::{ObjectStore as _, ObjectStoreExt as _, buffered::BufWriter, path::Path};
use secrecy::ExposeSecret as _;
use sha2::{Digest as _, Sha256};
use tokio::{
    io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    process::Command,
};
use zoark_core::{Settings, crypto, storage::Location};
use zoark_jobs::{Job as _, maintenance::BackupDatabase};

/// File names of backups start with this; retention never touches anything else.
const NAME_PREFIX: &str = "zoark-";
/// The suffix of a backup sealed with `ZOARK_BACKUP_ENCRYPTION_KEY`.
pub const SEALED_SUFFIX: &str = ".dump.sealed";
const PLAIN_SUFFIX: &str = ".dump";

/// What one backup did.
#[derive(Debug)]
pub struct Report {
    /// The object's key at the destination.
    pub key: Path,
    /// Bytes of pg_dump output (before sealing).
    pub dump_bytes: u64,
    /// Bytes stored (after sealing).
    pub stored_bytes: u64,
    /// SHA-256 of the stored object, to verify a download before restoring.
    pub sha256: [u8; 32],
    /// Backups deleted because they were older than the retention.
    pub deleted: usize,
}

/// Takes one backup now, records it in `backups` (running → succeeded | failed, with the
/// object's key, size and SHA-256, or the error) and applies the retention.
///
/// # Errors
/// pg_dump failing (its standard error is in the message), the destination refusing the upload,
/// or listing/deleting old backups failing (the new backup is then already stored).
pub async fn run(settings: &Settings, pool: &sqlx::PgPool) -> anyhow::Result<Report> {
    // A backup whose process died stays `running`; once older than the job's timeout it cannot
    // still be going.
    sqlx::query!(
        "UPDATE backups SET status = 'failed', error = 'interrupted (the worker stopped)', finished_at = now()
         WHERE status = 'running' AND started_at < now() - make_interval(secs => $1)",
        BackupDatabase::TIMEOUT.as_secs_f64(),
    )
    .execute(pool)
    .await?;
    let id = sqlx::query_scalar!(
        "INSERT INTO backups (kind, destination, encrypted) VALUES ('scheduled', $1, $2) RETURNING id",
        redacted(&settings.backup.destination),
        settings.backup.encryption_key.is_some(),
    )
    .fetch_one(pool)
    .await?;
    match store(settings).await {
        Ok(report) => {
            sqlx::query!(
                "UPDATE backups SET status = 'succeeded', storage_key = $2, size_bytes = $3, sha256 = $4,
                        finished_at = now()
                 WHERE id = $1",
                id,
                report.key.as_ref(),
                i64::try_from(report.stored_bytes).unwrap_or(i64::MAX),
                &report.sha256[..],
            )
            .execute(pool)
            .await?;
            Ok(report)
        }
        Err(error) => {
            sqlx::query!(
                "UPDATE backups SET status = 'failed', error = $2, finished_at = now() WHERE id = $1",
                id,
                format!("{error:#}"),
            )
            .execute(pool)
            .await?;
            Err(error)
        }
    }
}

/// The destination as recorded: no credentials, no query.
fn redacted(url: &url::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_password(None);
    let _ = url.set_username("");
    url.set_query(None);
    url.to_string()
}

async fn store(settings: &Settings) -> anyhow::Result<Report> {
    let backup = &settings.backup;
    let location = Location::open(&backup.destination, settings.storage.s3.as_ref())
        .await
        .context("opening the backup destination")?;
    let now = Utc::now();
    let suffix = if backup.encryption_key.is_some() {
        SEALED_SUFFIX
    } else {
        PLAIN_SUFFIX
    };
    let key = location.key(&format!(
        "{NAME_PREFIX}{}{suffix}",
        now.format("%Y%m%dT%H%M%S%.3fZ")
    ));

    let mut dump = pg_dump(settings)?;
    let mut stdout = dump.stdout.take().context("pg_dump has no stdout")?;
    let stderr = dump.stderr.take().context("pg_dump has no stderr")?;
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.take(64 * 1024).read_to_string(&mut text).await;
        text
    });
    let mut upload = Hashing::new(BufWriter::new(location.store.clone(), key.clone()));
    let copied = match &backup.encryption_key {
        Some(encryption_key) => crypto::seal_stream(encryption_key, &mut stdout, &mut upload)
            .await
            .map_err(anyhow::Error::from),
        None => tokio::io::copy(&mut stdout, &mut upload)
            .await
            .map_err(anyhow::Error::from),
    };
    let status = dump.wait().await.context("waiting for pg_dump")?;
    let stderr = stderr.await.unwrap_or_default();
    let dump_bytes = match copied {
        Ok(bytes) if status.success() => bytes,
        copied => {
            let _ = upload.inner.abort().await;
            if let Err(error) = copied {
                return Err(error.context(format!("storing the backup at {key}")));
            }
            bail!("pg_dump failed ({status}): {}", stderr.trim());
        }
    };
    upload
        .shutdown()
        .await
        .with_context(|| format!("completing the upload of {key}"))?;
    tracing::info!(backup.key = %key, backup.dump_bytes = dump_bytes, "database backup stored");
    metrics::gauge!("zoark_backup_last_success_timestamp_seconds").set(now.timestamp() as f64);
    metrics::gauge!("zoark_backup_size_bytes").set(dump_bytes as f64);

    let deleted = prune(&location, now, backup.retention).await?;
    Ok(Report {
        key,
        dump_bytes,
        stored_bytes: upload.bytes,
        sha256: upload.hasher.finalize().into(),
        deleted,
    })
}

/// An [`AsyncWrite`] that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W> Hashing<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Hashing<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, buf))?;
        self.hasher.update(&buf[..written]);
        self.bytes += written as u64;
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Starts pg_dump in custom format (compressed, restorable table by table with pg_restore). The
/// password travels in `PGPASSWORD`, never on the command line where `ps` would show it.
fn pg_dump(settings: &Settings) -> anyhow::Result<tokio::process::Child> {
    let mut url = url::Url::parse(settings.database.url.expose_secret())
        .context("DATABASE_URL is not a URL")?;
    let password = url.password().map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .into_owned()
    });
    let _ = url.set_password(None);
    let mut command = Command::new(&settings.backup.pg_dump);
    command
        // Row-level security: dump every organization's rows (a platform connection), and let
        // pg_dump read tables whose policies apply to it instead of refusing them.
        .env("PGOPTIONS", "-c zoark.rls=bypass")
        .args([
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            "--enable-row-security",
            "--dbname",
        ])
        .arg(url.as_str())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command
        .spawn()
        .with_context(|| format!("starting `{}` (ZOARK_PG_DUMP)", settings.backup.pg_dump))
}

/// Deletes the backups at `location` last modified before `now - retention`.
async fn prune(
    location: &Location,
    now: DateTime<Utc>,
    retention: Duration,
) -> anyhow::Result<usize> {
    let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    let prefix = (location.prefix != Path::default()).then_some(&location.prefix);
    let expired: Vec<Path> = location
        .store
        .list(prefix)
        .try_filter_map(|meta| async move {
            let name = meta.location.filename().unwrap_or_default();
            let is_backup = name.starts_with(NAME_PREFIX)
                && (name.ends_with(PLAIN_SUFFIX) || name.ends_with(SEALED_SUFFIX));
            Ok((is_backup && meta.last_modified < cutoff).then_some(meta.location))
        })
        .try_collect()
        .await
        .context("listing old backups")?;
    for key in &expired {
        location
            .store
            .delete(key)
            .await
            .with_context(|| format!("deleting the expired backup {key}"))?;
        tracing::info!(backup.key = %key, "expired backup deleted");
    }
    Ok(expired.len())
}

/// Opens a sealed backup file into `output` (standard output when `None`), for `pg_restore`.
/// A partially written output file is removed when the backup turns out damaged.
///
/// # Errors
/// The file cannot be read or written, or it is damaged, truncated or sealed under another key.
pub async fn open_sealed(
    key: &zoark_core::settings::EncryptionKey,
    input: &std::path::Path,
    output: Option<&std::path::Path>,
) -> anyhow::Result<u64> {
    let reader = tokio::io::BufReader::new(
        tokio::fs::File::open(input)
            .await
            .with_context(|| format!("opening {}", input.display()))?,
    );
    match output {
        None => {
            let mut stdout = tokio::io::stdout();
            let bytes = crypto::open_stream(key, reader, &mut stdout).await?;
            stdout.flush().await?;
            Ok(bytes)
        }
        Some(path) => {
            let mut file = tokio::io::BufWriter::new(
                tokio::fs::File::create(path)
                    .await
                    .with_context(|| format!("creating {}", path.display()))?,
            );
            let opened = async {
                let bytes = crypto::open_stream(key, reader, &mut file).await?;
                file.flush().await?;
                anyhow::Ok(bytes)
            }
            .await;
            if opened.is_err() {
                let _ = tokio::fs::remove_file(path).await;
            }
            opened
        }
    }
}
