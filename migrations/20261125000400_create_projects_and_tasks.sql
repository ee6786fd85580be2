-- Team directory, projects, the task board, work history and assignments.

CREATE TABLE team_members (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    user_id         uuid REFERENCES users (id) ON DELETE SET NULL, -- when the person also logs in
    name            text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    email           text NOT NULL CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 320),
    role            text CHECK (length(role) <= 100),
    department      text CHECK (length(department) <= 100),
    avatar_url      text CHECK (avatar_url ~ '^https?://' AND length(avatar_url) <= 2048),
    time_zone       text NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    work_starts_at  time,
    work_ends_at    time,
    -- ISO weekdays, 1 = Monday.
    working_days    smallint[] NOT NULL DEFAULT '{1,2,3,4,5}' CHECK (working_days <@ '{1,2,3,4,5,6,7}'::smallint[]),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id),
    CHECK ((work_starts_at IS NULL) = (work_ends_at IS NULL)),
    CHECK (work_starts_at IS NULL OR work_starts_at < work_ends_at)
);
COMMENT ON TABLE team_members IS 'People in the team directory, with working hours in their own time zone.';
CREATE UNIQUE INDEX team_members_email_key ON team_members (organization_id, lower(email));
CREATE INDEX team_members_org_idx ON team_members (organization_id, created_at DESC, id DESC);
CREATE INDEX team_members_user_idx ON team_members (user_id);
CREATE TRIGGER team_members_updated_at BEFORE UPDATE ON team_members FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE projects (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    name            text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 200),
    description     text CHECK (length(description) <= 10000),
    -- Computed from tasks by the application (health and done-per-week), cached for lists.
    health_score    real CHECK (health_score BETWEEN 0 AND 100),
    velocity        real CHECK (velocity >= 0),
    metrics_computed_at timestamptz,
    archived_at     timestamptz,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id)
);
COMMENT ON TABLE projects IS 'Projects; health_score and velocity are computed, never client-set.';
CREATE INDEX projects_org_idx ON projects (organization_id, created_at DESC, id DESC);
CREATE INDEX projects_org_health_idx ON projects (organization_id, health_score);
CREATE INDEX projects_created_by_idx ON projects (created_by);
CREATE TRIGGER projects_updated_at BEFORE UPDATE ON projects FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE project_members (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    project_id      uuid NOT NULL,
    team_member_id  uuid NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, team_member_id) REFERENCES team_members (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, project_id, team_member_id)
);
COMMENT ON TABLE project_members IS 'Team members working on a project.';
CREATE INDEX project_members_member_idx ON project_members (organization_id, team_member_id);

