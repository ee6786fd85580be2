-- API keys no longer outlive their creators: removing a member revokes the keys they created
-- (and the keys those keys created), demoting one brings those keys down to the new role. A key
-- created by a key records its parent; an organization may require keys to expire.
ALTER TABLE api_keys ADD COLUMN parent_key_id uuid;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_parent_fkey FOREIGN KEY (organization_id, parent_key_id)
    REFERENCES api_keys (organization_id, id) ON DELETE SET NULL (parent_key_id);
CREATE INDEX api_keys_parent_idx ON api_keys (organization_id, parent_key_id) WHERE parent_key_id IS NOT NULL;
ALTER TABLE api_keys ADD COLUMN revoked_reason text
    CHECK (revoked_reason IN ('revoked', 'creator_removed'));
COMMENT ON COLUMN api_keys.parent_key_id IS 'The API key that created this one, if a key did.';
COMMENT ON COLUMN api_keys.revoked_reason IS 'Why it was revoked: by hand, or with its creator''s membership.';

ALTER TABLE organizations ADD COLUMN api_key_max_lifetime_days integer
    CHECK (api_key_max_lifetime_days BETWEEN 1 AND 3650);
COMMENT ON COLUMN organizations.api_key_max_lifetime_days IS 'When set, every new API key must expire within this many days.';
