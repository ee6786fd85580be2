-- Claim up to $2 due jobs of queue $1 for worker $3, only while that worker's row exists: the row
-- is locked FOR KEY SHARE for the claim, so a peer deleting it (rescuing a stalled worker) either
-- waits for this claim to commit or makes it return nothing. Each claimed attempt gets a deadline:
-- its timeout (the job's own, else its kind's from $4/$5 in ms, else 60 s) plus the margin $6 ms.
-- The update finds its rows through the primary key (`= ANY (ARRAY(…))`), whatever the table's size
-- or statistics. Paused queues (`queue_pauses`: the whole queue, or one organization's jobs in it)
-- give nothing. Also run by `cargo xtask bench queue` as the raw-SQL ceiling.
WITH me AS (
    SELECT id FROM job_workers WHERE id = $3 FOR KEY SHARE
), next AS (
    SELECT id FROM jobs
    WHERE state IN ('available', 'scheduled', 'retryable') AND queue = $1 AND run_at <= now()
      AND EXISTS (SELECT 1 FROM me)
      AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = $1 AND p.organization_id IS NULL)
      AND NOT EXISTS (SELECT 1 FROM queue_pauses p WHERE p.queue = $1 AND p.organization_id = jobs.organization_id)
    ORDER BY priority, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), worker_id = $3,
    deadline_at = now() + (coalesce(j.timeout_ms::int8,
                                    (SELECT k.ms FROM unnest($4::text[], $5::int8[]) AS k(kind, ms) WHERE k.kind = j.kind),
                                    60000) + $6::int8) * interval '1 millisecond'
WHERE j.id = ANY (ARRAY(SELECT id FROM next))
RETURNING j.id, j.organization_id, j.kind, j.args, j.attempt, j.max_attempts, j.run_at, j.priority, j.timeout_ms
