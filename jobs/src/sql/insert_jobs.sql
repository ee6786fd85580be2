-- One chunk of enqueue_many: rows come as parallel arrays; a unique key held by an unfinished
-- job makes its row a no-op (the caller then looks up the holder). Jobs without a unique key, a
-- start time or a timeout of their own take the COPY path instead.
INSERT INTO jobs (id, organization_id, kind, queue, state, args, priority, max_attempts, run_at, unique_key, timeout_ms)
SELECT id, org, kind, queue,
       CASE WHEN run_at > now() THEN 'scheduled' ELSE 'available' END,
       args, priority, max_attempts, coalesce(run_at, now()), unique_key, timeout_ms
FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[], $6::int2[],
            $7::int4[], $8::timestamptz[], $9::text[], $10::int4[])
     AS t(id, org, kind, queue, args, priority, max_attempts, run_at, unique_key, timeout_ms)
ON CONFLICT (organization_id, kind, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable')
    DO NOTHING
RETURNING id, state
