-- Operations: backups, usage records for billing, webhooks and their deliveries.

-- Backups of the whole database are the platform's, not a tenant's: no organization_id.
CREATE TABLE backups (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    kind            text NOT NULL CHECK (kind IN ('scheduled', 'manual')),
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    destination     text NOT NULL,
    storage_key     text,
    size_bytes      bigint CHECK (size_bytes >= 0),
    sha256          bytea CHECK (length(sha256) = 32),
    encrypted       boolean NOT NULL DEFAULT true,
    error           text,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    CHECK ((status = 'running') = (finished_at IS NULL)),
    CHECK (status <> 'succeeded' OR (storage_key IS NOT NULL AND sha256 IS NOT NULL))
);
COMMENT ON TABLE backups IS 'Database backups taken by the platform.';
CREATE INDEX backups_started_idx ON backups (started_at DESC);

CREATE TABLE usage_records (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    metric          text NOT NULL CHECK (metric IN ('emails_sent', 'llm_tokens_in', 'llm_tokens_out', 'embedding_tokens',
                                                    'storage_bytes', 'agent_runs', 'jobs_run')),
    quantity        bigint NOT NULL CHECK (quantity >= 0),
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    -- One record per billable event, even when the job that reports it runs twice.
    idempotency_key text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, idempotency_key)
);
COMMENT ON TABLE usage_records IS 'Metered usage for billing.';
CREATE INDEX usage_records_metric_idx ON usage_records (organization_id, metric, occurred_at);

CREATE TABLE webhooks (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    url             text NOT NULL CHECK (url ~ '^https://' AND length(url) <= 2048),
    description     text CHECK (length(description) <= 500),
    event_types     text[] NOT NULL CHECK (cardinality(event_types) >= 1),
    secret_ciphertext bytea NOT NULL,
    enabled         boolean NOT NULL DEFAULT true,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id)
);
COMMENT ON TABLE webhooks IS 'HTTPS endpoints an organization subscribes to events; payloads are HMAC-signed.';
CREATE INDEX webhooks_org_idx ON webhooks (organization_id, created_at DESC, id DESC);
CREATE INDEX webhooks_events_idx ON webhooks USING gin (event_types) WHERE enabled;
CREATE INDEX webhooks_created_by_idx ON webhooks (created_by);
CREATE TRIGGER webhooks_updated_at BEFORE UPDATE ON webhooks FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    webhook_id      uuid NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'succeeded', 'retrying', 'failed')),
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    response_status smallint,
    response_body_excerpt text CHECK (length(response_body_excerpt) <= 2000),
    last_error      text,
    next_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, webhook_id) REFERENCES webhooks (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, webhook_id, event_id)
);
COMMENT ON TABLE webhook_deliveries IS 'The delivery log of webhook events, with retries.';
CREATE INDEX webhook_deliveries_webhook_idx ON webhook_deliveries (organization_id, webhook_id, created_at DESC);
CREATE INDEX webhook_deliveries_retry_idx ON webhook_deliveries (next_attempt_at) WHERE status IN ('pending', 'retrying');
CREATE TRIGGER webhook_deliveries_updated_at BEFORE UPDATE ON webhook_deliveries FOR EACH ROW EXECUTE FUNCTION set_updated_at();
