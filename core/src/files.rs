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
    let mut sniffer = Sniffer::default();
    sniffer.feed(bytes);
    sniffer.file_type(filename, || json_parses(bytes))
}

/// Whether `bytes` (after a UTF-8 byte order mark) are one JSON value.
fn json_parses(bytes: &[u8]) -> bool {
    serde_json::from_slice::<serde::de::IgnoredAny>(bytes.strip_prefix(BOM).unwrap_or(bytes))
        .is_ok()
}

const BOM: &[u8] = b"\xEF\xBB\xBF";
/// How many leading bytes decide a binary type.
pub const HEAD_BYTES: usize = 64 * 1024;
/// Tags that make text a page a browser would run (matched case-insensitively anywhere).
const MARKUP: [&[u8]; 5] = [b"<!doctype html", b"<html", b"<script", b"<svg", b"<iframe"];
/// The longest of [`MARKUP`], less one: what a chunk keeps for a tag cut across chunks.
const MARKUP_OVERLAP: usize = 13;

/// [`sniff`] over a file that arrives in chunks, holding only its first [`HEAD_BYTES`] and a
/// few bytes of state: uploads stream to storage instead of being held whole in memory.
#[derive(Debug, Default)]
pub struct Sniffer {
    head: Vec<u8>,
    size: u64,
    invalid_utf8: bool,
    /// An incomplete UTF-8 sequence at the end of the last chunk.
    pending: Vec<u8>,
    nul: bool,
    markup: bool,
    /// The last bytes seen, lower-cased, for a tag cut across chunks.
    window: Vec<u8>,
}

impl Sniffer {
    /// Takes the next chunk of the file.
    pub fn feed(&mut self, chunk: &[u8]) {
        let room = HEAD_BYTES.saturating_sub(self.head.len());
        self.head
            .extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
        self.size += chunk.len() as u64;
        if !self.invalid_utf8 {
            let mut bytes = std::mem::take(&mut self.pending);
            bytes.extend_from_slice(chunk);
            if let Err(e) = std::str::from_utf8(&bytes) {
                match e.error_len() {
                    Some(_) => self.invalid_utf8 = true,
                    None => {
                        self.pending = bytes.get(e.valid_up_to()..).unwrap_or_default().to_vec();
                    }
                }
            }
        }
        self.nul |= chunk.contains(&0);
        if !self.markup {
            let mut scan = std::mem::take(&mut self.window);
            scan.extend(chunk.iter().map(u8::to_ascii_lowercase));
            self.markup = MARKUP
                .iter()
                .any(|tag| scan.windows(tag.len()).any(|w| w == *tag));
            let keep = scan.len().saturating_sub(MARKUP_OVERLAP);
            self.window = scan.split_off(keep);
        }
    }

    /// Bytes fed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether every byte so far was UTF-8 text without NUL.
    fn is_text(&self) -> bool {
        !self.invalid_utf8 && self.pending.is_empty() && !self.nul
    }

    /// The allow-listed type of the whole file; `json_parses` is asked (once, at most) whether
    /// the file is one JSON value when its name says `.json` and it is text.
    ///
    /// # Errors
    /// [`Unsupported`] for anything off the allow-list.
    pub fn file_type(
        &self,
        filename: &str,
        json_parses: impl FnOnce() -> bool,
    ) -> Result<FileType, Unsupported> {
        const OLE: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
        let head = self.head.as_slice();
        // Stricter than readers that look anywhere in the first KiB: the header comes first.
        if head.starts_with(b"%PDF-") {
            return Ok(FileType::Pdf);
        }
        if head.starts_with(&OLE) {
            return if infer::doc::is_doc(head) {
                Ok(FileType::Doc)
            } else if infer::doc::is_xls(head) {
                Ok(FileType::Xls)
            } else {
                Err(Unsupported(
                    "an OLE compound file that is neither a Word nor an Excel document",
                ))
            };
        }
        if infer::archive::is_zip(head) {
            return Ok(if infer::doc::is_docx(head) {
                FileType::Docx
            } else if infer::doc::is_xlsx(head) {
                FileType::Xlsx
            } else {
                FileType::Zip
            });
        }
        if self.invalid_utf8 || !self.pending.is_empty() {
            return Err(Unsupported("not PDF, Word, Excel, ZIP or UTF-8 text"));
        }
        if self.nul {
            return Err(Unsupported("text must not contain NUL characters"));
        }
        if self.markup {
            return Err(Unsupported("HTML and SVG are not accepted"));
        }
        let extension = extension(filename);
        Ok(match extension.as_str() {
            "csv" => FileType::Csv,
            "json" if json_parses() => FileType::Json,
            "xml"
                if String::from_utf8_lossy(head.strip_prefix(BOM).unwrap_or(head))
                    .trim_start()
                    .starts_with('<') =>
            {
                FileType::Xml
            }
            _ => FileType::Text,
        })
    }

