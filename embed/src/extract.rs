//! Text out of an uploaded document, as [`Section`]s (page, heading, text) for chunking.
//!
//! Formats: plain text, Markdown (ATX headings), HTML (`scraper`; `h1`–`h6` start sections,
//! scripts and styles skipped), PDF (the text layer, page by page, with `pdf-extract`), DOCX (the
//! WordprocessingML in the zip, `Heading N` and `Title` paragraphs start sections), CSV (each row
//! as `column: value` lines) and JSON (each value as `path: value`). A file that cannot be read,
//! an encrypted PDF, a PDF with no text layer (a scan: there is no OCR) and a file with no text
//! at all are [`ExtractError`]s with a reason a person can act on; a malformed file never panics
//! the caller (the PDF reader's panics are caught).

use std::io::Read as _;

use crate::chunk::Section;

/// The formats text can be extracted from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Markdown,
    Html,
    Pdf,
    Docx,
    Csv,
    Json,
}

impl Format {
    /// The format of a stored media type (parameters such as `charset` ignored).
    pub fn from_mime(mime: &str) -> Option<Self> {
        let essence = mime.split(';').next().unwrap_or_default().trim();
        Some(match essence {
            "text/plain" => Self::Text,
            "text/markdown" => Self::Markdown,
            "text/html" => Self::Html,
            "application/pdf" => Self::Pdf,
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => Self::Docx,
            "text/csv" => Self::Csv,
            "application/json" => Self::Json,
            _ => return None,
        })
    }
}

/// Why a document yields no text to index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    #[error("the PDF is encrypted and cannot be read without its password")]
    Encrypted,
    #[error(
        "the PDF has no text layer (a scanned document?); text recognition (OCR) is not supported"
    )]
    NoTextLayer,
    #[error("the file holds no text to index")]
    Empty,
    #[error("the file cannot be read as {format}: {reason}")]
    Unreadable {
        format: &'static str,
        reason: String,
    },
}

fn unreadable(format: &'static str, reason: impl ToString) -> ExtractError {
    ExtractError::Unreadable {
        format,
        reason: reason.to_string(),
    }
}

/// The sections of `bytes` read as `format`, in document order, none empty.
///
/// # Errors
/// [`ExtractError`]: unreadable, encrypted, without a text layer, or empty.
pub fn extract(format: Format, bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    let sections = match format {
        Format::Text => {
            let mut out = Sections::default();
            out.text(utf8(bytes, "text")?);
            out.finish()
        }
        Format::Markdown => markdown(utf8(bytes, "Markdown")?),
        Format::Html => html(utf8(bytes, "HTML")?),
        Format::Pdf => pdf(bytes)?,
        Format::Docx => docx(bytes)?,
        Format::Csv => csv_rows(bytes)?,
        Format::Json => json(bytes)?,
    };
    if sections.is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(sections)
}

fn utf8<'a>(bytes: &'a [u8], format: &'static str) -> Result<&'a str, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| unreadable(format, e))
}

/// Collects paragraphs into sections: a heading starts a new one, as does a new page.
#[derive(Default)]
struct Sections {
    done: Vec<Section>,
    page: Option<u32>,
    heading: Option<String>,
    text: String,
}

impl Sections {
    fn flush(&mut self) {
        let text = std::mem::take(&mut self.text);
        let text = text.trim();
        if !text.is_empty() {
            self.done.push(Section {
                page: self.page,
                heading: self.heading.clone(),
                text: text.to_owned(),
            });
        }
    }

    fn heading(&mut self, heading: &str) {
        let heading = collapse(heading);
        if heading.is_empty() {
            return;
        }
        self.flush();
        self.heading = Some(heading);
    }

    fn page(&mut self, page: u32) {
        self.flush();
        self.page = Some(page);
    }

    /// Appends a paragraph (or any run of text; blank lines separate paragraphs).
    fn text(&mut self, text: &str) {
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        if !self.text.is_empty() {
            self.text.push_str("\n\n");
        }
        self.text.push_str(text);
    }

    fn finish(mut self) -> Vec<Section> {
        self.flush();
        self.done
    }
}

/// Whitespace runs as one space, trimmed.
fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn markdown(text: &str) -> Vec<Section> {
    let mut out = Sections::default();
    let mut paragraph = String::new();
    let mut fenced = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            fenced = !fenced;
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        let is_heading =
            !fenced && (1..=6).contains(&level) && trimmed[level..].starts_with([' ', '\t']);
        if is_heading {
            out.text(&std::mem::take(&mut paragraph));
            out.heading(trimmed[level..].trim().trim_end_matches('#'));
        } else if trimmed.is_empty() && !fenced {
            out.text(&std::mem::take(&mut paragraph));
        } else {
            paragraph.push_str(line);
            paragraph.push('\n');
        }
    }
    out.text(&paragraph);
    out.finish()
}

