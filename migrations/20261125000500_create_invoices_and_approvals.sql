-- Invoices and approval pipelines: templates with ordered stages, instances on any approvable
-- item, and the steps people approve or reject.

CREATE TABLE invoices (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    project_id      uuid NOT NULL,
    number          text CHECK (length(number) <= 100),
    vendor          text CHECK (length(vendor) <= 200),
    amount_minor    bigint NOT NULL CHECK (amount_minor >= 0), -- in the currency's minor unit
    currency        char(3) NOT NULL DEFAULT 'USD' CHECK (currency ~ '^[A-Z]{3}$'),
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('draft', 'pending', 'approved', 'rejected', 'paid', 'void')),
    issued_on       date,
    due_on          date,
    pdf_file_id     uuid,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, pdf_file_id) REFERENCES stored_files (organization_id, id) ON DELETE RESTRICT,
    UNIQUE (organization_id, id),
    CHECK (due_on IS NULL OR issued_on IS NULL OR due_on >= issued_on)
);
COMMENT ON TABLE invoices IS 'Invoices with an optional PDF, routed through an approval pipeline.';
CREATE INDEX invoices_org_idx ON invoices (organization_id, created_at DESC, id DESC);
CREATE INDEX invoices_project_idx ON invoices (organization_id, project_id, created_at DESC);
CREATE INDEX invoices_status_idx ON invoices (organization_id, status);
CREATE INDEX invoices_pdf_idx ON invoices (organization_id, pdf_file_id);
CREATE INDEX invoices_created_by_idx ON invoices (created_by);
CREATE UNIQUE INDEX invoices_number_key ON invoices (organization_id, number) WHERE number IS NOT NULL;
CREATE TRIGGER invoices_updated_at BEFORE UPDATE ON invoices FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE approval_pipeline_templates (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    project_id      uuid, -- NULL: usable in every project
    name            text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    description     text CHECK (length(description) <= 5000),
    subject_type    text NOT NULL DEFAULT 'invoice' CHECK (subject_type IN ('invoice', 'task', 'document')),
    archived_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, id)
);
COMMENT ON TABLE approval_pipeline_templates IS 'Reusable approval pipelines.';
CREATE INDEX approval_templates_org_idx ON approval_pipeline_templates (organization_id, created_at DESC, id DESC);
CREATE INDEX approval_templates_project_idx ON approval_pipeline_templates (organization_id, project_id);
CREATE TRIGGER approval_templates_updated_at BEFORE UPDATE ON approval_pipeline_templates FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE approval_pipeline_stages (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    template_id     uuid NOT NULL,
    position        smallint NOT NULL CHECK (position >= 1),
    name            text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    -- Who approves: a role of the organization, or a named person.
    approver_role   text CHECK (approver_role IN ('admin', 'manager', 'lead', 'member')),
    approver_user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    approver_email  text CHECK (approver_email ~ '^[^@\s]+@[^@\s]+$'),
    required_documents text[] NOT NULL DEFAULT '{}',
    sla             interval NOT NULL DEFAULT interval '2 days' CHECK (sla > interval '0'),
    nudge_every     interval NOT NULL DEFAULT interval '1 day' CHECK (nudge_every >= interval '1 hour'),
    escalate_after_nudges smallint NOT NULL DEFAULT 3 CHECK (escalate_after_nudges >= 1),
    escalate_to_role text CHECK (escalate_to_role IN ('admin', 'manager', 'lead')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, template_id) REFERENCES approval_pipeline_templates (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, template_id, position) DEFERRABLE INITIALLY DEFERRED, -- reordering swaps positions in one tx
    UNIQUE (organization_id, id),
    CHECK (num_nonnulls(approver_role, approver_user_id, approver_email) >= 1)
);
COMMENT ON TABLE approval_pipeline_stages IS 'Ordered stages of a pipeline template.';
CREATE INDEX approval_stages_approver_idx ON approval_pipeline_stages (approver_user_id);
CREATE TRIGGER approval_stages_updated_at BEFORE UPDATE ON approval_pipeline_stages FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE approval_instances (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    template_id     uuid,
    subject_type    text NOT NULL CHECK (subject_type IN ('invoice', 'task', 'document')),
    subject_id      uuid NOT NULL,
    status          text NOT NULL DEFAULT 'in_progress' CHECK (status IN ('in_progress', 'approved', 'rejected', 'cancelled')),
    started_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    -- The template may be edited or deleted later; the instance keeps its copied steps.
    FOREIGN KEY (organization_id, template_id) REFERENCES approval_pipeline_templates (organization_id, id) ON DELETE SET NULL (template_id),
    UNIQUE (organization_id, id),
    CHECK ((status = 'in_progress') = (completed_at IS NULL))
);
COMMENT ON TABLE approval_instances IS 'A pipeline running on one approvable item.';
CREATE INDEX approval_instances_org_idx ON approval_instances (organization_id, created_at DESC, id DESC);
CREATE INDEX approval_instances_subject_idx ON approval_instances (organization_id, subject_type, subject_id);
CREATE INDEX approval_instances_template_idx ON approval_instances (organization_id, template_id);
CREATE INDEX approval_instances_started_by_idx ON approval_instances (started_by);
CREATE UNIQUE INDEX approval_instances_one_active_key ON approval_instances (organization_id, subject_type, subject_id)
    WHERE status = 'in_progress';

CREATE TABLE approval_steps (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    instance_id     uuid NOT NULL,
    position        smallint NOT NULL CHECK (position >= 1),
    name            text NOT NULL,
    approver_role   text CHECK (approver_role IN ('admin', 'manager', 'lead', 'member')),
    approver_user_id uuid REFERENCES users (id) ON DELETE SET NULL,
    approver_email  text,
    required_documents text[] NOT NULL DEFAULT '{}',
    status          text NOT NULL DEFAULT 'waiting' CHECK (status IN ('waiting', 'pending', 'approved', 'rejected', 'skipped')),
    due_at          timestamptz,
    nudge_every     interval NOT NULL DEFAULT interval '1 day',
    escalate_after_nudges smallint NOT NULL DEFAULT 3,
    escalate_to_role text,
    last_nudged_at  timestamptz,
    nudge_count     integer NOT NULL DEFAULT 0 CHECK (nudge_count >= 0),
    escalated_at    timestamptz,
    decided_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    decided_at      timestamptz,
    comment         text CHECK (length(comment) <= 5000),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, instance_id) REFERENCES approval_instances (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, instance_id, position),
    CHECK ((status IN ('approved', 'rejected')) = (decided_at IS NOT NULL))
);
COMMENT ON TABLE approval_steps IS 'Steps of a running pipeline; only the current step is pending.';
CREATE INDEX approval_steps_overdue_idx ON approval_steps (due_at) WHERE status = 'pending';
CREATE INDEX approval_steps_approver_idx ON approval_steps (approver_user_id) WHERE status = 'pending';
CREATE INDEX approval_steps_approver_all_idx ON approval_steps (approver_user_id);
CREATE INDEX approval_steps_decided_by_idx ON approval_steps (decided_by);
CREATE TRIGGER approval_steps_updated_at BEFORE UPDATE ON approval_steps FOR EACH ROW EXECUTE FUNCTION set_updated_at();
