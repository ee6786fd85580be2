//! Uploaded files: what their bytes are, judged by sniffing the bytes (never the filename's
//! extension or the client's `Content-Type`), their safe filename, and their object key.
//!
//! The allow-list: PDF, Word and Excel 97–2003 (OLE compound files), Word and Excel OOXML,
//! other ZIP archives, and text (valid UTF-8 without NUL) — served as plain text, CSV, JSON or
//! XML. Anything that looks like HTML or SVG is refused even when it is text: a browser could run
//! its scripts.

use rand::RngExt as _;
use uuid::Uuid;

/// A file type of the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileType {
    Pdf,
    Doc,
    Xls,
    Docx,
    Xlsx,
    Zip,
    Text,
    Csv,
    Json,
    Xml,
    /// Only where a page is never served from the upload (the knowledge base, which indexes it).
    Html,
    Markdown,
}

impl FileType {
    /// The media type stored and served.
    pub fn mime(self) -> &'static str {
        match self {
            Self::Pdf => "application/pdf",
            Self::Doc => "application/msword",
            Self::Xls => "application/vnd.ms-excel",
            Self::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
            Self::Xlsx => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            Self::Zip => "application/zip",
            Self::Text => "text/plain; charset=utf-8",
            Self::Csv => "text/csv; charset=utf-8",
            Self::Json => "application/json",
            Self::Xml => "application/xml",
            Self::Html => "text/html; charset=utf-8",
            Self::Markdown => "text/markdown; charset=utf-8",
        }
    }
}

/// Why the bytes are not on the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub &'static str);

/// The allow-listed type of `bytes`. `filename` only chooses among text types (a `.csv` that is
/// text is served as CSV); it never makes bytes acceptable.
///
/// # Errors
/// [`Unsupported`] for anything off the allow-list.
pub fn sniff(bytes: &[u8], filename: &str) -> Result<FileType, Unsupported> {
    const OLE: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    // Stricter than readers that look anywhere in the first KiB: the header comes first.
    if bytes.starts_with(b"%PDF-") {
        return Ok(FileType::Pdf);
    }
    if bytes.starts_with(&OLE) {
        return if infer::doc::is_doc(bytes) {
            Ok(FileType::Doc)
        } else if infer::doc::is_xls(bytes) {
            Ok(FileType::Xls)
        } else {
            Err(Unsupported(
                "an OLE compound file that is neither a Word nor an Excel document",
            ))
        };
    }
    if infer::archive::is_zip(bytes) {
        return Ok(if infer::doc::is_docx(bytes) {
            FileType::Docx
        } else if infer::doc::is_xlsx(bytes) {
            FileType::Xlsx
        } else {
            FileType::Zip
        });
    }
    let text = std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes))
        .map_err(|_| Unsupported("not PDF, Word, Excel, ZIP or UTF-8 text"))?;
    if text.contains('\0') {
        return Err(Unsupported("text must not contain NUL characters"));
    }
    if looks_like_markup(text) {
        return Err(Unsupported("HTML and SVG are not accepted"));
    }
    let extension = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    Ok(match extension.as_str() {
        "csv" => FileType::Csv,
        "json" if serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok() => FileType::Json,
        "xml" if text.trim_start().starts_with('<') => FileType::Xml,
        _ => FileType::Text,
    })
}

/// What an upload endpoint accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// The allow-list of [`sniff`].
    Uploads,
    /// One type of it.
    Only(FileType),
    /// Documents whose text can be indexed: PDF, DOCX, HTML, Markdown, text, CSV and JSON. HTML
    /// is accepted here because the file is only read for its text and served back as an
    /// attachment, never as a page.
    Documents,
}

/// The type of `bytes` if `accept` takes it.
///
/// # Errors
/// [`Unsupported`] for anything `accept` does not take.
pub fn sniff_accepted(
    bytes: &[u8],
    filename: &str,
    accept: Accept,
) -> Result<FileType, Unsupported> {
    const DOCUMENTS: &str =
        "the knowledge base indexes PDF, DOCX, HTML, Markdown, plain text, CSV and JSON";
    let extension = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match accept {
        Accept::Uploads => sniff(bytes, filename),
        Accept::Only(only) => {
            let found = sniff(bytes, filename)?;
            if found == only {
                Ok(found)
            } else {
                Err(Unsupported("the file is not of the one accepted type"))
            }
        }
        Accept::Documents => match sniff(bytes, filename) {
            Ok(FileType::Text) if matches!(extension.as_str(), "md" | "markdown") => {
                Ok(FileType::Markdown)
            }
            Ok(
                found @ (FileType::Pdf
                | FileType::Docx
                | FileType::Text
                | FileType::Csv
                | FileType::Json),
            ) => Ok(found),
            Ok(_) => Err(Unsupported(DOCUMENTS)),
            Err(refused) => {
                let text =
                    std::str::from_utf8(bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes));
                match text {
                    Ok(text) if !text.contains('\0') && looks_like_markup(text) => {
                        Ok(FileType::Html)
                    }
                    _ => Err(refused),
                }
            }
        },
    }
}

