-- Only current chunks are searched, and the nearest-chunk search reads one table.
--
-- The indexer wrote a document's new generation of chunks into `rag_chunks` beside the current
-- one, so every search joined `rag_documents` to keep to the current generation. That join cost
-- the nearest-chunk statement more than its own index scan: planned per call (its plan depends
-- on the organization's size) it took 5.4 ms instead of 3.0 on the benchmark's 40 %
-- organization, where the same statement on `rag_chunks` alone took 2.6.
--
-- New chunks are now written to `rag_chunk_drafts` and move to `rag_chunks` in the transaction
-- that switches the document to them and deletes the generation before, so `rag_chunks` (and
-- `rag_chunk_terms`, written by its trigger) hold only what searches may return. The document's
-- source type and creation time (fixed for its life) are copied onto each chunk, so that the
-- search's filters need no join either.

CREATE TABLE rag_chunk_drafts (
    organization_id uuid NOT NULL,
    document_id     uuid NOT NULL,
    generation      integer NOT NULL CHECK (generation > 0),
    ordinal         integer NOT NULL CHECK (ordinal >= 0),
    content         text NOT NULL CHECK (length(content) BETWEEN 1 AND 100000),
    token_count     integer NOT NULL CHECK (token_count >= 0),
    page            integer CHECK (page > 0),
    heading         text CHECK (length(heading) <= 1000),
    embedding       vector NOT NULL,
    embedding_model text NOT NULL CHECK (length(embedding_model) BETWEEN 1 AND 200),
    language        regconfig NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (document_id, generation, ordinal),
    FOREIGN KEY (organization_id, document_id) REFERENCES rag_documents (organization_id, id)
        ON DELETE CASCADE
);
COMMENT ON TABLE rag_chunk_drafts IS
    'Chunks of a generation being indexed; they move to rag_chunks when their document switches to it.';
CREATE INDEX rag_chunk_drafts_organization_idx ON rag_chunk_drafts (organization_id, document_id);
ALTER TABLE rag_chunk_drafts ENABLE ROW LEVEL SECURITY;
ALTER TABLE rag_chunk_drafts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON rag_chunk_drafts
    USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()));

ALTER TABLE rag_chunks
    ADD COLUMN source_type text,
    ADD COLUMN document_created_at timestamptz;
UPDATE rag_chunks c SET source_type = d.source_type, document_created_at = d.created_at
FROM rag_documents d WHERE d.id = c.document_id;

-- Chunks of a generation being written when this runs become drafts.
WITH moved AS (
    DELETE FROM rag_chunks c USING rag_documents d
    WHERE d.id = c.document_id AND c.generation <> d.generation
    RETURNING c.*
)
INSERT INTO rag_chunk_drafts (organization_id, document_id, generation, ordinal, content,
                              token_count, page, heading, embedding, embedding_model, language,
                              created_at)
SELECT organization_id, document_id, generation, ordinal, content, token_count, page, heading,
       embedding, embedding_model, language, created_at
FROM moved;

ALTER TABLE rag_chunks
    ALTER COLUMN source_type SET NOT NULL,
    ALTER COLUMN document_created_at SET NOT NULL;
COMMENT ON COLUMN rag_chunks.source_type IS 'The document''s source type, copied for the search''s filters.';
COMMENT ON COLUMN rag_chunks.document_created_at IS 'The document''s creation time, copied for the search''s filters.';

CREATE OR REPLACE FUNCTION zoark_write_chunk_terms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO rag_chunk_terms (chunk_id, organization_id, source_type, document_created_at,
                                 content_tsv)
    SELECT w.id, w.organization_id, w.source_type, w.document_created_at,
           to_tsvector(w.language, w.content)
    FROM written w;
    RETURN NULL;
END
$$;
COMMENT ON TABLE rag_chunk_terms IS
    'The full-text terms of each current chunk, ranked outside row-level security; returned only joined to rag_chunks.';
COMMENT ON COLUMN rag_documents.generation IS
    'The generation of chunks in rag_chunks; a re-index writes generation + 1 to rag_chunk_drafts in batches and moves it in one transaction.';
