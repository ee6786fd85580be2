-- Document search, built: what a document's text comes from, the progress of its indexing, the
-- generation of chunks searches see (a re-index writes a new generation and switches to it in one
-- transaction), the model of every vector, citations, and keywords stemmed in the document's
-- language. Nothing wrote these tables before, so no row needs converting.

-- Sources: the knowledge base's own uploads, team members' documents and invoice PDFs, each
-- named by a foreign key of its own, so that deleting the source deletes its index.
ALTER TABLE rag_documents DROP CONSTRAINT rag_documents_source_type_check;
DROP INDEX rag_documents_source_idx;
ALTER TABLE rag_documents
    DROP COLUMN source_id,
    DROP COLUMN source_url,
    ADD CONSTRAINT rag_documents_source_type_check
        CHECK (source_type IN ('knowledge', 'team_document', 'invoice')),
    ADD COLUMN team_document_id uuid REFERENCES team_documents (id) ON DELETE CASCADE,
    ADD COLUMN invoice_id uuid,
    ADD FOREIGN KEY (organization_id, invoice_id) REFERENCES invoices (organization_id, id) ON DELETE CASCADE,
    -- The file indexed (a team document's or invoice's own file for those sources).
    ADD COLUMN file_id uuid NOT NULL,
    ADD FOREIGN KEY (organization_id, file_id) REFERENCES stored_files (organization_id, id) ON DELETE CASCADE,
    ADD CHECK ((source_type = 'team_document') = (team_document_id IS NOT NULL)),
    ADD CHECK ((source_type = 'invoice') = (invoice_id IS NOT NULL)),
    -- Keyword search stems with this text search configuration.
    ADD COLUMN language regconfig NOT NULL DEFAULT 'english',
    ADD COLUMN chunks_done integer NOT NULL DEFAULT 0 CHECK (chunks_done >= 0),
    ADD COLUMN chunks_total integer CHECK (chunks_total >= 0),
    -- The generation of chunks that searches see; 0 before the first index.
    ADD COLUMN generation integer NOT NULL DEFAULT 0 CHECK (generation >= 0),
    ADD COLUMN embedding_dimensions integer CHECK (embedding_dimensions > 0),
    -- Tokens the embedding provider counted, every index of the document together (usage).
    ADD COLUMN embedding_tokens bigint NOT NULL DEFAULT 0 CHECK (embedding_tokens >= 0),
    ALTER COLUMN content_sha256 SET NOT NULL;
COMMENT ON COLUMN rag_documents.generation IS
    'The chunks searches see: a re-index writes generation + 1 in batches and switches in one transaction.';
-- The same bytes uploaded again are the same knowledge document.
CREATE UNIQUE INDEX rag_documents_knowledge_sha_key ON rag_documents (organization_id, content_sha256)
    WHERE source_type = 'knowledge';
CREATE UNIQUE INDEX rag_documents_team_document_key ON rag_documents (team_document_id);
CREATE UNIQUE INDEX rag_documents_invoice_key ON rag_documents (organization_id, invoice_id);
CREATE INDEX rag_documents_file_idx ON rag_documents (organization_id, file_id);

ALTER TABLE rag_chunks DROP CONSTRAINT rag_chunks_organization_id_document_id_ordinal_key;
DROP INDEX rag_chunks_tsv_idx;
ALTER TABLE rag_chunks
    DROP COLUMN content_tsv,
    ADD COLUMN generation integer NOT NULL CHECK (generation > 0),
    ADD COLUMN embedding_model text NOT NULL CHECK (length(embedding_model) BETWEEN 1 AND 200),
    ADD COLUMN page integer CHECK (page > 0),
    ADD COLUMN heading text CHECK (length(heading) <= 1000),
    ADD COLUMN language regconfig NOT NULL,
    ADD UNIQUE (organization_id, document_id, generation, ordinal);
ALTER TABLE rag_chunks
    ADD COLUMN content_tsv tsvector GENERATED ALWAYS AS (to_tsvector(language, content)) STORED;
CREATE INDEX rag_chunks_tsv_idx ON rag_chunks USING gin (content_tsv);
-- A re-index removes the generation it replaces.
CREATE INDEX rag_chunks_document_idx ON rag_chunks (document_id, generation);
DROP INDEX rag_chunks_org_idx;
