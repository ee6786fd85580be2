//! The local model against vectors sentence-transformers computed for the same texts
//! (`fixtures/minilm_reference.json`, made by `fixtures/reference.py`).

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zoark_embed::{DIMENSION, LocalModel, ModelError};

#[derive(Deserialize)]
struct Fixture {
    max_seq_length: usize,
    sentences: Vec<Sentence>,
}

#[derive(Deserialize)]
struct Sentence {
    text: String,
    vector: Vec<f32>,
}

/// The provisioned model (`cargo xtask test` provisions it; `ZOARK_EMBED_MODEL_DIR` overrides).
fn model_dir() -> PathBuf {
    std::env::var_os("ZOARK_EMBED_MODEL_DIR").map_or_else(
        || zoark_embed::default_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()),
        PathBuf::from,
    )
}

fn fixture() -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/minilm_reference.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn the_local_model_gives_the_reference_vectors() {
    let model = LocalModel::load(&model_dir()).unwrap_or_else(|e| panic!("{e}"));
    let fixture = fixture();
    assert_eq!(fixture.max_seq_length, zoark_embed::MAX_TOKENS);
    let texts: Vec<&str> = fixture.sentences.iter().map(|s| s.text.as_str()).collect();
    // As a batch (padded to the longest) and one by one: the same vectors.
    let batch = model.embed(&texts).unwrap();
    assert_eq!(batch.len(), texts.len());
    for (sentence, vector) in fixture.sentences.iter().zip(&batch) {
        assert_eq!(vector.len(), DIMENSION);
        let single = model.embed(&[sentence.text.as_str()]).unwrap().remove(0);
        for (how, v) in [("batched", vector), ("alone", &single)] {
            let similarity = cosine(v, &sentence.vector);
            let start: String = sentence.text.chars().take(40).collect();
            println!("{how}: cosine {similarity:.6} for {start:?}");
            assert!(
                similarity >= 0.999,
                "{how}: cosine {similarity} with the reference for {:?}",
                sentence.text
            );
        }
        let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "normalised: {norm}");
    }
    // Different texts are told apart, related ones are close.
    let pair = model
        .embed(&[
            "The invoice is due next week.",
            "Payment for the bill is expected in seven days.",
            "A cat sat on the warm windowsill.",
        ])
        .unwrap();
    assert!(cosine(&pair[0], &pair[1]) > cosine(&pair[0], &pair[2]) + 0.2);
}

#[test]
fn a_missing_or_altered_model_file_is_a_clear_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("zoark-embed-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, _) in zoark_embed::FILES {
        std::fs::copy(model_dir().join(name), dir.join(name)).unwrap();
    }
    let original = std::fs::read(dir.join("tokenizer.json")).unwrap();
    let mut tokenizer = original.clone();
    tokenizer.push(b' ');
    std::fs::write(dir.join("tokenizer.json"), tokenizer).unwrap();
    let altered = LocalModel::load(&dir).unwrap_err();
    assert!(matches!(altered, ModelError::Corrupted { .. }), "{altered}");
    assert!(altered.to_string().contains("tokenizer.json"), "{altered}");
    std::fs::write(dir.join("tokenizer.json"), original).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let missing = LocalModel::load(&dir).unwrap_err();
    assert!(matches!(missing, ModelError::Missing { .. }), "{missing}");
    assert!(
        missing.to_string().contains("model.safetensors"),
        "{missing}"
    );
    assert!(
        missing.to_string().contains("cargo xtask models"),
        "{missing}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
