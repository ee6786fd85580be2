-- Write a batch of outcomes, fenced on (id, attempt, worker_id = $7): a CHECK makes worker_id
-- non-null exactly while a job is running, so the fence also means `state = 'running'`. A job
-- cancelled while running ends `cancelled` unless it completed or was discarded. A retry or snooze
-- whose run_at has already come is written `available` (only available jobs are claimed).
-- The fence is written `j.worker_id = coalesce($7, d.id)` ($7 is never NULL) so that it is a
-- join condition, not a filter on `jobs` alone: statistics gathered while nothing ran make such a
-- filter look like one row, and the planner then loops over the whole batch for every row it
-- scans (10 s for 2,000 outcomes instead of 15 ms).
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
FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::int4[])
     AS d(id, attempt, state, run_at, error, attempt_delta)
WHERE j.id = d.id AND j.attempt = d.attempt AND j.worker_id = coalesce($7, d.id)
