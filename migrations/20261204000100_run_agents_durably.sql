-- Agent runs as durable chains of steps (`agents.run` jobs): a run may end out of budget, may
-- be asked to stop, and a schedule never has two unfinished runs; steps may wait and carry
-- their cost; custom agents bound their steps and tokens; organizations set a monthly LLM
-- budget that each LLM step reserves against before it starts.

ALTER TABLE agent_runs DROP CONSTRAINT agent_runs_status_check;
ALTER TABLE agent_runs ADD CONSTRAINT agent_runs_status_check
    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'budget_exhausted'));
ALTER TABLE agent_runs DROP CONSTRAINT agent_runs_check;
ALTER TABLE agent_runs ADD CONSTRAINT agent_runs_finished_check
    CHECK ((status IN ('succeeded', 'failed', 'cancelled', 'budget_exhausted')) = (finished_at IS NOT NULL));
-- Set by `POST /agent-runs/{id}/cancel` on a running run: its job stops before the next step.
ALTER TABLE agent_runs ADD COLUMN cancel_requested_at timestamptz;
-- The role of whoever started the run (a user or an API key): the run never acts above it.
ALTER TABLE agent_runs ADD COLUMN max_role text CHECK (max_role IN ('admin', 'manager', 'lead', 'member', 'viewer'));
-- A schedule's tick that finds its previous run unfinished is skipped (and recorded).
CREATE UNIQUE INDEX agent_runs_one_unfinished_per_schedule ON agent_runs (organization_id, schedule_id)
    WHERE status IN ('queued', 'running');
CREATE INDEX agent_runs_trigger_idx ON agent_runs (organization_id, trigger, id DESC);
-- Retention: runs (with their steps) finished longer ago than the configured days are pruned.
CREATE INDEX agent_runs_finished_at_idx ON agent_runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX agent_activity_created_at_idx ON agent_activity (created_at);

ALTER TABLE agent_run_steps DROP CONSTRAINT agent_run_steps_kind_check;
ALTER TABLE agent_run_steps ADD CONSTRAINT agent_run_steps_kind_check
    CHECK (kind IN ('llm_call', 'tool_call', 'email', 'wait', 'note'));
ALTER TABLE agent_run_steps ADD COLUMN cost_micros bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0);
-- What an unfinished LLM step holds of its month's budget (released when it finishes).
ALTER TABLE agent_run_steps ADD COLUMN reserved_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0);

ALTER TABLE agent_activity DROP CONSTRAINT agent_activity_action_check;
ALTER TABLE agent_activity ADD CONSTRAINT agent_activity_action_check
    CHECK (action IN ('task_stuck_alert', 'task_escalated', 'approval_nudge', 'timesheet_reminder',
                      'team_reminder', 'document_indexed', 'broadcast_sent', 'email_parsed',
                      'invoice_processed', 'custom', 'run_skipped', 'run_finished', 'budget_exhausted'));

ALTER TABLE agents ADD COLUMN max_steps integer NOT NULL DEFAULT 10 CHECK (max_steps BETWEEN 1 AND 100);
ALTER TABLE agents ADD COLUMN max_tokens integer CHECK (max_tokens BETWEEN 1 AND 1000000);

-- What a usage record cost (USD millionths), from the configured per-model price table.
ALTER TABLE usage_records ADD COLUMN cost_micros bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0);

-- USD millionths an organization's LLM steps may cost per calendar month (UTC); NULL: no limit.
ALTER TABLE organizations ADD COLUMN llm_monthly_budget_micros bigint CHECK (llm_monthly_budget_micros >= 0);

CREATE TABLE llm_budget_months (
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    month           date NOT NULL CHECK (extract(day FROM month) = 1),
    -- Held by LLM steps under way: their estimated cost.
    reserved_micros bigint NOT NULL DEFAULT 0 CHECK (reserved_micros >= 0),
    -- What finished LLM steps cost.
    spent_micros    bigint NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    PRIMARY KEY (organization_id, month)
);
COMMENT ON TABLE llm_budget_months IS 'Each organization''s LLM spending per month, reserved before each step so that concurrent runs cannot overspend.';
ALTER TABLE llm_budget_months ENABLE ROW LEVEL SECURITY;
ALTER TABLE llm_budget_months FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON llm_budget_months
    USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()));

-- Every run and step state change on `zoark_agent_events`, for the API's event stream (as
-- `zoark_job_events` carries jobs'): one JSON object per change, sent at commit.
CREATE FUNCTION agent_runs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('zoark_agent_events', jsonb_build_object(
        'type', 'agent_run', 'id', NEW.id, 'organization_id', NEW.organization_id,
        'agent_id', NEW.agent_id, 'trigger', NEW.trigger, 'status', NEW.status,
        'cancel_requested', NEW.cancel_requested_at IS NOT NULL, 'error', left(NEW.error, 500))::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER agent_runs_inserted AFTER INSERT ON agent_runs
    FOR EACH ROW EXECUTE FUNCTION agent_runs_notify();
CREATE TRIGGER agent_runs_changed AFTER UPDATE ON agent_runs
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status
                       OR OLD.cancel_requested_at IS DISTINCT FROM NEW.cancel_requested_at)
    EXECUTE FUNCTION agent_runs_notify();

CREATE FUNCTION agent_run_steps_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('zoark_agent_events', jsonb_build_object(
        'type', 'agent_step', 'id', NEW.id, 'organization_id', NEW.organization_id,
        'run_id', NEW.run_id, 'position', NEW.position, 'kind', NEW.kind, 'status', NEW.status,
        'error', left(NEW.error, 500))::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER agent_run_steps_inserted AFTER INSERT ON agent_run_steps
    FOR EACH ROW EXECUTE FUNCTION agent_run_steps_notify();
CREATE TRIGGER agent_run_steps_changed AFTER UPDATE ON agent_run_steps
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION agent_run_steps_notify();
