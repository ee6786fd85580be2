-- The reminders the scheduler's hourly pass has sent: one row per kind, subject, person and
-- period, so a rerun (or a second scheduler replica's pass) never sends a reminder twice.

CREATE TABLE reminders_sent (
    id              uuid PRIMARY KEY DEFAULT uuid_generate_v7(),
    organization_id uuid NOT NULL REFERENCES organizations (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('task_due', 'timesheet')),
    -- The task for `task_due`; the team member for `timesheet`.
    subject_id      uuid NOT NULL,
    team_member_id  uuid NOT NULL,
    -- The due time of the task, or the ISO week (`2026-W48`) of the timesheet.
    period          text NOT NULL CHECK (length(period) BETWEEN 1 AND 64),
    sent_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (organization_id, team_member_id) REFERENCES team_members (organization_id, id) ON DELETE CASCADE,
    UNIQUE (organization_id, kind, subject_id, team_member_id, period)
);
COMMENT ON TABLE reminders_sent IS 'Reminders sent by the hourly pass, once per subject, person and period.';
CREATE INDEX reminders_sent_member_idx ON reminders_sent (organization_id, team_member_id);
CREATE INDEX reminders_sent_sent_at_idx ON reminders_sent (sent_at);

ALTER TABLE reminders_sent ENABLE ROW LEVEL SECURITY;
ALTER TABLE reminders_sent FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON reminders_sent
    USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()));
