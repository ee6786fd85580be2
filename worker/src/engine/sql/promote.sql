-- Make the scheduled and retryable jobs of queues $1 whose run_at has come available (at most $2
-- at a time, oldest first), so that the claim, which reads only available jobs, finds them. Run
-- by any worker's waker when a queue's earliest future run_at passes; concurrent promotions skip
-- each other's rows. The update's trigger sends `zoark_jobs_ready`, which wakes every worker.
UPDATE jobs j SET state = 'available'
WHERE j.id = ANY (ARRAY(
    SELECT d.id FROM unnest($1::text[]) AS q(queue) CROSS JOIN LATERAL (
        SELECT s.id FROM jobs s
        WHERE s.queue = q.queue AND s.state IN ('scheduled', 'retryable') AND s.run_at <= now()
        ORDER BY s.run_at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    ) d))
  AND j.state IN ('scheduled', 'retryable')
