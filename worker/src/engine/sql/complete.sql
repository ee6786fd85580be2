-- Write a batch of outcomes, fenced on (id, attempt, worker_id = $7): a CHECK makes worker_id
-- non-null exactly while a job is running, so the fence also means `state = 'running'`. A job
-- cancelled while running ends `cancelled` unless it completed or was discarded. A retry or snooze
-- whose run_at has already come is written `available` (only available jobs are claimed).
-- Planned the same whatever the statistics say: the rows are found through the primary key
-- (`j.id = ANY ($1)`, estimated at the batch's size), and the worker fence is a join condition
-- on a column of the batch (`d.worker_id`), not a filter on `jobs` alone. Statistics gathered
-- while nothing ran make such a filter look like one row, and the planner then loops over the
-- whole batch for every row it scans (7–22 s for 2,000 outcomes instead of 15 ms; a constant
-- folded from `coalesce($7, d.id)` did just that under custom plans).
-- Also run by `cargo xtask bench queue` as the raw-SQL ceiling.
UPDATE jobs j SET
    state = CASE WHEN j.cancel_requested_at IS NOT NULL AND d.state IN ('retryable', 'scheduled', 'available')
                 THEN 'cancelled'
                 -- A retry or snooze with no wait left is due at once: available, not promoted later.
                 WHEN d.state IN ('retryable', 'scheduled') AND d.run_at <= now() THEN 'available'
                 ELSE d.state END,
    finalized_at = CASE WHEN d.state IN ('completed', 'discarded', 'cancelled')
                          OR j.cancel_requested_at IS NOT NULL THEN now() END,
    run_at = coalesce(d.run_at, j.run_at),
    attempt = j.attempt + d.attempt_delta,
    errors = CASE WHEN d.error IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(d.error) END,
    worker_id = NULL,
    deadline_at = NULL
FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::int4[],
            array_fill($7::uuid, ARRAY[cardinality($1::uuid[])]))
     AS d(id, attempt, state, run_at, error, attempt_delta, worker_id)
WHERE j.id = ANY ($1::uuid[]) AND j.id = d.id AND j.attempt = d.attempt AND j.worker_id = d.worker_id
