-- Claim up to $2 due jobs of queue $1 for worker $3.
--
-- Only `available` jobs are read: they are the due ones (the waker makes scheduled and retryable
-- jobs available when their run_at comes, `promote.sql`), so the claim index holds no future
-- rows to walk past.
--
-- Fair between tenants: the tenants with due jobs in the queue are found by a skip scan of the
-- claim index (platform jobs are one tenant, keyed by the nil UUID), each gives at most its share
-- (the claim size divided by the number of tenants, rounded up) of its due jobs in (priority,
-- run_at, id) order, and the claim takes the first $2 of those by (priority, rank within its
-- tenant, run_at). So a job of a tenant with one job waits for the next free slot, not for another
-- tenant's backlog; priority still orders each tenant's jobs, and across tenants within a claim.
--
-- Fenced: only while the worker's row exists; the row is locked FOR KEY SHARE for the claim, so a
-- peer deleting it (rescuing a stalled worker) either waits for this claim to commit or makes it
-- return nothing. Paused queues (`queue_pauses`: the whole queue, or one organization's jobs in
-- it) give nothing; both checks are per tenant, not per row, so the index order serves the LIMIT.
--
-- Each claimed attempt gets a deadline: its timeout (the job's own, else its kind's from $4/$5 in
-- ms, else 60 s) plus the margin $6 ms. The update finds its rows through the primary key
-- (`= ANY (ARRAY(…))`), whatever the table's size or statistics. Also run by `cargo xtask bench
-- queue` as the raw-SQL ceiling.
WITH RECURSIVE me AS (
    SELECT id FROM job_workers WHERE id = $3 FOR KEY SHARE
), tenants AS (
    (SELECT coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid) AS org FROM jobs
     WHERE state = 'available' AND queue = $1
     ORDER BY coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid)
     LIMIT 1)
    UNION ALL
    SELECT (SELECT coalesce(j.organization_id, '00000000-0000-0000-0000-000000000000'::uuid) FROM jobs j
            WHERE j.state = 'available' AND j.queue = $1
              AND coalesce(j.organization_id, '00000000-0000-0000-0000-000000000000'::uuid) > t.org
            ORDER BY coalesce(j.organization_id, '00000000-0000-0000-0000-000000000000'::uuid)
            LIMIT 1)
    FROM tenants t WHERE t.org IS NOT NULL
), share AS (
    SELECT ceil($2::int8::float8 / greatest(count(*), 1))::int8 AS n FROM tenants WHERE org IS NOT NULL
), picked AS (
    SELECT c.* FROM tenants t CROSS JOIN LATERAL (
        SELECT j.id, j.priority, j.run_at, t.org FROM jobs j
        WHERE j.state = 'available' AND j.queue = $1
          AND coalesce(j.organization_id, '00000000-0000-0000-0000-000000000000'::uuid) = t.org
          AND j.run_at <= now()
          AND EXISTS (SELECT 1 FROM me)
          AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = $1 AND p.organization_id IS NULL)
          AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = $1 AND p.organization_id = t.org)
        ORDER BY j.priority, j.run_at, j.id
        LIMIT (SELECT n FROM share)
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE t.org IS NOT NULL
), next AS (
    SELECT id FROM picked
    ORDER BY priority, row_number() OVER (PARTITION BY org ORDER BY priority, run_at, id), run_at, id
    LIMIT $2
)
UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), worker_id = $3,
    deadline_at = now() + (coalesce(j.timeout_ms::int8,
                                    (SELECT k.ms FROM unnest($4::text[], $5::int8[]) AS k(kind, ms) WHERE k.kind = j.kind),
                                    60000) + $6::int8) * interval '1 millisecond'
WHERE j.id = ANY (ARRAY(SELECT id FROM next))
RETURNING j.id, j.organization_id, j.kind, j.args, j.attempt, j.max_attempts, j.run_at, j.priority, j.timeout_ms
