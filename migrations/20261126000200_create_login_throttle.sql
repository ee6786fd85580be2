-- Failed sign-ins per account (`email:<lowercased address>`) and per client (`ip:<address>`):
-- after a few failures each further attempt must wait (doubling), then the key is locked for a
-- while. Keys of unknown addresses are throttled exactly like known ones, so the answers reveal
-- nothing. Global (no tenant is known before sign-in); platform connections only.
CREATE TABLE login_throttle (
    key              text PRIMARY KEY CHECK (key ~ '^(email|ip):' AND length(key) <= 330),
    failures         integer NOT NULL CHECK (failures > 0),
    first_failure_at timestamptz NOT NULL,
    locked_until     timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE login_throttle IS 'Failed sign-in counters and lockouts per account and per client address.';
CREATE INDEX login_throttle_updated_idx ON login_throttle (updated_at);

ALTER TABLE login_throttle ENABLE ROW LEVEL SECURITY;
ALTER TABLE login_throttle FORCE ROW LEVEL SECURITY;
CREATE POLICY platform_only ON login_throttle USING ((SELECT zoark_rls_bypassed()))
    WITH CHECK ((SELECT zoark_rls_bypassed()));
