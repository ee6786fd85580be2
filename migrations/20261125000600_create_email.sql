-- Sending accounts (secrets sealed with AES-256-GCM), OAuth connect state, broadcasts, one
-- delivery row per recipient with its status history, and the suppression list.

CREATE TABLE email_accounts (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    provider        text NOT NULL CHECK (provider IN ('smtp', 'gmail', 'outlook')),
    display_name    text NOT NULL CHECK (length(btrim(display_name)) BETWEEN 1 AND 200),
    from_address    text NOT NULL CHECK (from_address ~ '^[^@\s]+@[^@\s]+$' AND length(from_address) <= 320),
    status          text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'needs_reauth', 'disabled')),
    status_reason   text,
    -- SMTP
    smtp_host       text CHECK (length(smtp_host) <= 255),
    smtp_port       integer CHECK (smtp_port BETWEEN 1 AND 65535),
    smtp_security   text CHECK (smtp_security IN ('none', 'starttls', 'tls')),
    smtp_username   text,
    smtp_password_ciphertext bytea, -- nonce || AES-256-GCM ciphertext
    -- OAuth (Gmail, Outlook)
    oauth_subject   text,
    oauth_access_token_ciphertext bytea,
    oauth_refresh_token_ciphertext bytea,
    oauth_expires_at timestamptz,
    oauth_scopes    text[],
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id),
    CHECK (provider <> 'smtp' OR (smtp_host IS NOT NULL AND smtp_port IS NOT NULL AND smtp_security IS NOT NULL)),
    CHECK (provider = 'smtp' OR oauth_refresh_token_ciphertext IS NOT NULL OR status <> 'active')
);
COMMENT ON TABLE email_accounts IS 'Sending accounts of an organization; secrets only as ciphertext.';
CREATE UNIQUE INDEX email_accounts_address_key ON email_accounts (organization_id, provider, lower(from_address));
CREATE INDEX email_accounts_org_idx ON email_accounts (organization_id, created_at DESC, id DESC);
CREATE INDEX email_accounts_created_by_idx ON email_accounts (created_by);
CREATE TRIGGER email_accounts_updated_at BEFORE UPDATE ON email_accounts FOR EACH ROW EXECUTE FUNCTION set_updated_at();

ALTER TABLE organizations
    ADD CONSTRAINT organizations_default_sender_fk
    FOREIGN KEY (id, default_sender_email_account_id) REFERENCES email_accounts (organization_id, id)
    ON DELETE SET NULL (default_sender_email_account_id);
CREATE INDEX organizations_default_sender_idx ON organizations (id, default_sender_email_account_id);

CREATE TABLE oauth_states (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider        text NOT NULL CHECK (provider IN ('gmail', 'outlook')),
    state_hash      bytea NOT NULL UNIQUE CHECK (length(state_hash) = 32),
    pkce_verifier_ciphertext bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    consumed_at     timestamptz,
    CHECK (expires_at > created_at)
);
COMMENT ON TABLE oauth_states IS 'Pending OAuth authorization-code flows (state bound to user and organization).';
CREATE INDEX oauth_states_org_idx ON oauth_states (organization_id);
CREATE INDEX oauth_states_user_idx ON oauth_states (user_id);
CREATE INDEX oauth_states_expires_idx ON oauth_states (expires_at);

