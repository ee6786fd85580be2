-- Autonomous agents: built-in and custom definitions, LLM credentials, schedules, runs with
-- their steps, and the activity feed.

CREATE TABLE llm_credentials (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    base_url        text NOT NULL CHECK (base_url ~ '^https?://'),
    api_key_ciphertext bytea NOT NULL,
    default_model   text NOT NULL CHECK (length(default_model) BETWEEN 1 AND 200),
    last_used_at    timestamptz,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name),
    UNIQUE (organization_id, id)
);
COMMENT ON TABLE llm_credentials IS 'OpenAI-compatible provider keys of an organization, sealed at rest.';
CREATE INDEX llm_credentials_created_by_idx ON llm_credentials (created_by);
CREATE TRIGGER llm_credentials_updated_at BEFORE UPDATE ON llm_credentials FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE agents (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    -- Built-in kinds have code behind them; 'custom' agents are prompt + tools.
    kind            text NOT NULL CHECK (kind IN ('task_monitor', 'task_escalator', 'approval_nudger', 'timesheet_reminder',
                                                  'team_coordinator', 'document_indexer', 'broadcast_sender', 'custom')),
    name            text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    description     text CHECK (length(description) <= 5000),
    role            text CHECK (length(role) <= 2000),
    goal            text CHECK (length(goal) <= 5000),
    instructions    text CHECK (length(instructions) <= 50000),
    model           text CHECK (length(model) <= 200),
    llm_credential_id uuid,
    tools           text[] NOT NULL DEFAULT '{}',
    config          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(config) = 'object'),
    enabled         boolean NOT NULL DEFAULT true,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, llm_credential_id) REFERENCES llm_credentials (organization_id, id) ON DELETE RESTRICT,
    UNIQUE (organization_id, id),
    CHECK (kind <> 'custom' OR (instructions IS NOT NULL AND goal IS NOT NULL))
);
COMMENT ON TABLE agents IS 'Agents of an organization: built-in kinds and custom prompt-and-tools agents.';
CREATE UNIQUE INDEX agents_builtin_key ON agents (organization_id, kind) WHERE kind <> 'custom';
CREATE INDEX agents_org_idx ON agents (organization_id, created_at DESC, id DESC);
CREATE INDEX agents_credential_idx ON agents (organization_id, llm_credential_id);
CREATE INDEX agents_created_by_idx ON agents (created_by);
CREATE TRIGGER agents_updated_at BEFORE UPDATE ON agents FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE agent_schedules (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    agent_id        uuid NOT NULL,
    cron_expression text NOT NULL CHECK (length(cron_expression) BETWEEN 9 AND 200),
    time_zone       text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    enabled         boolean NOT NULL DEFAULT true,
    next_run_at     timestamptz,
    last_run_at     timestamptz,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, agent_id) REFERENCES agents (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, id),
    CHECK (NOT enabled OR next_run_at IS NOT NULL)
);
COMMENT ON TABLE agent_schedules IS 'Cron schedules (with time zone) the scheduler turns into agent runs.';
CREATE INDEX agent_schedules_due_idx ON agent_schedules (next_run_at) WHERE enabled;
CREATE INDEX agent_schedules_agent_idx ON agent_schedules (organization_id, agent_id);
CREATE INDEX agent_schedules_org_idx ON agent_schedules (organization_id, created_at DESC, id DESC);
CREATE INDEX agent_schedules_created_by_idx ON agent_schedules (created_by);
CREATE TRIGGER agent_schedules_updated_at BEFORE UPDATE ON agent_schedules FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE agent_runs (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    agent_id        uuid NOT NULL,
    schedule_id     uuid,
    trigger         text NOT NULL CHECK (trigger IN ('schedule', 'manual', 'event', 'api')),
    triggered_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    status          text NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    input           jsonb NOT NULL DEFAULT '{}',
    output          jsonb,
    error           text,
    tokens_in       integer NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out      integer NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    cost_micros     bigint NOT NULL DEFAULT 0 CHECK (cost_micros >= 0), -- USD millionths
    started_at      timestamptz,
    finished_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, agent_id) REFERENCES agents (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, schedule_id) REFERENCES agent_schedules (organization_id, id) ON DELETE SET NULL (schedule_id),
    UNIQUE (organization_id, id),
    CHECK ((status IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL))
);
COMMENT ON TABLE agent_runs IS 'One execution of an agent, with usage and cost.';
CREATE INDEX agent_runs_agent_idx ON agent_runs (organization_id, agent_id, created_at DESC);
CREATE INDEX agent_runs_org_idx ON agent_runs (organization_id, created_at DESC, id DESC);
CREATE INDEX agent_runs_status_idx ON agent_runs (organization_id, status);
CREATE INDEX agent_runs_schedule_idx ON agent_runs (organization_id, schedule_id);
CREATE INDEX agent_runs_triggered_by_idx ON agent_runs (triggered_by);

CREATE TABLE agent_run_steps (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    run_id          uuid NOT NULL,
    position        integer NOT NULL CHECK (position >= 1),
    kind            text NOT NULL CHECK (kind IN ('llm_call', 'tool_call', 'email', 'note')),
    -- A rerun of the job skips a step whose key is already recorded as succeeded.
    idempotency_key text NOT NULL,
    status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
    request         jsonb,
    response        jsonb,
    error           text,
    tokens_in       integer NOT NULL DEFAULT 0 CHECK (tokens_in >= 0),
    tokens_out      integer NOT NULL DEFAULT 0 CHECK (tokens_out >= 0),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    FOREIGN KEY (organization_id, run_id) REFERENCES agent_runs (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, run_id, position),
    UNIQUE (organization_id, idempotency_key)
);
COMMENT ON TABLE agent_run_steps IS 'Ordered steps of a run (LLM and tool calls), recorded before their effects.';

CREATE TABLE agent_activity (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    agent_id        uuid,
    run_id          uuid,
    action          text NOT NULL CHECK (action IN ('task_stuck_alert', 'task_escalated', 'approval_nudge', 'timesheet_reminder',
                                                    'team_reminder', 'document_indexed', 'broadcast_sent', 'email_parsed',
                                                    'invoice_processed', 'custom')),
    status          text NOT NULL CHECK (status IN ('in_progress', 'success', 'failed')),
    summary         text NOT NULL CHECK (length(summary) <= 2000),
    context         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(context) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, agent_id) REFERENCES agents (organization_id, id) ON DELETE SET NULL (agent_id),
    FOREIGN KEY (organization_id, run_id) REFERENCES agent_runs (organization_id, id) ON DELETE SET NULL (run_id)
);
COMMENT ON TABLE agent_activity IS 'The activity feed: what agents noticed and did.';
CREATE INDEX agent_activity_org_idx ON agent_activity (organization_id, created_at DESC, id DESC);
CREATE INDEX agent_activity_agent_idx ON agent_activity (organization_id, agent_id, created_at DESC);
CREATE INDEX agent_activity_run_idx ON agent_activity (organization_id, run_id);
CREATE INDEX agent_activity_action_idx ON agent_activity (organization_id, action, created_at DESC);
