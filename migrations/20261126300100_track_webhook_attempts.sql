-- Webhooks: every delivery attempt is kept (Stripe shows each one), a delivery names the job
-- that carries it, and plain http:// endpoints become possible where a setting allows them
-- (local receivers in development and tests); the API refuses them otherwise.

ALTER TABLE webhooks DROP CONSTRAINT webhooks_url_check;
ALTER TABLE webhooks ADD CONSTRAINT webhooks_url_check
    CHECK (url ~ '^https?://' AND length(url) <= 2048);

ALTER TABLE webhook_deliveries ADD COLUMN job_id uuid;
COMMENT ON COLUMN webhook_deliveries.job_id IS 'The webhook.deliver job that carries this delivery.';

CREATE TABLE webhook_delivery_attempts (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    delivery_id     uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt         integer NOT NULL CHECK (attempt >= 1),
    response_status smallint,
    response_body_excerpt text CHECK (length(response_body_excerpt) <= 2000),
    error           text CHECK (length(error) <= 2000),
    duration_ms     integer NOT NULL CHECK (duration_ms >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (delivery_id, attempt)
);
COMMENT ON TABLE webhook_delivery_attempts IS 'One row per HTTP attempt of a webhook delivery.';
CREATE INDEX webhook_delivery_attempts_org_idx ON webhook_delivery_attempts (organization_id);

ALTER TABLE webhook_delivery_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_delivery_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_delivery_attempts
    USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()));
