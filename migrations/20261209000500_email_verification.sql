-- Email ownership: an address is verified through a single-use link sent to it (or by
-- accepting an invitation or resetting a password, which also prove the mailbox). Until then
-- the platform sends no invitation on the account's behalf. Accounts created before this
-- existed keep working as they did: their addresses count as verified.
-- (users.email_verified_at exists since the identity migration, unused until now.)
UPDATE users SET email_verified_at = created_at WHERE email_verified_at IS NULL;
COMMENT ON COLUMN users.email_verified_at IS 'When the account proved it receives mail at its address; NULL until then.';

-- Global: an address belongs to the user, not to one organization.
CREATE TABLE email_verification_tokens (
    id          uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email       text NOT NULL,
    token_hash  bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    CHECK (expires_at > created_at)
);
COMMENT ON TABLE email_verification_tokens IS 'Single-use email verification links (hashed); each verifies the address it was sent to.';
CREATE INDEX email_verification_tokens_user_idx ON email_verification_tokens (user_id);

ALTER TABLE email_verification_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE email_verification_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON email_verification_tokens USING ((SELECT zoark_rls_bypassed()))
    WITH CHECK ((SELECT zoark_rls_bypassed()));