CREATE TABLE tasks (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    project_id      uuid NOT NULL,
    title           text NOT NULL CHECK (length(btrim(title)) BETWEEN 1 AND 500),
    description     text CHECK (length(description) <= 20000),
    status          text NOT NULL DEFAULT 'backlog' CHECK (status IN ('backlog', 'active', 'done', 'gap')),
    -- Stable order within a board column: fractional positions, midpoint on moves.
    position        numeric NOT NULL DEFAULT 0,
    contact_person  text CHECK (length(contact_person) <= 200),
    people_count    integer NOT NULL DEFAULT 0 CHECK (people_count >= 0),
    process_stage   text NOT NULL DEFAULT 'planning' CHECK (process_stage IN ('planning', 'in_progress', 'review', 'blocked', 'completed')),
    health_status   text NOT NULL DEFAULT 'healthy' CHECK (health_status IN ('healthy', 'at_risk', 'critical')),
    due_at          timestamptz,
    -- Last meaningful activity (stuck detection); unlike updated_at, escalations do not reset it.
    last_activity_at timestamptz NOT NULL DEFAULT now(),
    completed_at    timestamptz,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, project_id) REFERENCES projects (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, id),
    CHECK ((status = 'done') = (completed_at IS NOT NULL))
);
COMMENT ON TABLE tasks IS 'Task board cards with details and health.';
CREATE INDEX tasks_org_idx ON tasks (organization_id, created_at DESC, id DESC);
CREATE INDEX tasks_project_board_idx ON tasks (organization_id, project_id, status, position);
CREATE INDEX tasks_org_status_idx ON tasks (organization_id, status, updated_at DESC);
CREATE INDEX tasks_org_health_idx ON tasks (organization_id, health_status);
CREATE INDEX tasks_org_updated_idx ON tasks (organization_id, updated_at DESC);
CREATE INDEX tasks_stuck_idx ON tasks (organization_id, last_activity_at) WHERE status = 'active';
CREATE INDEX tasks_completed_idx ON tasks (organization_id, project_id, completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX tasks_created_by_idx ON tasks (created_by);
CREATE TRIGGER tasks_updated_at BEFORE UPDATE ON tasks FOR EACH ROW EXECUTE FUNCTION set_updated_at();

CREATE TABLE task_work_history (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    task_id         uuid NOT NULL,
    actor_user_id   uuid REFERENCES users (id) ON DELETE SET NULL,
    action          text NOT NULL CHECK (length(action) BETWEEN 1 AND 100),
    details         jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(details) = 'object'),
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, task_id) REFERENCES tasks (organization_id, id) ON DELETE CASCADE
);
COMMENT ON TABLE task_work_history IS 'Append-only history of work on a task.';
CREATE INDEX task_work_history_task_idx ON task_work_history (organization_id, task_id, occurred_at DESC);
CREATE INDEX task_work_history_actor_idx ON task_work_history (actor_user_id);
CREATE TRIGGER task_work_history_append_only BEFORE UPDATE ON task_work_history
    FOR EACH ROW EXECUTE FUNCTION reject_modification('actor_user_id');

CREATE TABLE task_assignments (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    task_id         uuid NOT NULL,
    team_member_id  uuid NOT NULL,
    assigned_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    assigned_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, task_id) REFERENCES tasks (organization_id, id) ON DELETE CASCADE,
    FOREIGN KEY (organization_id, team_member_id) REFERENCES team_members (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, task_id, team_member_id)
);
COMMENT ON TABLE task_assignments IS 'Which team members a task is assigned to.';
CREATE INDEX task_assignments_member_idx ON task_assignments (organization_id, team_member_id);
CREATE INDEX task_assignments_assigned_by_idx ON task_assignments (assigned_by);

-- Uploaded files (team documents, invoice PDFs) live in object storage; this is their metadata.
CREATE TABLE stored_files (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    storage_key     text NOT NULL UNIQUE,
    filename        text NOT NULL CHECK (length(filename) BETWEEN 1 AND 255),
    content_type    text NOT NULL CHECK (length(content_type) <= 255),
    size_bytes      bigint NOT NULL CHECK (size_bytes >= 0),
    sha256          bytea NOT NULL CHECK (length(sha256) = 32),
    uploaded_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, id)
);
COMMENT ON TABLE stored_files IS 'Metadata of files in object storage (local directory or S3).';
CREATE INDEX stored_files_org_idx ON stored_files (organization_id, created_at DESC);
CREATE INDEX stored_files_uploaded_by_idx ON stored_files (uploaded_by);

CREATE TABLE team_documents (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL,
    team_member_id  uuid NOT NULL,
    file_id         uuid NOT NULL,
    name            text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 255),
    kind            text NOT NULL DEFAULT 'other' CHECK (kind IN ('timesheet', 'report', 'contract', 'other')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, team_member_id) REFERENCES team_members (organization_id, id) ON DELETE CASCADE,
    -- The file row is deleted by the application after the object; never silently.
    FOREIGN KEY (organization_id, file_id) REFERENCES stored_files (organization_id, id) ON DELETE RESTRICT
);
COMMENT ON TABLE team_documents IS 'Documents of a team member (timesheets, reports).';
CREATE INDEX team_documents_member_idx ON team_documents (organization_id, team_member_id, created_at DESC);
CREATE INDEX team_documents_file_idx ON team_documents (organization_id, file_id);
