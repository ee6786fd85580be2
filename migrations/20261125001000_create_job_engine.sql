-- The job engine's own tables: jobs (River's state vocabulary), the workers that claim them,
-- the static cron table's last enqueued tick, and a diagnostics table written by the smoke-test
-- job kinds. apalis runs the handlers; these tables and the SQL in zoark-jobs / zoark-worker are
-- the storage it is driven from.

CREATE TABLE jobs (
    id                  uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    -- NULL for platform jobs (maintenance, pruning, backups); every tenant job carries its tenant.
    organization_id     uuid REFERENCES organizations (id) ON DELETE CASCADE,
    kind                text NOT NULL CHECK (kind ~ '^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$' AND length(kind) <= 100),
    queue               text NOT NULL CHECK (queue ~ '^[a-z][a-z0-9_-]*$' AND length(queue) <= 64),
    state               text NOT NULL DEFAULT 'available'
                        CHECK (state IN ('scheduled', 'available', 'running', 'retryable', 'completed', 'discarded', 'cancelled')),
    args                jsonb NOT NULL,
    -- 0 runs first, 9 last (Oban's convention).
    priority            smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
    attempt             integer NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts        integer NOT NULL CHECK (max_attempts BETWEEN 1 AND 1000),
    run_at              timestamptz NOT NULL DEFAULT now(),
    -- Unique while unfinished: see jobs_unique_idx.
    unique_key          text CHECK (length(unique_key) BETWEEN 1 AND 500),
    -- One entry per failed attempt: {attempt, at, kind: error|fatal|panic|timeout|rescued|unknown_kind|cancelled, error}.
    errors              jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(errors) = 'array'),
    worker_id           uuid,
    attempted_at        timestamptz,
    cancel_requested_at timestamptz,
    finalized_at        timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'running') = (worker_id IS NOT NULL)),
    CHECK ((state IN ('completed', 'discarded', 'cancelled')) = (finalized_at IS NOT NULL))
);
COMMENT ON TABLE jobs IS 'Durable jobs: enqueued in the caller''s transaction, claimed with SKIP LOCKED, kept after finishing until pruned.';

-- What workers claim: due jobs of one queue by priority, then age.
CREATE INDEX jobs_claim_idx ON jobs (queue, priority, run_at, id)
    WHERE state IN ('available', 'scheduled', 'retryable');
-- Unique jobs: one unfinished job per (organization, kind, key); finished jobs free the key.
CREATE UNIQUE INDEX jobs_unique_idx ON jobs (organization_id, kind, unique_key) NULLS NOT DISTINCT
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'available', 'running', 'retryable');
-- Rescue and cancellation look up running jobs by worker.
CREATE INDEX jobs_running_idx ON jobs (worker_id) WHERE state = 'running';
-- Pruning finds finished jobs by age.
CREATE INDEX jobs_finalized_idx ON jobs (finalized_at) WHERE finalized_at IS NOT NULL;
-- The jobs API lists a tenant's jobs newest first.
CREATE INDEX jobs_org_idx ON jobs (organization_id, id DESC);

CREATE TABLE job_workers (
    id           uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    hostname     text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE job_workers IS 'Live worker processes; a row whose heartbeat is older than the rescue interval is dead and its running jobs are rescued.';
CREATE INDEX job_workers_heartbeat_idx ON job_workers (heartbeat_at);

CREATE TABLE cron_ticks (
    name         text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 100),
    last_tick_at timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE cron_ticks IS 'The last tick of each static cron entry that was enqueued: compare-and-set makes each tick exactly once.';

CREATE TABLE job_diagnostics (
    id         uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    job_id     uuid NOT NULL,
    attempt    integer NOT NULL,
    marker     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE job_diagnostics IS 'Rows written by the diag.record smoke-test job kind (crash tests, operators checking a deployment).';
CREATE INDEX job_diagnostics_marker_idx ON job_diagnostics (marker, job_id);

-- Wake-ups and events, one NOTIFY per statement rather than per row.
--  zoark_jobs_ready:  '<queue> <epoch ms of the earliest run_at>' for each queue that gained claimable rows.
--  zoark_job_events:  JSON arrays of {id, organization_id, kind, queue, state, attempt} for tenant jobs.
CREATE FUNCTION jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
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
        SELECT jsonb_agg(jsonb_build_object('id', id, 'organization_id', organization_id, 'kind', kind,
                                            'queue', queue, 'state', state, 'attempt', attempt))::text AS payload
        FROM (SELECT *, (row_number() OVER ()) / 25 AS chunk FROM new_rows
              WHERE organization_id IS NOT NULL) t
        GROUP BY chunk
    LOOP
        PERFORM pg_notify('zoark_job_events', r.payload);
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify();
CREATE TRIGGER jobs_notify_update AFTER UPDATE ON jobs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION jobs_notify();
