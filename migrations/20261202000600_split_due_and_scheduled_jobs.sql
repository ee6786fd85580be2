-- Due jobs and future jobs apart, as River keeps them: `available` means due now, and a job
-- whose run_at is ahead (`scheduled`, or `retryable` waiting out its backoff) is made `available`
-- by the workers' waker when its time comes (the promotion, `worker/src/engine/sql/promote.sql`).
-- The claim index then holds only due jobs, so a claim never walks future rows, however many
-- reminders or retries wait behind them; future rows have an index of their own by
-- (queue, run_at), which serves the promotion and the waker's timers.
DROP INDEX jobs_claim_idx;
CREATE INDEX jobs_claim_idx
    ON jobs (queue, (coalesce(organization_id, '00000000-0000-0000-0000-000000000000'::uuid)), priority, run_at, id)
    WHERE state = 'available';
CREATE INDEX jobs_scheduled_idx ON jobs (queue, run_at) WHERE state IN ('scheduled', 'retryable');

-- `zoark_jobs_ready` tells the waker what became claimable: `<queue> <ms>` for available jobs
-- (claim now) and `<queue> <ms> later` for scheduled and retryable ones (promote at <ms>; at
-- once if it has passed). One notification per queue and kind per statement, as before; the
-- zoark_job_events payloads are unchanged.
CREATE OR REPLACE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT queue, min(run_at) AS run_at, state = 'available' AS due FROM new_rows
        WHERE state IN ('available', 'scheduled', 'retryable')
        GROUP BY queue, state = 'available'
    LOOP
        PERFORM pg_notify('zoark_jobs_ready',
                          r.queue || ' ' || (extract(epoch FROM r.run_at) * 1000)::bigint
                          || CASE WHEN r.due THEN '' ELSE ' later' END);
    END LOOP;
    FOR r IN
        SELECT '[' || string_agg(event, ', ') || ']' AS payload
        FROM (SELECT event,
                     sum(octet_length(event) + 2) OVER (ROWS UNBOUNDED PRECEDING) / 7000 AS chunk
              FROM (SELECT jsonb_build_object('id', id, 'organization_id', organization_id, 'kind', kind,
                                              'queue', queue, 'state', state, 'attempt', attempt)::text AS event
                    FROM new_rows
                    WHERE organization_id IS NOT NULL) e) t
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('zoark_job_events', r.payload);
    END LOOP;
    RETURN NULL;
END
$$;

-- Rows already due in the old sense become available now.
UPDATE jobs SET state = 'available' WHERE state IN ('scheduled', 'retryable') AND run_at <= now();
