CREATE TABLE audit_log (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- A deleted actor must not block its deletion nor erase history: the id is nulled.
    actor_user_id   uuid REFERENCES users (id) ON DELETE SET NULL,
    actor_api_key_id uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    action          text NOT NULL CHECK (action ~ '^[a-z_]+(\.[a-z_]+)+$'),
    target_type     text,
    target_id       uuid,
    ip_address      inet,
    user_agent      text CHECK (length(user_agent) <= 1024),
    metadata        jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE audit_log IS 'Append-only record of security-relevant actions, written in the action''s transaction.';
CREATE INDEX audit_log_org_idx ON audit_log (organization_id, created_at DESC, id DESC);
CREATE INDEX audit_log_org_action_idx ON audit_log (organization_id, action, created_at DESC);
CREATE INDEX audit_log_actor_user_idx ON audit_log (actor_user_id);
CREATE INDEX audit_log_actor_api_key_idx ON audit_log (actor_api_key_id);
CREATE INDEX audit_log_target_idx ON audit_log (organization_id, target_type, target_id);
CREATE TRIGGER audit_log_append_only BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION reject_modification('actor_user_id', 'actor_api_key_id');

-- Stripe-like idempotency: a retried POST with the same key replays the stored response.
CREATE TABLE idempotency_keys (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    key             text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    method          text NOT NULL,
    path            text NOT NULL,
    request_hash    bytea NOT NULL CHECK (length(request_hash) = 32),
    response_status smallint CHECK (response_status BETWEEN 100 AND 599),
    response_headers jsonb,
    response_body   bytea,
    locked_at       timestamptz,   -- set while the first request is in flight
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL DEFAULT now() + interval '24 hours',
    UNIQUE (organization_id, key)
);
COMMENT ON TABLE idempotency_keys IS 'Stored first responses of POSTs carrying an Idempotency-Key.';
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);
