//! Cutting a document into chunks the model reads whole: counted in the model's own word pieces,
//! at most `max_tokens` of them per chunk with its special tokens and its heading, overlapping by
//! `overlap` pieces, never inside a word, each carrying its source position (page, heading) for
//! citations.

use tokenizers::Tokenizer;

/// A run of a document's text under one heading (on one page, for paged formats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub page: Option<u32>,
    pub heading: Option<String>,
    pub text: String,
}

/// One chunk: the text embedded and searched (its heading first), and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its place in the document, from 0.
    pub ordinal: usize,
    pub text: String,
    pub page: Option<u32>,
    pub heading: Option<String>,
    /// Word pieces of `text`, special tokens included.
    pub tokens: usize,
}

/// The `[CLS]` and `[SEP]` every chunk is read with.
const SPECIAL_TOKENS: usize = 2;

/// Cuts `sections` into chunks of at most `max_tokens` word pieces (special tokens and heading
/// included) that overlap by about `overlap` pieces. A heading longer than half a chunk is not
/// repeated in its chunks' text (it stays their citation).
///
/// # Errors
/// The tokenizer failed.
pub fn chunk(
    tokenizer: &Tokenizer,
    sections: &[Section],
    max_tokens: usize,
    overlap: usize,
) -> Result<Vec<Chunk>, String> {
    // Whole texts: the model's tokenizer truncates, which counting must not.
    let mut whole = tokenizer.clone();
    whole.with_truncation(None).map_err(|e| e.to_string())?;
    whole.with_padding(None);
    let count = |text: &str| -> Result<usize, String> {
        whole
            .encode(text, false)
            .map(|e| e.len())
            .map_err(|e| e.to_string())
    };
    let mut chunks = Vec::new();
    for section in sections {
        let text = section.text.trim();
        if text.is_empty() {
            continue;
        }
        let mut prefix = match section.heading.as_deref().map(str::trim) {
            Some(h) if !h.is_empty() => Some((format!("{h}\n"), count(h)?)),
            _ => None,
        };
        if prefix
            .as_ref()
            .is_some_and(|(_, n)| *n > max_tokens.saturating_sub(SPECIAL_TOKENS) / 2)
        {
            prefix = None;
        }
        let heading_tokens = prefix.as_ref().map_or(0, |(_, n)| *n);
        let budget = max_tokens
            .saturating_sub(SPECIAL_TOKENS + heading_tokens)
            .max(1);
        let encoding = whole.encode(text, false).map_err(|e| e.to_string())?;
        let offsets = encoding.get_offsets();
        let words = encoding.get_word_ids();
        let n = offsets.len();
        let same_word = |i: usize| i > 0 && i < n && words[i].is_some() && words[i] == words[i - 1];
        let mut start = 0;
        while start < n {
            let mut end = (start + budget).min(n);
            // Back to the start of the word the cut would split (unless the word alone fills it).
            let mut cut = end;
            while cut > start + 1 && same_word(cut) {
                cut -= 1;
            }
            if cut > start + 1 || !same_word(end) {
                end = cut;
            }
            let (from, to) = (offsets[start].0, offsets[end - 1].1);
            let body = text.get(from..to).unwrap_or_default();
            let text = match &prefix {
                Some((heading, _)) => format!("{heading}{body}"),
                None => body.to_owned(),
            };
            chunks.push(Chunk {
                ordinal: chunks.len(),
                tokens: heading_tokens + (end - start) + SPECIAL_TOKENS,
                text,
                page: section.page,
                heading: section.heading.clone(),
            });
            if end == n {
                break;
            }
            // The next chunk starts `overlap` pieces back, at a word's start, and always moves on.
            let mut next = end.saturating_sub(overlap).max(start + 1);
            while next > start + 1 && same_word(next) {
                next -= 1;
            }
            start = next;
        }
    }
    Ok(chunks)
}
