//! `GET /api/v1/search`: hybrid search over the documents the caller may read — the knowledge
//! base, team members' documents and (for members and up) invoice PDFs.

use poem::web::Data;
use poem_openapi::{Enum, Object, OpenApi, param::Query, payload::Json};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zoark_core::{
    access::ReadKnowledge,
    db::knowledge::{self, Hit, Language, MARK_END, MARK_START, SearchQuery},
    db::tenant,
    knowledge::SourceType,
};

use crate::{
    auth::BearerAuth,
    error::{ApiError, FieldError},
    params::{Timestamp, instant},
    routes::ApiTags,
    state::AppState,
};

pub struct SearchApi;

/// Where a found document comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum, Serialize, Deserialize)]
#[oai(rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
pub enum SearchSource {
    /// The knowledge base (`/api/v1/knowledge`).
    Knowledge,
    /// A team member's document (`/api/v1/documents/{id}`).
    TeamDocument,
    /// An invoice's PDF (`/api/v1/invoices/{id}`; found by members and up).
    Invoice,
}

impl From<SearchSource> for SourceType {
    fn from(s: SearchSource) -> Self {
        match s {
            SearchSource::Knowledge => Self::Knowledge,
            SearchSource::TeamDocument => Self::TeamDocument,
            SearchSource::Invoice => Self::Invoice,
        }
    }
}

impl From<SourceType> for SearchSource {
    fn from(s: SourceType) -> Self {
        match s {
            SourceType::Knowledge => Self::Knowledge,
            SourceType::TeamDocument => Self::TeamDocument,
            SourceType::Invoice => Self::Invoice,
        }
    }
}

/// Where in its document a result's passage is.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct Citation {
    /// The chunk's place in the document, from 0.
    pub chunk_ordinal: i32,
    /// The page (PDF), from 1.
    pub page: Option<i32>,
    /// The heading the passage is under.
    pub heading: Option<String>,
}

/// One passage found.
#[derive(Debug, Object, Serialize, Deserialize)]
pub struct SearchResult {
    /// The document: a knowledge base document, team document or invoice as `source_type` says
    /// (for a team document or an invoice, the id of the indexed copy; `title` names it).
    pub document_id: Uuid,
    pub source_type: SearchSource,
    pub title: String,
    /// The best passage, HTML-escaped, with the matched terms in `<mark>` … `</mark>`.
    pub snippet: String,
    /// Reciprocal rank fusion of the keyword and the semantic ranking: higher is better.
    pub score: f64,
    pub citation: Citation,
}

#[derive(Debug, Object, Serialize, Deserialize)]
pub struct SearchResults {
    /// Best first.
    pub items: Vec<SearchResult>,
}

/// The most characters of a query.
const MAX_QUERY_CHARS: usize = 1000;

fn invalid(field: &str, message: &str) -> ApiError {
    ApiError::InvalidParameter(FieldError {
        field: field.into(),
        message: message.into(),
    })
}

/// A query's (or a question's) text, trimmed: 1 to 1,000 characters.
pub(crate) fn query_text(field: &str, raw: &str) -> Result<String, ApiError> {
    let text = raw.trim();
    if text.is_empty() || text.chars().count() > MAX_QUERY_CHARS {
        return Err(invalid(field, "must be 1 to 1,000 characters"));
    }
    Ok(text.to_owned())
}

/// The text search configuration named `language` (English when none).
pub(crate) fn language_of(language: Option<&str>) -> Result<Language, ApiError> {
    match language {
        None => Ok(Language::ENGLISH),
        Some(l) => Language::parse(l).ok_or_else(|| {
            invalid(
                "language",
                &format!("must be one of {}", knowledge::LANGUAGES.join(", ")),
            )
        }),
    }
}

/// HTML-escapes a snippet and turns the database's match markers into `<mark>` elements.
fn snippet_html(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 32);
    for c in raw.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            MARK_START => out.push_str("<mark>"),
            MARK_END => out.push_str("</mark>"),
            c => out.push(c),
        }
    }
    out
}

/// [`ApiError`]'s answers and 503 when the query cannot be embedded.
#[derive(Debug)]
pub struct SearchError(pub ApiError);

