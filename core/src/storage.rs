//! Object storage behind one interface (`object_store`): a local directory (`file:///path/`) or
//! an S3-compatible bucket (`s3://bucket/prefix`, with the `ZOARK_S3_*` endpoint, region and keys).

use std::sync::Arc;

use object_store::{
    ObjectStore, ObjectStoreExt as _, aws::AmazonS3Builder, local::LocalFileSystem, path::Path,
};
use secrecy::ExposeSecret;
use url::Url;

use crate::settings::{S3Settings, StorageSettings};

/// A place to put objects: the store and the prefix every key of this use lives under.
#[derive(Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: Path,
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Location")
            .field("store", &self.store.to_string())
            .field("prefix", &self.prefix)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("`{0}` is neither a file:// nor an s3:// URL")]
    Scheme(Url),
    #[error("`{0}` names no bucket")]
    NoBucket(Url),
    #[error("an s3:// destination needs ZOARK_S3_ACCESS_KEY_ID and ZOARK_S3_SECRET_ACCESS_KEY")]
    NoCredentials,
    #[error("cannot create the directory {path}: {source}")]
    Directory {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] object_store::Error),
    #[error("reading the file to store: {0}")]
    Read(#[from] std::io::Error),
}

impl Location {
    /// Opens the location a `file://` or `s3://` URL names. A local directory is created if it
    /// does not exist.
    ///
    /// # Errors
    /// An unsupported scheme, a missing bucket or credentials, or a directory that cannot be
    /// created.
    pub async fn open(url: &Url, s3: Option<&S3Settings>) -> Result<Self, StorageError> {
        if url.scheme() == "file" {
            let dir = url.path();
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| StorageError::Directory {
                    path: dir.to_owned(),
                    source,
                })?;
        }
        Self::build(url, s3)
    }

    /// [`Self::open`] for a local directory that exists.
    fn build(url: &Url, s3: Option<&S3Settings>) -> Result<Self, StorageError> {
        match url.scheme() {
            "file" => Ok(Self {
                store: Arc::new(LocalFileSystem::new_with_prefix(url.path())?),
                prefix: Path::default(),
            }),
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| StorageError::NoBucket(url.clone()))?;
                let s3 = s3.ok_or(StorageError::NoCredentials)?;
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(s3.access_key_id.expose_secret())
                    .with_secret_access_key(s3.secret_access_key.expose_secret());
                // AWS itself: let object_store derive the regional endpoint. Anything else
                // (MinIO, R2, a test server) is addressed path-style at the configured endpoint.
                if s3.endpoint.host_str() != Some("s3.amazonaws.com") {
                    builder = builder
                        .with_endpoint(s3.endpoint.as_str().trim_end_matches('/'))
                        .with_allow_http(s3.endpoint.scheme() == "http");
                }
                Ok(Self {
                    store: Arc::new(builder.build()?),
                    prefix: Path::from(url.path().trim_matches('/')),
                })
            }
            _ => Err(StorageError::Scheme(url.clone())),
        }
    }

    /// The full key of `name` under this location's prefix.
    pub fn key(&self, name: &str) -> Path {
        self.prefix.clone().join(name)
    }
}

/// Uploaded files (team documents, invoice PDFs): under `uploads/` of the S3 bucket when
/// `ZOARK_S3_BUCKET` is set, otherwise in `ZOARK_STORAGE_DIR` (created if missing). Synchronous:
/// it runs once, when a process starts.
///
/// # Errors
/// As [`Location::open`].
pub fn uploads(settings: &StorageSettings) -> Result<Location, StorageError> {
    let directory = |source: std::io::Error| StorageError::Directory {
        path: settings.local_dir.clone(),
        source,
    };
    let url = match &settings.s3 {
        Some(s3) => Url::parse(&format!("s3://{}/uploads", s3.bucket))
            .map_err(|_| StorageError::NoBucket(s3.endpoint.clone()))?,
        None => {
            std::fs::create_dir_all(&settings.local_dir).map_err(directory)?;
            let dir = std::path::absolute(&settings.local_dir).map_err(directory)?;
            Url::from_directory_path(&dir)
                .map_err(|()| directory(std::io::Error::other("not an absolute path")))?
        }
    };
    Location::build(&url, settings.s3.as_ref())
}

impl Location {
    /// The full key of a multi-segment `name` (`a/b/c`) under this location's prefix.
    pub fn full_key(&self, name: &str) -> String {
        if self.prefix.as_ref().is_empty() {
            name.to_owned()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// Stores `bytes` under the full `key`.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn put(&self, key: &str, bytes: bytes::Bytes) -> Result<(), StorageError> {
        self.store.put(&Path::from(key), bytes.into()).await?;
        Ok(())
    }

    /// Stores the file at `path` under the full `key`, streamed: one `PUT` when it fits in
    /// 8 MiB, an S3 multipart upload of 8 MiB parts beyond; the file is never held whole in
    /// memory. A failed upload is aborted.
    ///
    /// # Errors
    /// Storage errors, or reading the file.
    pub async fn put_file(&self, key: &str, path: &std::path::Path) -> Result<(), StorageError> {
        use tokio::io::AsyncWriteExt as _;
        /// Buffered before a part goes out (S3 parts are 5 MiB at least, the last one aside).
        const PART: usize = 8 * 1024 * 1024;
        let mut writer = object_store::buffered::BufWriter::with_capacity(
            self.store.clone(),
            Path::from(key),
            PART,
        );
        let written = async {
            let mut file = tokio::fs::File::open(path).await?;
            tokio::io::copy(&mut file, &mut writer).await?;
            writer.shutdown().await
        }
        .await;
        if let Err(e) = written {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(error = %abort, "aborting a failed upload failed");
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// The object under the full `key`.
    ///
    /// # Errors
    /// Storage errors, `object_store::Error::NotFound` among them.
    pub async fn get(&self, key: &str) -> Result<bytes::Bytes, StorageError> {
        Ok(self.store.get(&Path::from(key)).await?.bytes().await?)
    }

    /// Deletes the object under the full `key`; an object that is already gone is not an error,
    /// so a retried delete succeeds.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
