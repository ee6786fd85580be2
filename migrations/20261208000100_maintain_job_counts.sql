-- Job counts and throughput the engine maintains, so that the dashboard and `GET
-- /api/v1/queues` never count `jobs` (a million finished rows took a scan per page view).
--
-- Every statement that inserts, updates or deletes jobs appends its net change per
-- (organization, queue, state) to `job_tallies` (a statement trigger over the transition
-- tables: no row trigger, no hot counter row, so concurrent writers never wait on each other).
-- A worker folds the tallies every second (`zoark_jobs::counts::fold`, one worker at a time)
-- into `job_counts` (rows per state now) and `job_throughput` (rows that entered a finished or
-- failed state, per minute and per hour); readers add the few tallies not folded yet, so
-- counts are exact at every moment. TRUNCATE is not counted (nothing here truncates `jobs`).

CREATE TABLE job_tallies (
    organization_id uuid,
    queue           text NOT NULL,
    state           text NOT NULL,
    -- Net change of the rows in this state made by one statement.
    n               bigint NOT NULL,
    -- Rows that moved into this state (the positive part of the change, 0 for deletes).
    entered         bigint NOT NULL,
    at              timestamptz NOT NULL DEFAULT statement_timestamp()
);
COMMENT ON TABLE job_tallies IS 'Per-statement changes of job counts, not folded into job_counts and job_throughput yet.';

CREATE TABLE job_counts (
    organization_id uuid REFERENCES organizations (id) ON DELETE CASCADE,
    queue           text NOT NULL,
    state           text NOT NULL,
    n               bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (organization_id, queue, state)
);
COMMENT ON TABLE job_counts IS 'Jobs per organization, queue and state, as of the last fold of job_tallies.';

CREATE TABLE job_throughput (
    width           text NOT NULL CHECK (width IN ('minute', 'hour')),
    bucket          timestamptz NOT NULL,
    organization_id uuid REFERENCES organizations (id) ON DELETE CASCADE,
    queue           text NOT NULL,
    state           text NOT NULL CHECK (state IN ('completed', 'retryable', 'discarded', 'cancelled')),
    n               bigint NOT NULL,
    UNIQUE NULLS NOT DISTINCT (width, bucket, organization_id, queue, state)
);
COMMENT ON TABLE job_throughput IS 'Jobs that completed, failed an attempt, were discarded or cancelled, per minute (two hours kept) and per hour (eight days).';
CREATE INDEX job_throughput_organization_idx ON job_throughput (organization_id, width, bucket);

-- `job_tallies` is written by the trigger of `jobs` in whatever transaction writes jobs (a
-- tenant's request may enqueue a platform job, e.g. a system email), so it is under row
-- security exactly as `jobs` is: enabled with the tenant policy, not forced on the owner. (A
-- function-level `SET zoark.rls` would allow forcing it, and made single-job statements 5 %
-- slower.) Readers filter by organization themselves, as the jobs queries do.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['job_tallies', 'job_counts', 'job_throughput'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        IF t <> 'job_tallies' THEN
            EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        END IF;
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
            USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
            WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))', t);
    END LOOP;
END
$$;

CREATE FUNCTION jobs_tally() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        INSERT INTO job_tallies (organization_id, queue, state, n, entered)
        SELECT organization_id, queue, state, sum(n), greatest(sum(n), 0)
        FROM (SELECT organization_id, queue, state, 1 AS n FROM new_rows
              UNION ALL
              SELECT organization_id, queue, state, -1 FROM old_rows) d
        GROUP BY organization_id, queue, state
        HAVING sum(n) <> 0;
    ELSIF TG_OP = 'INSERT' THEN
        INSERT INTO job_tallies (organization_id, queue, state, n, entered)
        SELECT organization_id, queue, state, count(*), count(*)
        FROM new_rows GROUP BY organization_id, queue, state;
    ELSE
        INSERT INTO job_tallies (organization_id, queue, state, n, entered)
        SELECT organization_id, queue, state, -count(*), 0
        FROM old_rows GROUP BY organization_id, queue, state;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_tally_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_tally();
CREATE TRIGGER jobs_tally_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_tally();
CREATE TRIGGER jobs_tally_delete AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_tally();

-- The jobs already there (writers wait: the triggers above hold a lock on `jobs` until commit).
INSERT INTO job_counts (organization_id, queue, state, n)
SELECT organization_id, queue, state, count(*) FROM jobs GROUP BY organization_id, queue, state;
