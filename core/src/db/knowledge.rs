//! Indexed documents and their chunks (`rag_documents`, `rag_chunks`): the knowledge base's
//! rows for the API, the indexer's steps for the worker, and the hybrid search.
//!
//! A document's chunks are written in generations: an index writes `generation + 1` in batches,
//! then [`finish`] switches the document to it and deletes the one before in one transaction, so
//! a search (which joins on the document's current generation) sees all of the old text or all
//! of the new, never half.

use chrono::{DateTime, Utc};
use pgvector::Vector;
use sqlx::{PgConnection, Row as _};
use uuid::Uuid;

use crate::{
    access::{Granted, ManageKnowledge, ReadKnowledge},
    knowledge::{IndexStatus, SourceType},
};

/// The text search configurations keyword search may stem with (Postgres' own).
pub const LANGUAGES: [&str; 23] = [
    "simple",
    "arabic",
    "danish",
    "dutch",
    "english",
    "finnish",
    "french",
    "german",
    "greek",
    "hungarian",
    "indonesian",
    "irish",
    "italian",
    "lithuanian",
    "nepali",
    "norwegian",
    "portuguese",
    "romanian",
    "russian",
    "spanish",
    "swedish",
    "tamil",
    "turkish",
];

/// A text search configuration of [`LANGUAGES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Language(&'static str);

impl Language {
    pub const ENGLISH: Self = Self("english");

    /// The language named `name` (case-insensitive), if keyword search knows it.
    pub fn parse(name: &str) -> Option<Self> {
        LANGUAGES
            .iter()
            .find(|l| l.eq_ignore_ascii_case(name.trim()))
            .map(|l| Self(l))
    }

    pub fn as_str(self) -> &'static str {
        self.0
    }
}

/// An indexed document as the knowledge API shows it.
#[derive(Debug, Clone)]
pub struct Document {
    pub id: Uuid,
    pub title: String,
    pub source_type: SourceType,
    pub file_id: Uuid,
    pub filename: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub sha256: Vec<u8>,
    pub storage_key: String,
    pub language: String,
    pub status: IndexStatus,
    pub error: Option<String>,
    pub chunks_done: i32,
    pub chunks_total: Option<i32>,
    pub embedding_model: Option<String>,
    /// Tokens the embedding provider counted for this document, all indexes together.
    pub embedding_tokens: i64,
    pub indexed_at: Option<DateTime<Utc>>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a document's text comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Knowledge,
    TeamDocument(Uuid),
    Invoice(Uuid),
}

impl Source {
    pub fn source_type(self) -> SourceType {
        match self {
            Self::Knowledge => SourceType::Knowledge,
            Self::TeamDocument(_) => SourceType::TeamDocument,
            Self::Invoice(_) => SourceType::Invoice,
        }
    }
}

/// A document to index: its source and the stored file holding its bytes.
#[derive(Debug, Clone)]
pub struct NewDocument<'a> {
    pub source: Source,
    pub title: &'a str,
    pub file_id: Uuid,
    pub content_type: &'a str,
    pub sha256: &'a [u8],
    pub language: Language,
}

/// Records a document to index as `pending`, or, for an invoice that has one, points it at the
/// new file and makes it `pending` again (its current chunks stay searchable until the re-index
/// replaces them). Returns its id. A knowledge document whose bytes the organization already
/// has violates `rag_documents_knowledge_sha_key`: look for it with [`find_knowledge`] first.
///
/// # Errors
/// Database errors.
pub async fn upsert<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    doc: &NewDocument<'_>,
) -> sqlx::Result<Uuid> {
    let (team_document_id, invoice_id) = match doc.source {
        Source::Knowledge => (None, None),
        Source::TeamDocument(id) => (Some(id), None),
        Source::Invoice(id) => (None, Some(id)),
    };
    sqlx::query_scalar!(
        r#"
        INSERT INTO rag_documents (organization_id, title, source_type, team_document_id,
                                   invoice_id, file_id, content_type, content_sha256, language,
                                   created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::text::regconfig, $10)
        ON CONFLICT (organization_id, invoice_id) DO UPDATE
            SET title = excluded.title, file_id = excluded.file_id,
                content_type = excluded.content_type, content_sha256 = excluded.content_sha256,
                status = 'pending', error = NULL, chunks_done = 0, chunks_total = NULL,
                indexed_at = NULL
        RETURNING id
        "#,
        proof.organization_id(),
        doc.title,
        doc.source.source_type().as_str(),
        team_document_id,
        invoice_id,
        doc.file_id,
        doc.content_type,
        doc.sha256,
        doc.language.as_str(),
        proof.actor().user_id(),
    )
    .fetch_one(conn)
    .await
}

