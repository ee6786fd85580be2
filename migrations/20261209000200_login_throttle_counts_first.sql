-- Sign-in attempts are counted before their password is checked, under the keys' row locks: a
-- key's row exists (with no failure yet) before its first attempt is counted, and a right
-- password takes its attempt back, down to zero. Keys are per (account, client address) now.
ALTER TABLE login_throttle DROP CONSTRAINT login_throttle_failures_check;
ALTER TABLE login_throttle ADD CONSTRAINT login_throttle_failures_check CHECK (failures >= 0);
COMMENT ON TABLE login_throttle IS 'Sign-in attempts counted as failures until their password is right, and lockouts, per (account, client address) and per client address.';
ALTER TABLE login_throttle DROP CONSTRAINT login_throttle_key_check;
ALTER TABLE login_throttle ADD CONSTRAINT login_throttle_key_check
    CHECK (key ~ '^(email|ip):' AND length(key) <= 400);
