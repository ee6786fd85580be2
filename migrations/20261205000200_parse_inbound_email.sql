-- Inbound email for the email parser (its kind and agents: `20261205000100`), the built-in
-- agent that turns inbound emails (posted raw to `/api/v1/inbound-email/{token}`) into a task or
-- an invoice draft, with the attachments in the knowledge base. Each organization has at most one inbound token, stored as its SHA-256 (the
-- token is shown once, when it is made); the messages are kept raw for the run that parses them.

CREATE TABLE inbound_email_tokens (
    organization_id uuid PRIMARY KEY REFERENCES organizations (id) ON DELETE CASCADE,
    token_sha256    bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    -- Whoever made the token: the parser acts as them (with their role at run time).
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE inbound_email_tokens IS 'Each organization''s secret inbound email address token, hashed.';
CREATE INDEX inbound_email_tokens_created_by_idx ON inbound_email_tokens (created_by);
ALTER TABLE inbound_email_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbound_email_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inbound_email_tokens
    USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()));

CREATE TABLE inbound_emails (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    message_id      text CHECK (length(message_id) <= 1000),
    sender          text CHECK (length(sender) <= 1000),
    subject         text CHECK (length(subject) <= 2000),
    raw             bytea NOT NULL,
    -- The email parser's run (none once pruned).
    run_id          uuid,
    received_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id)
);
COMMENT ON TABLE inbound_emails IS 'Raw inbound messages, each parsed by a run of the email parser; one per Message-ID.';
CREATE UNIQUE INDEX inbound_emails_message_key ON inbound_emails (organization_id, message_id)
    WHERE message_id IS NOT NULL;
CREATE INDEX inbound_emails_received_idx ON inbound_emails (received_at);
ALTER TABLE inbound_emails ENABLE ROW LEVEL SECURITY;
ALTER TABLE inbound_emails FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON inbound_emails
    USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()));