impl<E: Into<ApiError>> From<E> for SearchError {
    fn from(e: E) -> Self {
        Self(e.into())
    }
}

impl From<SearchError> for poem::Error {
    fn from(e: SearchError) -> Self {
        e.0.into()
    }
}

impl poem_openapi::ApiResponse for SearchError {
    fn meta() -> poem_openapi::registry::MetaResponses {
        crate::error::meta_with(&[(
            503,
            "`embedding_unavailable`: the embedding model cannot be loaded, or the embedding \
             provider does not answer.",
        )])
    }

    fn register(registry: &mut poem_openapi::registry::Registry) {
        ApiError::register(registry);
    }
}

impl From<Hit> for SearchResult {
    fn from(h: Hit) -> Self {
        Self {
            document_id: h.document_id,
            source_type: h.source_type.into(),
            title: h.title,
            snippet: snippet_html(&h.snippet),
            score: h.score,
            citation: Citation {
                chunk_ordinal: h.chunk_ordinal,
                page: h.page,
                heading: h.heading,
            },
        }
    }
}

#[OpenApi(tag = "ApiTags::Search")]
impl SearchApi {
    /// Search documents
    ///
    /// Hybrid ranking: Postgres full-text search (stemmed in `language`, English by default)
    /// and semantic similarity of the query's embedding, fused by reciprocal rank. Finds only
    /// what the caller may read: knowledge base documents and team documents for everyone,
    /// invoice text only with `invoices.read` (members and up). Needs `knowledge.read`
    /// (viewer). 503 `embedding_unavailable` when the query cannot be embedded (the model
    /// cannot be loaded, or the embedding provider does not answer).
    #[oai(path = "/api/v1/search", method = "get", operation_id = "search")]
    #[allow(clippy::too_many_arguments)]
    async fn search(
        &self,
        auth: BearerAuth,
        state: Data<&AppState>,
        /// What to look for: words, a phrase in quotes, `-word` to exclude; 1 to 1,000
        /// characters.
        q: Query<String>,
        /// Only this source.
        source_type: Query<Option<SearchSource>>,
        /// Documents created at or after (RFC 3339).
        from: Query<Option<Timestamp>>,
        /// Documents created before (RFC 3339).
        to: Query<Option<Timestamp>>,
        /// Results, 1 to 50 (default 10).
        limit: Query<Option<i64>>,
        /// The text search configuration of the query's keywords (default `english`).
        language: Query<Option<String>>,
    ) -> Result<Json<SearchResults>, SearchError> {
        let granted = auth.grant::<ReadKnowledge>(&state).await?;
        let text = query_text("q", &q.0)?;
        let limit = limit.0.unwrap_or(10);
        if !(1..=50).contains(&limit) {
            return Err(SearchError(invalid("limit", "must be between 1 and 50")));
        }
        let language = language_of(language.0.as_deref())?;
        let role = granted.role();
        let sources: Vec<SourceType> = SourceType::ALL
            .into_iter()
            .filter(|s| s.readable_by(role))
            .filter(|s| {
                source_type
                    .0
                    .is_none_or(|wanted| SourceType::from(wanted) == *s)
            })
            .collect();
        if sources.is_empty() {
            return Ok(Json(SearchResults { items: Vec::new() }));
        }
        let vector = state
            .embedder
            .embed(vec![text.clone()])
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "a search query could not be embedded");
                ApiError::Unavailable {
                    code: "embedding_unavailable",
                    detail: "The embedding model or provider is not available; retry later.".into(),
                }
            })?
            .vectors
            .pop()
            .unwrap_or_default();
        let query = SearchQuery {
            text: &text,
            vector,
            model: state.embedder.model(),
            sources,
            from: instant(from.0),
            to: instant(to.0),
            language,
            limit,
        };
        let mut tx = tenant::begin(&state.pool, &granted).await?;
        let hits = knowledge::search(&mut tx, &granted, &query).await?;
        tx.commit().await?;
        Ok(Json(SearchResults {
            items: hits.into_iter().map(SearchResult::from).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snippet_is_escaped_and_its_matches_marked() {
        assert_eq!(
            snippet_html("a <b> & \u{E000}term\u{E001}"),
            "a &lt;b&gt; &amp; <mark>term</mark>"
        );
    }
}