fn looks_like_markup(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    ["<!doctype html", "<html", "<script", "<svg", "<iframe"]
        .iter()
        .any(|tag| lower.contains(tag))
}

/// The filename an upload is stored and downloaded under: the last path component, without
/// control characters or quotes, at most 255 characters (the extension kept), never empty.
pub fn safe_filename(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '"' | '\u{2028}' | '\u{2029}'))
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    if cleaned.is_empty() {
        return "file".to_owned();
    }
    if cleaned.chars().count() <= 255 {
        return cleaned.to_owned();
    }
    let (stem, extension) = match cleaned.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.chars().count() <= 16 => (stem, ext),
        _ => (cleaned, ""),
    };
    let keep = 255 - extension.chars().count() - usize::from(!extension.is_empty());
    let mut out: String = stem.chars().take(keep).collect();
    if !extension.is_empty() {
        out.push('.');
        out.push_str(extension);
    }
    out
}

/// A new, unguessable object key under the organization's folder: 128 random bits, so knowing
/// one key says nothing about another.
pub fn new_object_name(organization_id: Uuid) -> String {
    let mut random = [0u8; 16];
    rand::rng().fill(&mut random[..]);
    format!(
        "organizations/{organization_id}/files/{}",
        hex::encode(random)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffing_trusts_the_bytes_not_the_name() {
        assert_eq!(sniff(b"%PDF-1.7\n...", "x.txt"), Ok(FileType::Pdf));
        assert!(sniff(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00", "invoice.pdf").is_err());
        assert!(sniff(b"\x7fELF\x02\x01\x01\x00", "invoice.pdf").is_err());
        assert!(sniff(b"<!DOCTYPE html><p>hi</p>", "invoice.pdf").is_err());
        assert!(sniff(b"hello <script>alert(1)</script>", "notes.txt").is_err());
        assert!(sniff(b"a,b\x00c", "data.csv").is_err());
        assert!(sniff(&[0xff, 0xfe, 0x00, 0x41], "x.txt").is_err());
        assert!(sniff(b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1garbage", "x.doc").is_err());
        assert_eq!(sniff(b"PK\x05\x06\0\0\0\0", "a.zip"), Ok(FileType::Zip));
    }

    #[test]
    fn text_types_come_from_the_extension_only_when_the_text_fits() {
        assert_eq!(sniff(b"a,b\n1,2\n", "data.CSV"), Ok(FileType::Csv));
        assert_eq!(sniff(br#"{"a": 1}"#, "x.json"), Ok(FileType::Json));
        assert_eq!(sniff(b"{not json", "x.json"), Ok(FileType::Text));
        assert_eq!(sniff(b"<a>1</a>", "x.xml"), Ok(FileType::Xml));
        assert_eq!(sniff("héllo".as_bytes(), "x.pdf"), Ok(FileType::Text));
        assert_eq!(sniff(b"\xEF\xBB\xBFhello", "x"), Ok(FileType::Text));
    }

    #[test]
    fn filenames_lose_paths_controls_and_excess_length() {
        assert_eq!(safe_filename("../../etc/passwd"), "passwd");
        assert_eq!(safe_filename(r"C:\Users\a\report.pdf"), "report.pdf");
        assert_eq!(safe_filename("a\r\nb\"c.txt"), "abc.txt");
        assert_eq!(safe_filename("../"), "file");
        assert_eq!(safe_filename(".."), "file");
        let long = format!("{}.pdf", "x".repeat(400));
        let safe = safe_filename(&long);
        assert_eq!(safe.chars().count(), 255);
        assert!(safe.ends_with(".pdf"));
    }

    #[test]
    fn object_names_are_per_organization_and_unguessable() {
        let org = Uuid::now_v7();
        let (a, b) = (new_object_name(org), new_object_name(org));
        assert_ne!(a, b);
        assert!(a.starts_with(&format!("organizations/{org}/files/")));
        assert_eq!(a.rsplit('/').next().map(str::len), Some(32));
    }
}
