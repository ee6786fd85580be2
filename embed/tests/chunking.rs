//! Chunking by the model's own word pieces.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use zoark_embed::{
    LocalModel, MAX_TOKENS,
    chunk::{Section, chunk},
};

fn model() -> LocalModel {
    let dir = std::env::var_os("ZOARK_EMBED_MODEL_DIR").map_or_else(
        || zoark_embed::default_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()),
        PathBuf::from,
    );
    LocalModel::load(&dir).unwrap_or_else(|e| panic!("{e}"))
}

/// Word pieces of `text` with the special tokens, untruncated.
fn pieces(model: &LocalModel, text: &str) -> usize {
    let mut tokenizer = model.tokenizer().clone();
    tokenizer.with_truncation(None).unwrap();
    tokenizer.encode(text, true).unwrap().len()
}

fn handbook(paragraphs: usize) -> String {
    (0..paragraphs)
        .map(|i| {
            format!(
                "Step {i}: new engineers request access to the deployment pipeline, configure \
                 their laptops with the internationalization toolchain, and meet their mentors."
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn chunks_fit_the_model_keep_their_heading_and_page_and_overlap() {
    let model = model();
    let sections = vec![
        Section {
            page: Some(1),
            heading: Some("Onboarding".into()),
            text: handbook(60),
        },
        Section {
            page: Some(2),
            heading: Some("Security checklist".into()),
            text: "Rotate every key after an incident.".into(),
        },
        Section {
            page: Some(3),
            heading: Some("Empty".into()),
            text: "   ".into(),
        },
    ];
    let chunks = chunk(model.tokenizer(), &sections, MAX_TOKENS, 32).unwrap();
    let first: Vec<_> = chunks.iter().filter(|c| c.page == Some(1)).collect();
    assert!(
        first.len() > 3,
        "60 paragraphs make several chunks: {}",
        first.len()
    );
    for (i, c) in chunks.iter().enumerate() {
        assert_eq!(c.ordinal, i);
        let n = pieces(&model, &c.text);
        assert!(n <= MAX_TOKENS, "chunk {i} has {n} word pieces");
        assert_eq!(
            n, c.tokens,
            "chunk {i}: counted {} pieces, has {n}",
            c.tokens
        );
        let heading = c.heading.as_deref().unwrap();
        assert!(c.text.starts_with(&format!("{heading}\n")), "{:?}", c.text);
        // Never cut inside a word: the body starts and ends at word boundaries of the source.
        let body = &c.text[heading.len() + 1..];
        let source = &sections[usize::try_from(c.page.unwrap()).unwrap() - 1].text;
        let at = source.find(body).unwrap();
        let before = source[..at].chars().last();
        let after = source[at + body.len()..].chars().next();
        assert!(
            before.is_none_or(|ch| !ch.is_alphanumeric()),
            "starts mid-word: {body:.30}"
        );
        assert!(
            after.is_none_or(|ch| !ch.is_alphanumeric()),
            "ends mid-word: …{}",
            &body[body.len().saturating_sub(30)..]
        );
    }
    // Neighbours overlap, and together they hold every word of the section.
    for pair in first.windows(2) {
        let tail: Vec<&str> = pair[0].text.split_whitespace().rev().take(5).collect();
        assert!(
            tail.iter().all(|w| pair[1].text.contains(w)),
            "no overlap: {tail:?}"
        );
    }
    let joined: String = first
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    for word in sections[0].text.split_whitespace() {
        assert!(joined.contains(word), "{word} is in no chunk");
    }
    assert_eq!(chunks.iter().filter(|c| c.page == Some(2)).count(), 1);
    assert!(
        chunks.iter().all(|c| c.page != Some(3)),
        "an empty section makes no chunk"
    );
}

#[test]
fn text_of_many_pieces_per_word_and_of_characters_that_are_words_still_fits() {
    let model = model();
    // Long identifiers (dozens of word pieces each, under WordPiece's 100-character limit) and
    // CJK text (each character a word, three UTF-8 bytes each).
    let identifiers = (0..60)
        .map(|i| format!("x{i}q7zk3w9vb2nm5rt8yp4hj6gf1dc0sa{i}lkj9zx8qw7"))
        .collect::<Vec<_>>()
        .join(" ");
    let cjk = "東京の会議は午前九時に始まり、請求書の承認は金曜日までに終わります。".repeat(30);
    let sections = vec![
        Section {
            page: None,
            heading: None,
            text: format!("start {identifiers} end"),
        },
        Section {
            page: None,
            heading: Some("会議".into()),
            text: cjk.clone(),
        },
    ];
    let chunks = chunk(model.tokenizer(), &sections, MAX_TOKENS, 32).unwrap();
    assert!(chunks.len() > 3, "{} chunks", chunks.len());
    for c in &chunks {
        let n = pieces(&model, &c.text);
        assert!(n <= MAX_TOKENS, "{n} word pieces in {:.40}", c.text);
    }
    let first: Vec<_> = chunks.iter().filter(|c| c.heading.is_none()).collect();
    assert!(first.first().unwrap().text.starts_with("start"));
    assert!(first.last().unwrap().text.ends_with("end"));
    let last = chunks.last().unwrap();
    assert!(
        cjk.ends_with(last.text.trim_start_matches("会議\n")),
        "{:.40}",
        last.text
    );
}
