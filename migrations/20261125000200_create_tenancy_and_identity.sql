-- Tenants, identities, memberships with roles, sessions with rotating refresh tokens, API keys.

CREATE TABLE organizations (
    id                uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    name              text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    -- branding
    display_name      text CHECK (length(display_name) <= 200),
    logo_url          text CHECK (logo_url ~ '^https?://' AND length(logo_url) <= 2048),
    primary_color     text CHECK (primary_color ~ '^#[0-9a-fA-F]{6}$'),
    -- settings
    time_zone         text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    default_sender_email_account_id uuid, -- FK added with email_accounts
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    deleted_at        timestamptz
);
COMMENT ON TABLE organizations IS 'Tenants: every tenant-owned row carries organization_id.';
CREATE INDEX organizations_created_at_idx ON organizations (created_at DESC, id DESC);
CREATE TRIGGER organizations_updated_at BEFORE UPDATE ON organizations FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE users (
    id                uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    email             text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
    name              text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    password_hash     text CHECK (password_hash LIKE '$argon2id$%'),
    email_verified_at timestamptz,
    disabled_at       timestamptz,
    last_login_at     timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE users IS 'Global identities; they belong to organizations through memberships.';
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE TRIGGER users_updated_at BEFORE UPDATE ON users FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE memberships (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('admin', 'manager', 'lead', 'member', 'viewer')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, user_id)
);
COMMENT ON TABLE memberships IS 'A user''s role in one organization.';
CREATE INDEX memberships_user_idx ON memberships (user_id);
CREATE INDEX memberships_org_role_idx ON memberships (organization_id, role);
CREATE TRIGGER memberships_updated_at BEFORE UPDATE ON memberships FOR EACH ROW EXECUTE FUNCTION set_updated_at();

-- A session is one refresh-token family: reuse of a spent token revokes the whole session.
CREATE TABLE sessions (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    user_agent      text CHECK (length(user_agent) <= 1024),
    ip_address      inet,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text CHECK (revoked_reason IN ('logout', 'refresh_token_reuse', 'password_reset', 'admin', 'member_removed')),
    UNIQUE (organization_id, id),
    CHECK (expires_at > created_at),
    CHECK ((revoked_at IS NULL) = (revoked_reason IS NULL))
);
COMMENT ON TABLE sessions IS 'Login sessions (refresh-token families).';
CREATE INDEX sessions_user_idx ON sessions (user_id, created_at DESC) WHERE revoked_at IS NULL;
CREATE INDEX sessions_user_all_idx ON sessions (user_id);

CREATE TABLE refresh_tokens (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    session_id      uuid NOT NULL,
    token_hash      bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32), -- SHA-256 of the opaque token
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    replaced_by     uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    FOREIGN KEY (organization_id, session_id) REFERENCES sessions (organization_id, id) ON DELETE CASCADE,
    CHECK (replaced_by IS NULL OR used_at IS NOT NULL)
);
COMMENT ON TABLE refresh_tokens IS 'Single-use refresh tokens, stored as SHA-256 digests.';
CREATE INDEX refresh_tokens_session_idx ON refresh_tokens (organization_id, session_id);
CREATE INDEX refresh_tokens_replaced_by_idx ON refresh_tokens (replaced_by);
CREATE INDEX refresh_tokens_org_idx ON refresh_tokens (organization_id);

-- Global: a password belongs to the user, not to one organization.
CREATE TABLE password_reset_tokens (
    id          uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    CHECK (expires_at > created_at)
);
COMMENT ON TABLE password_reset_tokens IS 'Single-use password reset tokens (hashed, short-lived).';
CREATE INDEX password_reset_tokens_user_idx ON password_reset_tokens (user_id);

CREATE TABLE invitations (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    email           text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
    role            text NOT NULL CHECK (role IN ('admin', 'manager', 'lead', 'member', 'viewer')),
    token_hash      bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    invited_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz NOT NULL,
    accepted_at     timestamptz,
    accepted_user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    revoked_at      timestamptz,
    CHECK (expires_at > created_at)
);
COMMENT ON TABLE invitations IS 'Invitations to join an organization with a role.';
CREATE INDEX invitations_org_idx ON invitations (organization_id, created_at DESC);
CREATE UNIQUE INDEX invitations_pending_email_key ON invitations (organization_id, lower(email))
    WHERE accepted_at IS NULL AND revoked_at IS NULL;
CREATE INDEX invitations_invited_by_idx ON invitations (invited_by);
CREATE INDEX invitations_accepted_user_idx ON invitations (accepted_user_id);

CREATE TABLE api_keys (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    name            text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    prefix          text NOT NULL UNIQUE CHECK (prefix ~ '^zk_[A-Za-z0-9]{6,16}$'),
    key_hash        bytea NOT NULL UNIQUE CHECK (length(key_hash) = 32),
    role            text NOT NULL CHECK (role IN ('admin', 'manager', 'lead', 'member', 'viewer')),
    expires_at      timestamptz,
    last_used_at    timestamptz,
    revoked_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id)
);
COMMENT ON TABLE api_keys IS 'Organization API keys (zk_...), stored as SHA-256 digests, shown once.';
CREATE INDEX api_keys_org_idx ON api_keys (organization_id, created_at DESC);
CREATE INDEX api_keys_created_by_idx ON api_keys (created_by);