    /// The file's type if `accept` takes it (see [`sniff_accepted`]).
    ///
    /// # Errors
    /// [`Unsupported`] for anything `accept` does not take.
    pub fn accepted(
        &self,
        filename: &str,
        accept: Accept,
        json_parses: impl FnOnce() -> bool,
    ) -> Result<FileType, Unsupported> {
        self.accepted_as(self.file_type(filename, json_parses), filename, accept)
    }

    /// [`Sniffer::accepted`], given what [`Sniffer::file_type`] found.
    ///
    /// # Errors
    /// [`Unsupported`] for anything `accept` does not take.
    pub fn accepted_as(
        &self,
        found: Result<FileType, Unsupported>,
        filename: &str,
        accept: Accept,
    ) -> Result<FileType, Unsupported> {
        const DOCUMENTS: &str =
            "the knowledge base indexes PDF, DOCX, HTML, Markdown, plain text, CSV and JSON";
        match accept {
            Accept::Uploads => found,
            Accept::Only(only) => match found? {
                found if found == only => Ok(found),
                _ => Err(Unsupported("the file is not of the one accepted type")),
            },
            Accept::Documents => match found {
                Ok(FileType::Text) if matches!(extension(filename).as_str(), "md" | "markdown") => {
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
                // HTML is read for its text only and served back as an attachment.
                Err(_) if self.is_text() && self.markup => Ok(FileType::Html),
                Err(refused) => Err(refused),
            },
        }
    }
}

fn extension(filename: &str) -> String {
    filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
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
    let mut sniffer = Sniffer::default();
    sniffer.feed(bytes);
    sniffer.accepted(filename, accept, || json_parses(bytes))
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
    fn a_file_fed_in_chunks_of_any_size_sniffs_as_it_does_whole() {
        let page = format!("{}<ScRiPt>x</script>", "a".repeat(100_000));
        let text = "héllo wörld ✓ ".repeat(20_000);
        let cases: [(&[u8], &str); 6] = [
            (text.as_bytes(), "notes.txt"),
            (page.as_bytes(), "notes.txt"),
            (b"a,b\n\x00", "data.csv"),
            (b"%PDF-1.7\n...", "x.pdf"),
            ("{\"a\": \"\u{e9}\"}".as_bytes(), "x.json"),
            (&[0xe2, 0x9c], "cut.txt"),
        ];
        for (bytes, name) in cases {
            let whole = sniff(bytes, name);
            let html = sniff_accepted(bytes, name, Accept::Documents);
            for size in [1, 2, 3, 7, 4096] {
                let mut sniffer = Sniffer::default();
                for chunk in bytes.chunks(size) {
                    sniffer.feed(chunk);
                }
                assert_eq!(sniffer.size(), bytes.len() as u64);
                assert_eq!(
                    sniffer.file_type(name, || json_parses(bytes)),
                    whole,
                    "{name}/{size}"
                );
                assert_eq!(
                    sniffer.accepted(name, Accept::Documents, || json_parses(bytes)),
                    html,
                    "{name}/{size}"
                );
            }
        }
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
