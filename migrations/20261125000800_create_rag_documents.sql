-- Document search: documents, their chunks with embeddings (pgvector) and keyword vectors.

CREATE TABLE rag_documents (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    title           text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 500),
    source_type     text NOT NULL CHECK (source_type IN ('upload', 'invoice', 'team_document', 'url', 'text')),
    source_id       uuid,
    source_url      text CHECK (source_url ~ '^https?://'),
    content_type    text,
    content_sha256  bytea CHECK (length(content_sha256) = 32),
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'indexing', 'indexed', 'failed')),
    error           text,
    embedding_model text,
    indexed_at      timestamptz,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id),
    CHECK ((status = 'indexed') = (indexed_at IS NOT NULL))
);
COMMENT ON TABLE rag_documents IS 'Documents indexed for semantic and keyword search.';
CREATE INDEX rag_documents_org_idx ON rag_documents (organization_id, created_at DESC, id DESC);
CREATE INDEX rag_documents_status_idx ON rag_documents (organization_id, status);
CREATE INDEX rag_documents_source_idx ON rag_documents (organization_id, source_type, source_id);
CREATE INDEX rag_documents_created_by_idx ON rag_documents (created_by);
CREATE TRIGGER rag_documents_updated_at BEFORE UPDATE ON rag_documents FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE rag_chunks (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    document_id     uuid NOT NULL,
    ordinal         integer NOT NULL CHECK (ordinal >= 0),
    content         text NOT NULL CHECK (length(content) BETWEEN 1 AND 100000),
    token_count     integer NOT NULL CHECK (token_count >= 0),
    -- No fixed dimension: models differ (384 for MiniLM, 1536 for text-embedding-3-small).
    -- Each supported dimension has its own partial HNSW index over a cast expression.
    embedding       vector NOT NULL,
    embedding_dimensions integer NOT NULL CHECK (embedding_dimensions > 0),
    content_tsv     tsvector GENERATED ALWAYS AS (to_tsvector('simple', content)) STORED,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, document_id) REFERENCES rag_documents (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, document_id, ordinal),
    CHECK (vector_dims(embedding) = embedding_dimensions)
);
COMMENT ON TABLE rag_chunks IS 'Chunks of documents with their embeddings.';
CREATE INDEX rag_chunks_embedding_384_idx ON rag_chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE embedding_dimensions = 384;
CREATE INDEX rag_chunks_embedding_1536_idx ON rag_chunks
    USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE embedding_dimensions = 1536;
CREATE INDEX rag_chunks_tsv_idx ON rag_chunks USING gin (content_tsv);
CREATE INDEX rag_chunks_org_idx ON rag_chunks (organization_id);
