//! Where embeddings come from: the local model (the default: no network, no key) or any
//! OpenAI-compatible `/embeddings` API (async-openai, with the base URL, key, model and dimension
//! from configuration). Both answer [`Embedder::embed`] with the vectors and the tokens used.
//!
//! The HTTP provider does not retry by itself: a 429 is [`EmbedError::RateLimited`] with the
//! server's `Retry-After` (the caller snoozes), a 5xx, a timeout or a connection error is
//! [`EmbedError::Unavailable`] (the caller retries with backoff), any other refusal is
//! [`EmbedError::Rejected`] (a wrong key, an unknown model: retrying will not help).

use std::{path::PathBuf, sync::Arc, time::Duration};

use async_openai::{
    Client,
    config::OpenAIConfig,
    types::embeddings::{CreateEmbeddingRequestArgs, EmbeddingInput},
};
use zoark_llm::provider::{self, Endpoint, ProviderError};

use crate::{DIMENSION, MODEL, ModelError};

/// Vectors, in the order of the texts, and the tokens the provider counted for them.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the embedding provider is rate limiting (429): {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("the embedding provider is unavailable: {0}")]
    Unavailable(String),
    #[error("the embedding provider refused the request: {0}")]
    Rejected(String),
    #[error("the embedding provider answered something unusable: {0}")]
    Invalid(String),
}

/// What the provider's configuration says (from `ZOARK_EMBEDDING_*`).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub dimensions: usize,
    pub timeout: Duration,
}

/// The embeddings of this process.
#[derive(Clone)]
pub enum Embedder {
    /// all-MiniLM-L6-v2 from this directory, loaded on first use ([`crate::shared`]).
    Local { dir: PathBuf },
    /// An OpenAI-compatible API.
    Http(Arc<HttpEmbedder>),
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { dir } => f.debug_struct("Local").field("dir", dir).finish(),
            Self::Http(h) => f
                .debug_struct("Http")
                .field("base_url", &h.config.base_url)
                .field("model", &h.config.model)
                .finish_non_exhaustive(),
        }
    }
}

pub struct HttpEmbedder {
    client: Client<OpenAIConfig>,
    config: HttpConfig,
}

impl Embedder {
    /// The OpenAI-compatible provider of `config`, through `http` (rustls, no proxy surprises).
    pub fn http(config: HttpConfig, http: reqwest::Client) -> Self {
        let endpoint = Endpoint {
            base_url: config.base_url.clone(),
            api_key: config.api_key.clone(),
            timeout: config.timeout,
        };
        let client = provider::client(&endpoint, http);
        Self::Http(Arc::new(HttpEmbedder { client, config }))
    }

    /// The provider the settings name: the local model of `model_dir`, or the OpenAI-compatible
    /// API of `ZOARK_EMBEDDING_*`.
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn from_settings(
        settings: &zoark_core::settings::EmbeddingSettings,
    ) -> Result<Self, reqwest::Error> {
        use secrecy::ExposeSecret as _;
        use zoark_core::settings::EmbeddingProvider;
        Ok(match settings.kind {
            EmbeddingProvider::Local => Self::Local {
                dir: settings.model_dir.clone(),
            },
            EmbeddingProvider::OpenAi => {
                let http = reqwest::Client::builder()
                    .timeout(settings.timeout)
                    .user_agent(concat!("Zoark/", env!("CARGO_PKG_VERSION")))
                    .build()?;
                Self::http(
                    HttpConfig {
                        base_url: settings.provider.base_url.to_string(),
                        api_key: settings
                            .provider
                            .api_key
                            .as_ref()
                            .map(|k| k.expose_secret().to_owned()),
                        model: settings.provider.model.clone(),
                        dimensions: usize::try_from(settings.dimensions).unwrap_or(usize::MAX),
                        timeout: settings.timeout,
                    },
                    http,
                )
            }
        })
    }

    /// The model name recorded with every vector.
    pub fn model(&self) -> &str {
        match self {
            Self::Local { .. } => MODEL,
            Self::Http(h) => &h.config.model,
        }
    }

    /// The length of its vectors.
    pub fn dimensions(&self) -> usize {
        match self {
            Self::Local { .. } => DIMENSION,
            Self::Http(h) => h.config.dimensions,
        }
    }

    /// One vector per text, in order.
    ///
    /// # Errors
    /// [`EmbedError`]: what went wrong, and so whether to wait, retry or give up.
    pub async fn embed(&self, texts: Vec<String>) -> Result<Embedded, EmbedError> {
        if texts.is_empty() {
            return Ok(Embedded {
                vectors: Vec::new(),
                tokens: 0,
            });
        }
        match self {
            Self::Local { dir } => {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    let model = crate::shared(&dir)?;
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    let (vectors, tokens) = model.embed_counted(&refs)?;
                    Ok(Embedded { vectors, tokens })
                })
                .await
                .map_err(|e| EmbedError::Unavailable(format!("the embedding task failed: {e}")))?
            }
            Self::Http(h) => h.embed(texts).await,
        }
    }
}

impl HttpEmbedder {
    async fn embed(&self, texts: Vec<String>) -> Result<Embedded, EmbedError> {
        let count = texts.len();
        let request = CreateEmbeddingRequestArgs::default()
            .model(self.config.model.clone())
            .input(EmbeddingInput::StringArray(texts))
            .build()
            .map_err(|e| EmbedError::Rejected(e.to_string()))?;
        let embeddings = self.client.embeddings();
        let response = provider::call(self.config.timeout, embeddings.create(request)).await?;
        let mut data = response.data;
        if data.len() != count {
            return Err(EmbedError::Invalid(format!(
                "{} vectors for {count} texts",
                data.len()
            )));
        }
        data.sort_by_key(|e| e.index);
        let vectors: Vec<Vec<f32>> = data.into_iter().map(|e| e.embedding).collect();
        if let Some(v) = vectors.iter().find(|v| v.len() != self.config.dimensions) {
            return Err(EmbedError::Invalid(format!(
                "vectors of {} dimensions where ZOARK_EMBEDDING_DIMENSIONS says {}",
                v.len(),
                self.config.dimensions
            )));
        }
        Ok(Embedded {
            vectors,
            tokens: u64::from(response.usage.total_tokens),
        })
    }
}

impl From<ProviderError> for EmbedError {
    fn from(error: ProviderError) -> Self {
        match error {
            ProviderError::RateLimited {
                retry_after,
                message,
            } => Self::RateLimited {
                retry_after,
                message,
            },
            ProviderError::Unavailable(m) => Self::Unavailable(m),
            ProviderError::Rejected(m) => Self::Rejected(m),
            ProviderError::Invalid(m) => Self::Invalid(m),
        }
    }
}
