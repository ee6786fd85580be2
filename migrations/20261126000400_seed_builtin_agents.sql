-- Every organization has one agent of each built-in kind (custom agents are created by users).
-- Agent schedules point at them; a new organization gets them on creation.

CREATE FUNCTION seed_builtin_agents() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO agents (organization_id, kind, name, description)
    SELECT NEW.id, kind, name, description
    FROM (VALUES
        ('task_monitor', 'Task monitor', 'Finds active tasks without activity for too long.'),
        ('task_escalator', 'Task escalator', 'Escalates stuck and critical tasks to their project leads.'),
        ('approval_nudger', 'Approval nudger', 'Reminds approvers of overdue approvals and escalates.'),
        ('timesheet_reminder', 'Timesheet reminder', 'Reminds the team to log their hours.'),
        ('team_coordinator', 'Team coordinator', 'Sends the team reminders within their working hours.'),
        ('document_indexer', 'Document indexer', 'Indexes uploaded documents for search.'),
        ('broadcast_sender', 'Broadcast sender', 'Sends scheduled broadcasts.')
    ) AS builtin (kind, name, description)
    ON CONFLICT DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER organizations_seed_builtin_agents AFTER INSERT ON organizations
    FOR EACH ROW EXECUTE FUNCTION seed_builtin_agents();

-- The organizations that exist already.
INSERT INTO agents (organization_id, kind, name, description)
SELECT o.id, b.kind, b.name, b.description
FROM organizations o
CROSS JOIN (VALUES
    ('task_monitor', 'Task monitor', 'Finds active tasks without activity for too long.'),
    ('task_escalator', 'Task escalator', 'Escalates stuck and critical tasks to their project leads.'),
    ('approval_nudger', 'Approval nudger', 'Reminds approvers of overdue approvals and escalates.'),
    ('timesheet_reminder', 'Timesheet reminder', 'Reminds the team to log their hours.'),
    ('team_coordinator', 'Team coordinator', 'Sends the team reminders within their working hours.'),
    ('document_indexer', 'Document indexer', 'Indexes uploaded documents for search.'),
    ('broadcast_sender', 'Broadcast sender', 'Sends scheduled broadcasts.')
) AS b (kind, name, description)
ON CONFLICT DO NOTHING;
