-- Claim up to $2 due jobs of queue $1 for worker $3. The update finds its rows through the primary
-- key (`= ANY (ARRAY(…))`), whatever the table's size or statistics. Also run by
-- `cargo xtask bench queue` as the raw-SQL ceiling.
WITH next AS (
    SELECT id FROM jobs
    WHERE state IN ('available', 'scheduled', 'retryable') AND queue = $1 AND run_at <= now()
    ORDER BY priority, run_at, id
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs j SET state = 'running', attempt = j.attempt + 1, attempted_at = now(), worker_id = $3
WHERE j.id = ANY (ARRAY(SELECT id FROM next))
RETURNING j.id, j.organization_id, j.kind, j.args, j.attempt, j.max_attempts, j.run_at, j.priority
