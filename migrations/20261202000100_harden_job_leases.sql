-- The job engine, round two: every running attempt gets a deadline, a job may carry its own
-- timeout, and a worker's lease remembers since when it has been held without a break.

-- `timeout_ms`: a per-job timeout set at enqueue (NULL: the kind's own). The worker caps it by
-- `ZOARK_JOBS_MAX_TIMEOUT_SECS`.
-- `deadline_at`: set by the claim to now + the attempt's timeout + the rescue window. A running
-- attempt past it has lost its outcome somewhere (a worker whose completer could not write it, a
-- handler that ignores its timeout); any worker's heartbeat then fails it as a timeout.
ALTER TABLE jobs
    ADD COLUMN timeout_ms integer CHECK (timeout_ms BETWEEN 1 AND 604800000),
    ADD COLUMN deadline_at timestamptz,
    ADD CONSTRAINT jobs_deadline_only_while_running CHECK (deadline_at IS NULL OR state = 'running');
COMMENT ON COLUMN jobs.timeout_ms IS 'Per-job timeout in ms (NULL: the kind''s own), capped by the worker''s configuration.';
COMMENT ON COLUMN jobs.deadline_at IS 'While running: when any worker may fail the attempt as timed out (timeout + rescue window).';

-- `lease_since`: when the worker's current unbroken lease began (registration, or the first
-- heartbeat after its lease lapsed). A worker rescues others only once its own lease is older than
-- the rescue window: after a database outage every lease looks stale, and this keeps workers
-- from rescuing each other's jobs before each has re-registered and written the outcomes it kept
-- in memory.
ALTER TABLE job_workers ADD COLUMN lease_since timestamptz NOT NULL DEFAULT now();
COMMENT ON COLUMN job_workers.lease_since IS 'Start of the current unbroken lease; rescuing needs a lease older than the rescue window.';
