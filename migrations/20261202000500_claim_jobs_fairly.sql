-- Fair claims: the claim takes a share of each tenant's due jobs (platform jobs count as one
-- tenant), so one organization's backlog never holds back another's jobs or the platform's
-- (password resets, invitations). The claim index leads with the queue and the tenant: the
-- claim walks the tenants with waiting jobs (a skip scan) and reads each one's jobs in
-- (priority, run_at, id) order. NULL (the platform) is indexed as the nil UUID.
DROP INDEX jobs_claim_idx;
CREATE INDEX jobs_claim_idx
    ON jobs (queue, (coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid)), priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
