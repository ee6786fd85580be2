-- Paused queues: an organization's admin pauses that organization's jobs in a queue; a platform
-- operator pauses a whole queue for everyone (`organization_id` NULL, `zoark-worker queue
-- pause`). Workers claim nothing a pause covers; running jobs finish. Resuming wakes the workers
-- of the queue (the same `zoark_jobs_ready` notification a new job sends).

CREATE TABLE queue_pauses (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    queue           text NOT NULL CHECK (queue ~ '^[a-z][a-z0-9_-]*$' AND length(queue) <= 64),
    -- NULL: the whole queue, every organization's jobs and the platform's.
    organization_id uuid REFERENCES organizations (id) ON DELETE CASCADE,
    paused_by       uuid REFERENCES users (id) ON DELETE SET NULL,
    paused_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (queue, organization_id)
);
COMMENT ON TABLE queue_pauses IS 'Queues paused for one organization, or for everyone (organization_id NULL).';
CREATE INDEX queue_pauses_organization_idx ON queue_pauses (organization_id);
CREATE INDEX queue_pauses_paused_by_idx ON queue_pauses (paused_by);

ALTER TABLE queue_pauses ENABLE ROW LEVEL SECURITY;
ALTER TABLE queue_pauses FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON queue_pauses
    USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()));

CREATE FUNCTION queue_pauses_resumed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('zoark_jobs_ready', OLD.queue || ' ' || (extract(epoch FROM now()) * 1000)::bigint);
    RETURN NULL;
END
$$;
CREATE TRIGGER queue_pauses_resumed AFTER DELETE ON queue_pauses
    FOR EACH ROW EXECUTE FUNCTION queue_pauses_resumed();