/// The knowledge document holding exactly these bytes, if the organization has one.
///
/// # Errors
/// Database errors.
pub async fn find_knowledge<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    sha256: &[u8],
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar!(
        r#"
        SELECT id FROM rag_documents
        WHERE organization_id = $1 AND source_type = 'knowledge' AND content_sha256 = $2
        "#,
        proof.organization_id(),
        sha256,
    )
    .fetch_optional(conn)
    .await
}

/// One knowledge document of the proof's organization.
///
/// # Errors
/// Database errors.
pub async fn get<P>(
    conn: &mut PgConnection,
    proof: &Granted<P>,
    id: Uuid,
) -> sqlx::Result<Option<Document>> {
    Ok(
        list_where(conn, proof.organization_id(), Some(id), None, None, 1)
            .await?
            .pop(),
    )
}

/// The proof's organization's knowledge documents, newest first, optionally in one status.
///
/// # Errors
/// Database errors.
pub async fn list(
    conn: &mut PgConnection,
    proof: &Granted<ReadKnowledge>,
    status: Option<IndexStatus>,
    before_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Document>> {
    list_where(
        conn,
        proof.organization_id(),
        None,
        status,
        before_id,
        limit,
    )
    .await
}

async fn list_where(
    conn: &mut PgConnection,
    organization_id: Uuid,
    id: Option<Uuid>,
    status: Option<IndexStatus>,
    before_id: Option<Uuid>,
    limit: i64,
) -> sqlx::Result<Vec<Document>> {
    sqlx::query_as!(
        Document,
        r#"
        SELECT d.id, d.title, d.source_type AS "source_type: SourceType", d.file_id, f.filename,
               f.content_type, f.size_bytes, f.sha256, f.storage_key,
               d.language::text AS "language!", d.status AS "status: IndexStatus", d.error,
               d.chunks_done, d.chunks_total, d.embedding_model, d.embedding_tokens,
               d.indexed_at, d.created_by,
               d.created_at, d.updated_at
        FROM rag_documents d
        JOIN stored_files f ON f.organization_id = d.organization_id AND f.id = d.file_id
        WHERE d.organization_id = $1 AND d.source_type = 'knowledge'
          AND ($2::uuid IS NULL OR d.id = $2)
          AND ($3::text IS NULL OR d.status = $3)
          AND ($4::uuid IS NULL OR d.id < $4)
        ORDER BY d.id DESC
        LIMIT $5
        "#,
        organization_id,
        id,
        status.map(IndexStatus::as_str),
        before_id,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Makes a knowledge document `pending` again (a re-index of the same bytes, e.g. after a
/// failure or a change of model). Returns whether it exists.
///
/// # Errors
/// Database errors.
pub async fn reset(
    conn: &mut PgConnection,
    proof: &Granted<ManageKnowledge>,
    id: Uuid,
) -> sqlx::Result<bool> {
    sqlx::query!(
        r#"
        UPDATE rag_documents
        SET status = 'pending', error = NULL, chunks_done = 0, chunks_total = NULL,
            indexed_at = NULL
        WHERE organization_id = $1 AND id = $2 AND source_type = 'knowledge'
        "#,
        proof.organization_id(),
        id,
    )
    .execute(conn)
    .await
    .map(|r| r.rows_affected() > 0)
}

/// Organizations with indexed documents whose vectors come from another model than `model`. A
/// platform query.
///
/// # Errors
/// Database errors.
pub async fn organizations_with_stale_index(
    conn: &mut PgConnection,
    model: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        SELECT DISTINCT organization_id AS "organization_id!" FROM rag_documents
        WHERE status = 'indexed' AND embedding_model IS DISTINCT FROM $1
        "#,
        model,
    )
    .fetch_all(conn)
    .await
}

/// Makes the organization's documents indexed by another model than `model` pending again;
/// returns their ids. A platform query.
///
/// # Errors
/// Database errors.
pub async fn reset_stale(
    conn: &mut PgConnection,
    organization_id: Uuid,
    model: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        UPDATE rag_documents
        SET status = 'pending', error = NULL, chunks_done = 0, chunks_total = NULL,
            indexed_at = NULL
        WHERE organization_id = $1 AND status = 'indexed'
          AND embedding_model IS DISTINCT FROM $2
        RETURNING id
        "#,
        organization_id,
        model,
    )
    .fetch_all(conn)
    .await
}

/// What the indexer needs of a document it starts on.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub source_type: SourceType,
    pub file_id: Uuid,
    pub storage_key: String,
    pub content_type: String,
    pub sha256: Vec<u8>,
    pub language: String,
    /// The generation this index writes (the current one plus one).
    pub generation: i32,
}

/// The organization's documents still `pending` after `stale_minutes` (their indexing job was
/// lost, discarded or never enqueued), oldest first: what the document indexer picks up. A
/// document whose indexing failed stays failed until it is uploaded again.
///
/// # Errors
/// Database errors.
pub async fn unindexed(
    conn: &mut PgConnection,
    organization_id: Uuid,
    stale_minutes: i32,
    limit: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        SELECT id FROM rag_documents
        WHERE organization_id = $1 AND status = 'pending'
          AND updated_at < now() - make_interval(mins => $2)
        ORDER BY updated_at
        LIMIT $3
        "#,
        organization_id,
        stale_minutes,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Starts indexing a document: `indexing`, progress reset, and the chunks of any generation an
/// interrupted earlier attempt left half written removed. `None` when the document is gone. A
/// platform query.
///
/// # Errors
/// Database errors.
pub async fn begin_indexing(conn: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Target>> {
    let target = sqlx::query_as!(
        Target,
        r#"
        UPDATE rag_documents d
        SET status = 'indexing', error = NULL, chunks_done = 0, chunks_total = NULL,
            indexed_at = NULL
        FROM stored_files f
        WHERE d.id = $1 AND f.organization_id = d.organization_id AND f.id = d.file_id
        RETURNING d.id, d.organization_id, d.source_type AS "source_type: SourceType", d.file_id,
                  f.storage_key, d.content_type AS "content_type!", d.content_sha256 AS sha256,
                  d.language::text AS "language!", d.generation + 1 AS "generation!"
        "#,
        id,
    )
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(target) = &target {
        discard_drafts(conn, target.id).await?;
    }
    Ok(target)
}

/// Records how many chunks the document has.
///
/// # Errors
/// Database errors.
pub async fn set_total(conn: &mut PgConnection, id: Uuid, total: i32) -> sqlx::Result<()> {
    sqlx::query!(
        "UPDATE rag_documents SET chunks_total = $2 WHERE id = $1",
        id,
        total,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A chunk with its vector, for [`write_chunks`].
#[derive(Debug, Clone)]
pub struct NewChunk {
    pub ordinal: i32,
    pub content: String,
    pub token_count: i32,
    pub page: Option<i32>,
    pub heading: Option<String>,
    pub embedding: Vec<f32>,
}

/// Writes a batch of the target's chunks in its new generation, as drafts (invisible to searches
/// until [`finish`] moves them), and adds them to its progress, with the provider's `tokens` for
/// them. Returns the chunks done so far.
///
/// # Errors
/// Database errors.
pub async fn write_chunks(
    conn: &mut PgConnection,
    target: &Target,
    model: &str,
    chunks: &[NewChunk],
    tokens: i64,
) -> sqlx::Result<i32> {
    let ordinals: Vec<i32> = chunks.iter().map(|c| c.ordinal).collect();
    let contents: Vec<&str> = chunks.iter().map(|c| c.content.as_str()).collect();
    let token_counts: Vec<i32> = chunks.iter().map(|c| c.token_count).collect();
    let pages: Vec<Option<i32>> = chunks.iter().map(|c| c.page).collect();
    let headings: Vec<Option<&str>> = chunks.iter().map(|c| c.heading.as_deref()).collect();
    let embeddings: Vec<Vector> = chunks
        .iter()
        .map(|c| Vector::from(c.embedding.clone()))
        .collect();
    // Not `query!`: the macros do not know pgvector's type.
    sqlx::query(
        r#"
        WITH written AS (
            INSERT INTO rag_chunk_drafts (organization_id, document_id, generation, ordinal,
                                          content, token_count, page, heading, embedding,
                                          embedding_model, language)
            SELECT $1, $2, $3, c.ordinal, c.content, c.tokens, c.page, c.heading, c.embedding,
                   $4, $5::text::regconfig
            FROM unnest($6::int4[], $7::text[], $8::int4[], $9::int4[], $10::text[], $11::vector[])
                 AS c (ordinal, content, tokens, page, heading, embedding)
            RETURNING 1
        )
        UPDATE rag_documents SET chunks_done = chunks_done + (SELECT count(*) FROM written),
                                 embedding_tokens = embedding_tokens + $12
        WHERE id = $2
        RETURNING chunks_done
        "#,
    )
    .bind(target.organization_id)
    .bind(target.id)
    .bind(target.generation)
    .bind(model)
    .bind(&target.language)
    .bind(&ordinals)
    .bind(&contents)
    .bind(&token_counts)
    .bind(&pages)
    .bind(&headings)
    .bind(&embeddings)
    .bind(tokens)
    .fetch_one(conn)
    .await?
    .try_get(0)
}

/// Switches the document to the generation just written: its drafts replace the chunks of the
/// generation before, in the caller's transaction — unless its bytes changed meanwhile (a new
/// file was attached while it was indexed): then nothing is switched and `false` says to index
/// again.
///
/// # Errors
/// Database errors.
pub async fn finish(
    conn: &mut PgConnection,
    target: &Target,
    model: &str,
    dimensions: i32,
) -> sqlx::Result<bool> {
    let switched = sqlx::query!(
        r#"
        UPDATE rag_documents
        SET generation = $2, status = 'indexed', indexed_at = now(), error = NULL,
            embedding_model = $3, embedding_dimensions = $4
        WHERE id = $1 AND file_id = $5 AND content_sha256 = $6
        "#,
        target.id,
        target.generation,
        model,
        dimensions,
        target.file_id,
        &target.sha256,
    )
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if switched {
        sqlx::query!("DELETE FROM rag_chunks WHERE document_id = $1", target.id)
            .execute(&mut *conn)
            .await?;
        sqlx::query!(
            r#"
            INSERT INTO rag_chunks (organization_id, document_id, generation, ordinal, content,
                                    token_count, page, heading, embedding, embedding_dimensions,
                                    embedding_model, language, source_type, document_created_at)
            SELECT k.organization_id, k.document_id, k.generation, k.ordinal, k.content,
                   k.token_count, k.page, k.heading, k.embedding, vector_dims(k.embedding),
                   k.embedding_model, k.language, d.source_type, d.created_at
            FROM rag_chunk_drafts k
            JOIN rag_documents d ON d.id = k.document_id
            WHERE k.document_id = $1 AND k.generation = $2
            "#,
            target.id,
            target.generation,
        )
        .execute(&mut *conn)
        .await?;
        discard_drafts(conn, target.id).await?;
    }
    Ok(switched)
}

/// Marks the document `failed` with `reason` and removes the drafts this attempt wrote; the
/// chunks searches see stay.
///
/// # Errors
/// Database errors.
pub async fn fail(conn: &mut PgConnection, target: &Target, reason: &str) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        UPDATE rag_documents SET status = 'failed', error = $2, indexed_at = NULL
        WHERE id = $1
        "#,
        target.id,
        reason,
    )
    .execute(&mut *conn)
    .await?;
    discard_drafts(conn, target.id).await
}

/// Deletes every draft chunk of the document (after a switch, a failure, or an interrupted
/// attempt).
async fn discard_drafts(conn: &mut PgConnection, document_id: Uuid) -> sqlx::Result<()> {
    sqlx::query!(
        "DELETE FROM rag_chunk_drafts WHERE document_id = $1",
        document_id
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A search: the text, its vector, and the filters.
#[derive(Debug, Clone)]
pub struct SearchQuery<'a> {
    pub text: &'a str,
    pub vector: Vec<f32>,
    /// The model the vector comes from: only its chunks are compared.
    pub model: &'a str,
    /// The sources the caller may read and asked for.
    pub sources: Vec<SourceType>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub language: Language,
    pub limit: i64,
}

/// One chunk found.
#[derive(Debug, Clone)]
pub struct Hit {
    pub document_id: Uuid,
    pub source_type: SourceType,
    pub title: String,
    /// The chunk's best passage, with the matched terms between [`MARK_START`] and
    /// [`MARK_END`].
    pub snippet: String,
    /// The chunk's whole text (what an answer is grounded on).
    pub content: String,
    pub score: f64,
    pub chunk_ordinal: i32,
    pub page: Option<i32>,
    pub heading: Option<String>,
}

/// Around matched terms in [`Hit::snippet`]: private-use characters no text search config keeps,
/// replaced by the caller's own markup.
pub const MARK_START: char = '\u{E000}';
pub const MARK_END: char = '\u{E001}';

/// How many candidates the vector ranking gives the fusion (at least the limit). Twice the usual
/// ten results: every nearest chunk past the first 20 costs the index scan more for a large
/// organization (the scan keeps walking the graph while the filters drop other organizations'
/// chunks; 50 took twice as long on the benchmark's 40 % organization), and a chunk that far down
/// the vector ranking adds little to a fused score unless the keywords rank it too.
const NEAREST_CANDIDATES: i64 = 20;
/// How many candidates the keyword ranking gives the fusion (at least the limit): ranking costs
/// the same whatever the cut, since every match is ranked.
const KEYWORD_CANDIDATES: i64 = 50;
/// Reciprocal rank fusion's constant (Cormack et al.).
const RRF_K: f64 = 60.0;

/// Hybrid search over the proof's organization's current chunks: the nearest by cosine distance
/// (HNSW, iterative scans so that filters keep their recall) and the best by full-text rank
/// (stemmed in `query.language`), fused by reciprocal rank. Vectors of another model are never
/// compared.
///
/// Three short statements instead of one: the nearest-neighbour one is planned for its own
/// parameters every time (a generic plan, made once for all organizations, walks the HNSW graph
/// for a small organization whose chunks an exact scan reads in a few milliseconds, and took
/// 150 ms), the others keep their cached plans, the fusion is a few lines of Rust, and snippets
/// are made for the returned chunks only.
///
/// # Errors
/// Database errors.
pub async fn search(
    conn: &mut PgConnection,
    proof: &Granted<ReadKnowledge>,
    query: &SearchQuery<'_>,
) -> sqlx::Result<Vec<Hit>> {
    // Let the index keep scanning while filters drop rows. `ef_search` 40 (pgvector's default;
    // the scan goes on until it has the candidates): recall@10 0.99 on the benchmark's 100,000
    // chunks, a third less work than 100.
    sqlx::query(
        "SELECT set_config('hnsw.ef_search', '40', true),
                set_config('hnsw.iterative_scan', 'relaxed_order', true)",
    )
    .execute(&mut *conn)
    .await?;
    let sources: Vec<&str> = query.sources.iter().map(|s| s.as_str()).collect();
    let organization = proof.organization_id();

    // The HNSW index is over `embedding::vector(<dims>)` for the dimensions it covers; the cast
    // in the query must be the same expression for the planner to use it, and the order must be
    // the distance alone (a tie-breaker makes it sort every chunk of the organization). Only
    // current chunks are in `rag_chunks`, with their document's source type and date: one table.
    let dims = query.vector.len();
    // With iterative scans in relaxed order the index returns candidates nearly sorted, and the
    // planner takes them as sorted: they are ordered here, by their exact distance.
    let nearest_sql = format!(
        "SELECT c.id, c.embedding::vector({dims}) <=> $1 AS distance
         FROM rag_chunks c
         WHERE c.organization_id = $2 AND c.embedding_dimensions = {dims}
           AND c.embedding_model = $3 AND c.source_type = ANY($4)
           AND ($5::timestamptz IS NULL OR c.document_created_at >= $5)
           AND ($6::timestamptz IS NULL OR c.document_created_at < $6)
         ORDER BY c.embedding::vector({dims}) <=> $1
         LIMIT $7"
    );
    // Planned for this organization every time: not a prepared statement, which Postgres may
    // switch to a plan made once for all organizations (after five executions), and which for
    // this statement walks the index for a small organization too (150 ms instead of an exact
    // scan's 2). The other statements keep their cached plans: planning them under row-level
    // security cost more than running them.
    // Safe: the only text formatted in is the vector's length, a number.
    let mut nearest: Vec<(Uuid, f64)> = sqlx::query_as(sqlx::AssertSqlSafe(nearest_sql))
        .persistent(false)
        .bind(Vector::from(query.vector.clone()))
        .bind(organization)
        .bind(query.model)
        .bind(&sources)
        .bind(query.from)
        .bind(query.to)
        .bind(NEAREST_CANDIDATES.max(query.limit))
        .fetch_all(&mut *conn)
        .await?;
    nearest.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    let nearest: Vec<Uuid> = nearest.into_iter().map(|(id, _)| id).collect();

    let matched = if query.text.trim().is_empty() {
        Vec::new()
    } else {
        keyword_matches(
            conn,
            organization,
            query,
            &sources,
            KEYWORD_CANDIDATES.max(query.limit),
        )
        .await?
    };

    let fused = reciprocal_rank_fusion(&[&nearest, &matched], query.limit);
    let (ids, scores): (Vec<Uuid>, Vec<f64>) = fused.into_iter().unzip();
    let rows = sqlx::query!(
        r#"SELECT c.document_id, d.source_type AS "source_type: SourceType", d.title,
                  ts_headline(c.language, c.content, websearch_to_tsquery($3::text::regconfig, $4),
                              'StartSel=' || chr(57344) || ', StopSel=' || chr(57345)
                              || ', MaxWords=40, MinWords=15, MaxFragments=2') AS "snippet!",
                  c.content, f.score AS "score!", c.ordinal, c.page, c.heading
           FROM unnest($1::uuid[], $2::float8[]) WITH ORDINALITY AS f (id, score, position)
           JOIN rag_chunks c ON c.id = f.id
           JOIN rag_documents d ON d.id = c.document_id
           ORDER BY f.position"#,
        &ids,
        &scores,
        query.language.as_str(),
        query.text,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Hit {
            document_id: row.document_id,
            source_type: row.source_type,
            title: row.title,
            snippet: row.snippet,
            content: row.content,
            score: row.score,
            chunk_ordinal: row.ordinal,
            page: row.page,
            heading: row.heading,
        })
        .collect())
}

/// The chunks that best match the query's words, at most `candidates`.
///
/// Ranked in `rag_chunk_terms`, outside row-level security, where the match can use its GIN index
/// (see the table's migration), with `ts_rank` (term frequency: half the cost of `ts_rank_cd` per
/// match, and a common question matches thousands). The table holds the terms of current chunks
/// only, with their document's source type and date, so no join is needed: the organization is
/// named here, and the snippet statement reads the chunks it returns under row-level security.
async fn keyword_matches(
    conn: &mut PgConnection,
    organization: Uuid,
    query: &SearchQuery<'_>,
    sources: &[&str],
    candidates: i64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"SELECT t.chunk_id
           FROM rag_chunk_terms t, websearch_to_tsquery($2::text::regconfig, $3) q
           WHERE t.organization_id = $1 AND t.content_tsv @@ q
             AND t.source_type = ANY($4)
             AND ($5::timestamptz IS NULL OR t.document_created_at >= $5)
             AND ($6::timestamptz IS NULL OR t.document_created_at < $6)
           ORDER BY ts_rank(t.content_tsv, q) DESC, t.chunk_id
           LIMIT $7"#,
        organization,
        query.language.as_str(),
        query.text,
        sources as &[&str],
        query.from,
        query.to,
        candidates,
    )
    .fetch_all(conn)
    .await
}

/// Reciprocal rank fusion (Cormack et al.): each id scores `1 / (RRF_K + rank)` in every ranking
/// that has it (ranks from 1); the best `limit`, ties broken by id so that a search is repeatable.
fn reciprocal_rank_fusion(rankings: &[&[Uuid]], limit: i64) -> Vec<(Uuid, f64)> {
    let mut scores: std::collections::HashMap<Uuid, f64> = std::collections::HashMap::new();
    for ranking in rankings {
        for (i, id) in ranking.iter().enumerate() {
            *scores.entry(*id).or_default() += 1.0 / (RRF_K + (i + 1) as f64);
        }
    }
    let mut fused: Vec<(Uuid, f64)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused.truncate(usize::try_from(limit).unwrap_or(0));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_adds_the_reciprocal_ranks_of_both_rankings() {
        let [a, b, c, d] = [1u128, 2, 3, 4].map(Uuid::from_u128);
        // `b` is second in both rankings and beats `a`, first in one of them only.
        let fused = reciprocal_rank_fusion(&[&[a, b, c], &[d, b]], 3);
        let ids: Vec<Uuid> = fused.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [b, a, d]);
        assert!((fused[0].1 - 2.0 / (RRF_K + 2.0)).abs() < 1e-12);
        // Equal scores are ordered by id, so that a search is repeatable.
        assert!((fused[1].1 - fused[2].1).abs() < 1e-12);
        assert!(reciprocal_rank_fusion(&[&[], &[]], 10).is_empty());
        assert!(reciprocal_rank_fusion(&[&[a]], 0).is_empty());
    }
}
