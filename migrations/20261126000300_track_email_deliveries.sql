-- Delivery tracking for broadcasts (issue 5).
--
-- A delivery is claimed (`sending`, `claimed_at`) before its message leaves and marked after;
-- a claim older than the send job's timeout belongs to a dead attempt and may be taken over.
-- `job_id` is the delivery's send job, so cancelling a broadcast cancels exactly its jobs.
ALTER TABLE email_deliveries
    ADD COLUMN job_id uuid,
    ADD COLUMN claimed_at timestamptz,
    ADD CONSTRAINT email_deliveries_claim_check CHECK (status <> 'sending' OR claimed_at IS NOT NULL);
COMMENT ON COLUMN email_deliveries.claimed_at IS 'When the current or last send attempt claimed the delivery.';

-- What a draft or scheduled broadcast will be sent to; resolved into deliveries when it is sent.
ALTER TABLE broadcasts
    ADD COLUMN recipient_emails text[] NOT NULL DEFAULT '{}' CHECK (cardinality(recipient_emails) <= 50000),
    ADD COLUMN team_member_ids uuid[] NOT NULL DEFAULT '{}' CHECK (cardinality(team_member_ids) <= 10000),
    ADD COLUMN job_id uuid;
COMMENT ON COLUMN broadcasts.job_id IS 'The scheduled send job of a scheduled broadcast.';
