-- Write a batch of outcomes, fenced on (id, attempt, worker_id = $7): a CHECK makes worker_id
-- non-null exactly while a job is running, so the fence also means `state = 'running'`. A job
-- cancelled while running ends `cancelled` unless it completed or was discarded.
-- Neither `state = 'running'` nor `worker_id = $7` is written out as such: either lets the planner
-- drive the join from `jobs_running_idx`, which statistics often show as empty, and a nested
-- loop over the unnested batch then turns quadratic (70 ms for 500 outcomes instead of 3 ms).
-- Also run by `cargo xtask bench queue` as the raw-SQL ceiling.
UPDATE jobs j SET
    state = CASE WHEN j.cancel_requested_at IS NOT NULL AND d.state IN ('retryable', 'scheduled', 'available')
                 THEN 'cancelled' ELSE d.state END,
    finalized_at = CASE WHEN d.state IN ('completed', 'discarded', 'cancelled')
                          OR j.cancel_requested_at IS NOT NULL THEN now() END,
    run_at = coalesce(d.run_at, j.run_at),
    attempt = j.attempt + d.attempt_delta,
    errors = CASE WHEN d.error IS NULL THEN j.errors ELSE j.errors || jsonb_build_array(d.error) END,
    worker_id = NULL
FROM unnest($1::uuid[], $2::int4[], $3::text[], $4::timestamptz[], $5::jsonb[], $6::int4[])
     AS d(id, attempt, state, run_at, error, attempt_delta)
WHERE j.id = d.id AND j.attempt = d.attempt AND j.worker_id IS NOT DISTINCT FROM $7