CREATE TABLE broadcasts (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    -- An account in use by broadcasts cannot be deleted silently: disable it instead.
    email_account_id uuid NOT NULL,
    project_id      uuid,
    subject         text NOT NULL CHECK (length(btrim(subject)) BETWEEN 1 AND 998),
    body_text       text NOT NULL CHECK (length(body_text) <= 1000000),
    body_html       text CHECK (length(body_html) <= 2000000),
    status          text NOT NULL DEFAULT 'draft'
                    CHECK (status IN ('draft', 'scheduled', 'sending', 'sent', 'partially_failed', 'failed', 'cancelled')),
    scheduled_for   timestamptz,
    started_at      timestamptz,
    finished_at     timestamptz,
    recipient_count integer NOT NULL DEFAULT 0 CHECK (recipient_count >= 0),
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, email_account_id) REFERENCES email_accounts (organization_id, id) ON DELETE RESTRICT,
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE SET NULL (project_id),
    UNIQUE (organization_id, id),
    CHECK (status <> 'scheduled' OR scheduled_for IS NOT NULL)
);
COMMENT ON TABLE broadcasts IS 'Emails to many recipients; each recipient gets one delivery.';
CREATE INDEX broadcasts_org_idx ON broadcasts (organization_id, created_at DESC, id DESC);
CREATE INDEX broadcasts_status_idx ON broadcasts (organization_id, status);
CREATE INDEX broadcasts_due_idx ON broadcasts (scheduled_for) WHERE status = 'scheduled';
CREATE INDEX broadcasts_account_idx ON broadcasts (organization_id, email_account_id);
CREATE INDEX broadcasts_project_idx ON broadcasts (organization_id, project_id);
CREATE INDEX broadcasts_created_by_idx ON broadcasts (created_by);
CREATE TRIGGER broadcasts_updated_at BEFORE UPDATE ON broadcasts FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE email_deliveries (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    broadcast_id    uuid, -- NULL for system emails (invitations, resets, nudges)
    email_account_id uuid,
    template        text CHECK (template IN ('broadcast', 'invitation', 'password_reset', 'task_assignment',
                                             'approval_request', 'approval_nudge', 'reminder', 'timesheet_reminder', 'test')),
    recipient       text NOT NULL CHECK (recipient ~ '^[^@\s]+@[^@\s]+$' AND length(recipient) <= 320),
    subject         text NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'sending', 'sent', 'retrying', 'failed', 'bounced', 'suppressed', 'cancelled')),
    provider_message_id text,
    attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error      text,
    sent_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, broadcast_id) REFERENCES broadcasts (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, email_account_id) REFERENCES email_accounts (organization_id, id) ON DELETE RESTRICT,
    UNIQUE (organization_id, id),
    CHECK ((status = 'sent') = (sent_at IS NOT NULL))
);
COMMENT ON TABLE email_deliveries IS 'One message to one recipient; claimed and marked atomically so it is never sent twice.';
CREATE UNIQUE INDEX email_deliveries_recipient_key ON email_deliveries (organization_id, broadcast_id, lower(recipient))
    WHERE broadcast_id IS NOT NULL;
CREATE INDEX email_deliveries_broadcast_idx ON email_deliveries (organization_id, broadcast_id, status);
CREATE INDEX email_deliveries_org_idx ON email_deliveries (organization_id, created_at DESC, id DESC);
CREATE INDEX email_deliveries_account_idx ON email_deliveries (organization_id, email_account_id);
CREATE TRIGGER email_deliveries_updated_at BEFORE UPDATE ON email_deliveries FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE email_delivery_events (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    delivery_id     uuid NOT NULL,
    status          text NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'retrying', 'failed', 'bounced', 'suppressed', 'cancelled')),
    detail          text,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, delivery_id) REFERENCES email_deliveries (organization_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE email_delivery_events IS 'Append-only, timestamped status history of a delivery.';
CREATE INDEX email_delivery_events_delivery_idx ON email_delivery_events (organization_id, delivery_id, occurred_at);
CREATE TRIGGER email_delivery_events_append_only BEFORE UPDATE ON email_delivery_events
    FOR EACH ROW EXECUTE FUNCTION reject_modification();

CREATE TABLE email_suppressions (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$'),
    reason          text NOT NULL CHECK (reason IN ('unsubscribed', 'hard_bounce', 'complaint', 'manual')),
    source_broadcast_id uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, source_broadcast_id) REFERENCES broadcasts (organization_id, id) ON DELETE SET NULL (source_broadcast_id)
);
COMMENT ON TABLE email_suppressions IS 'Unsubscribes and bounces: addresses an organization must not email.';
CREATE UNIQUE INDEX email_suppressions_email_key ON email_suppressions (organization_id, lower(email));
CREATE INDEX email_suppressions_broadcast_idx ON email_suppressions (organization_id, source_broadcast_id);
