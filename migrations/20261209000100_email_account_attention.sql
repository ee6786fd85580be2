-- An SMTP account whose settings cannot work (a refused address, no TLS where required, no
-- usable authentication, credentials refused) is marked `needs_attention` with the reason: its
-- deliveries fail at once instead of retrying for hours, until its settings change.
ALTER TABLE email_accounts DROP CONSTRAINT email_accounts_status_check;
ALTER TABLE email_accounts ADD CONSTRAINT email_accounts_status_check
    CHECK (status IN ('active', 'needs_reauth', 'needs_attention', 'disabled'));