fn html(text: &str) -> Vec<Section> {
    use scraper::{Html, Node};

    fn walk(node: ego_tree::NodeRef<'_, Node>, out: &mut Sections, line: &mut String) {
        match node.value() {
            Node::Text(t) => line.push_str(t),
            Node::Element(e) => {
                let name = e.name();
                match name {
                    "script" | "style" | "noscript" | "template" | "head" => {}
                    "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                        out.text(&std::mem::take(line));
                        let mut heading = String::new();
                        for child in node.children() {
                            walk(child, &mut Sections::default(), &mut heading);
                        }
                        out.heading(&heading);
                    }
                    "br" => line.push('\n'),
                    _ => {
                        let block = matches!(
                            name,
                            "p" | "div"
                                | "li"
                                | "tr"
                                | "td"
                                | "th"
                                | "section"
                                | "article"
                                | "blockquote"
                                | "pre"
                                | "table"
                                | "ul"
                                | "ol"
                                | "dd"
                                | "dt"
                                | "main"
                                | "header"
                                | "footer"
                                | "body"
                        );
                        if block {
                            out.text(&collapse(&std::mem::take(line)));
                        } else {
                            line.push(' ');
                        }
                        for child in node.children() {
                            walk(child, out, line);
                        }
                        if block {
                            out.text(&collapse(&std::mem::take(line)));
                        } else {
                            line.push(' ');
                        }
                    }
                }
            }
            Node::Document | Node::Fragment => {
                for child in node.children() {
                    walk(child, out, line);
                }
            }
            _ => {}
        }
    }

    let document = Html::parse_document(text);
    let mut out = Sections::default();
    let mut line = String::new();
    walk(document.tree.root(), &mut out, &mut line);
    out.text(&collapse(&line));
    out.finish()
}

fn pdf(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    use pdf_extract::{Error as PdfError, OutputError};

    // The reader panics on some malformed files: that is an unreadable file, not a crash.
    let pages = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem_by_pages(bytes))
        .map_err(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("the reader failed");
            unreadable("PDF", reason)
        })?
        .map_err(|e| match e {
            OutputError::PdfError(
                PdfError::Decryption(_)
                | PdfError::InvalidPassword
                | PdfError::UnsupportedSecurityHandler(_),
            ) => ExtractError::Encrypted,
            other => unreadable("PDF", other),
        })?;
    if pages.is_empty() {
        return Err(unreadable("PDF", "it has no pages"));
    }
    let mut out = Sections::default();
    for (number, text) in (1u32..).zip(&pages) {
        out.page(number);
        for paragraph in text.split("\n\n") {
            out.text(&collapse(paragraph));
        }
    }
    let sections = out.finish();
    if sections.is_empty() {
        return Err(ExtractError::NoTextLayer);
    }
    Ok(sections)
}

fn docx(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    use quick_xml::{Reader, events::Event};

    let bad = |e: &dyn std::fmt::Display| unreadable("DOCX", e);
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(&e))?;
    let mut xml = String::new();
    archive
        .by_name("word/document.xml")
        .map_err(|e| bad(&format!("word/document.xml: {e}")))?
        // A bound on what one entry may inflate to (a zip bomb stops here).
        .take(256 * 1024 * 1024)
        .read_to_string(&mut xml)
        .map_err(|e| bad(&e))?;

    let mut reader = Reader::from_str(&xml);
    let mut out = Sections::default();
    let mut paragraph = String::new();
    let mut style: Option<String> = None;
    let mut in_text = false;
    loop {
        match reader.read_event().map_err(|e| bad(&e))? {
            Event::Start(e) if e.local_name().as_ref() == b"p" => {
                paragraph.clear();
                style = None;
            }
            Event::Start(e) if e.local_name().as_ref() == b"t" => in_text = true,
            Event::End(e) if e.local_name().as_ref() == b"t" => in_text = false,
            Event::Empty(e) | Event::Start(e) => match e.local_name().as_ref() {
                b"pStyle" => {
                    style = e
                        .attributes()
                        .flatten()
                        .find(|a| a.key.local_name().as_ref() == b"val")
                        .and_then(|a| a.normalized_value(quick_xml::XmlVersion::Implicit1_0).ok())
                        .map(|v| v.into_owned());
                }
                b"tab" => paragraph.push('\t'),
                b"br" | b"cr" => paragraph.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => paragraph.push_str(&t.decode().map_err(|e| bad(&e))?),
            Event::GeneralRef(r) if in_text => {
                if let Some(c) = r.resolve_char_ref().map_err(|e| bad(&e))? {
                    paragraph.push(c);
                } else if let Some(s) =
                    quick_xml::escape::resolve_predefined_entity(&r.decode().map_err(|e| bad(&e))?)
                {
                    paragraph.push_str(s);
                }
            }
            Event::End(e) if e.local_name().as_ref() == b"p" => {
                let is_heading = style.as_deref().is_some_and(|s| {
                    let s = s.to_ascii_lowercase();
                    s.starts_with("heading") || s == "title"
                });
                if is_heading {
                    out.heading(&paragraph);
                } else {
                    out.text(&paragraph);
                }
                paragraph.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out.finish())
}

fn csv_rows(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(bytes);
    let headers = reader.headers().map_err(|e| unreadable("CSV", e))?.clone();
    let mut out = Sections::default();
    for row in reader.records() {
        let row = row.map_err(|e| unreadable("CSV", e))?;
        let lines: Vec<String> = row
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(
                |(i, v)| match headers.get(i).filter(|h| !h.trim().is_empty()) {
                    Some(h) => format!("{}: {}", h.trim(), v.trim()),
                    None => v.trim().to_owned(),
                },
            )
            .collect();
        out.text(&lines.join("\n"));
    }
    Ok(out.finish())
}

fn json(bytes: &[u8]) -> Result<Vec<Section>, ExtractError> {
    fn walk(path: &str, value: &serde_json::Value, lines: &mut Vec<String>) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let path = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(&path, v, lines);
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), v, lines);
                }
            }
            Value::Null => {}
            Value::String(s) if path.is_empty() => lines.push(s.clone()),
            Value::String(s) => lines.push(format!("{path}: {s}")),
            other if path.is_empty() => lines.push(other.to_string()),
            other => lines.push(format!("{path}: {other}")),
        }
    }
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| unreadable("JSON", e))?;
    let mut lines = Vec::new();
    walk("", &value, &mut lines);
    let mut out = Sections::default();
    out.text(&lines.join("\n"));
    Ok(out.finish())
}
