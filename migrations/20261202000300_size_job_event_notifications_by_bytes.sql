-- zoark_job_events payloads are cut by size, not by count. NOTIFY refuses a payload of 8,000
-- bytes or more (and the statement that sent it fails with it); 25 events with the longest kind
-- (100) and queue (64) names the CHECKs allow come to about 8,200 bytes, so an INSERT or UPDATE
-- of that many such tenant jobs failed. Now each chunk closes once a running sum of its events'
-- lengths (with the ", " between them) reaches 7,000 bytes: a payload is under 7,000 bytes plus
-- one event (at most ~330 bytes under the CHECKs), whatever the names. The payload is the same
-- JSON array of {id, organization_id, kind, queue, state, attempt} as before.
CREATE OR REPLACE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN
        SELECT queue, min(run_at) AS run_at FROM new_rows
        WHERE state IN ('available', 'scheduled', 'retryable')
        GROUP BY queue
    LOOP
        PERFORM pg_notify('zoark_jobs_ready',
                          r.queue || ' ' || (extract(epoch FROM r.run_at) * 1000)::bigint);
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
