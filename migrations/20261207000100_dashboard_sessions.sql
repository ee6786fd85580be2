-- Browser sessions for the job status dashboard: a session opened by the dashboard's sign-in
-- form is held by an HttpOnly cookie instead of refresh tokens. The cookie's secret is stored as
-- its SHA-256; sign-out and revocation end the session for the API and the dashboard alike.

ALTER TABLE sessions
    ADD COLUMN cookie_sha256 bytea CHECK (length(cookie_sha256) = 32);
COMMENT ON COLUMN sessions.cookie_sha256 IS
    'SHA-256 of the dashboard cookie of a browser session; NULL for API sessions (refresh tokens).';
CREATE UNIQUE INDEX sessions_cookie_idx ON sessions (cookie_sha256) WHERE cookie_sha256 IS NOT NULL;
