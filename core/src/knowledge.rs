//! Document search's vocabulary: where an indexed document's text comes from, how far its
//! indexing has got, and who may find which source's text.

use serde::{Deserialize, Serialize};

use crate::access::{Permission as _, ReadDocuments, ReadInvoices, ReadKnowledge, Role};

/// Where an indexed document comes from: the knowledge base's own uploads, a team member's
/// document or an invoice's PDF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum SourceType {
    Knowledge,
    TeamDocument,
    Invoice,
}

impl SourceType {
    pub const ALL: [Self; 3] = [Self::Knowledge, Self::TeamDocument, Self::Invoice];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Knowledge => "knowledge",
            Self::TeamDocument => "team_document",
            Self::Invoice => "invoice",
        }
    }

    /// Whether `role` may read this source's text, and so find it by searching: the permission
    /// that reads the source itself.
    pub fn readable_by(self, role: Role) -> bool {
        role.includes(match self {
            Self::Knowledge => ReadKnowledge::MIN_ROLE,
            Self::TeamDocument => ReadDocuments::MIN_ROLE,
            Self::Invoice => ReadInvoices::MIN_ROLE,
        })
    }
}

/// `pending` (waiting for its job) → `indexing` → `indexed`, or `failed` with the reason. A
/// re-index goes through them again; searches see the last indexed text meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
pub enum IndexStatus {
    Pending,
    Indexing,
    Indexed,
    Failed,
}

impl IndexStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Indexing => "indexing",
            Self::Indexed => "indexed",
            Self::Failed => "failed",
        }
    }
}

/// A question's answer from the documents (`POST /api/v1/ask`): the question answerer's run
/// output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub answer: String,
    /// The answer's claims, each with the passages that support it (a claim the LLM cited
    /// nothing found for is left out).
    pub claims: Vec<Claim>,
}

/// One claim of an [`Answer`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub text: String,
    pub sources: Vec<Cited>,
}

/// A passage a claim rests on: its document and where in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cited {
    pub document_id: uuid::Uuid,
    pub source_type: SourceType,
    pub title: String,
    pub chunk_ordinal: i32,
    pub page: Option<i32>,
    pub heading: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_finds_knowledge_and_team_documents_but_no_invoice_text() {
        assert!(SourceType::Knowledge.readable_by(Role::Viewer));
        assert!(SourceType::TeamDocument.readable_by(Role::Viewer));
        assert!(!SourceType::Invoice.readable_by(Role::Viewer));
        assert!(SourceType::Invoice.readable_by(Role::Member));
    }
}
