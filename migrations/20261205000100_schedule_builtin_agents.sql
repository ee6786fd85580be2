-- The approval nudges and the hourly reminder pass leave the static cron table: they become runs
-- of the approval nudger, the team coordinator (due-task reminders) and the timesheet reminder,
-- each on a schedule of its own in every organization, beside daily schedules for the task
-- monitor and the escalator and a ten-minute one for the document indexer. A tick records a
-- run only when the organization has something to do. The records that keep an email from
-- being sent twice (`reminders_sent`, `approval_steps.last_nudged_at`) are the ones the static
-- jobs used, so nothing is sent again across the change.

-- The email parser (inbound email: `20261205000200_parse_inbound_email`) and the question
-- answerer (`POST /api/v1/ask`: it searches the documents the asker may read and has the LLM
-- answer from the passages found, each claim citing its document and chunk; no schedule, every
-- run is someone's question) join the built-in kinds.
ALTER TABLE agents DROP CONSTRAINT agents_kind_check;
ALTER TABLE agents ADD CONSTRAINT agents_kind_check
    CHECK (kind IN ('task_monitor', 'task_escalator', 'approval_nudger', 'timesheet_reminder',
                    'team_coordinator', 'document_indexer', 'broadcast_sender', 'email_parser',
                    'question_answerer', 'custom'));

CREATE FUNCTION seed_builtin_agent_schedules(org uuid) RETURNS void LANGUAGE sql AS $$
    INSERT INTO agent_schedules (organization_id, agent_id, cron_expression, time_zone, next_run_at)
    SELECT a.organization_id, a.id, d.cron_expression, 'UTC', now()
    FROM agents a
    JOIN (VALUES
        ('approval_nudger', '*/5 * * * *'),
        ('team_coordinator', '15 * * * *'),
        ('timesheet_reminder', '15 * * * *'),
        ('task_monitor', '0 8 * * *'),
        ('task_escalator', '30 8 * * *'),
        ('document_indexer', '*/10 * * * *')
    ) AS d (kind, cron_expression) ON d.kind = a.kind
    WHERE a.organization_id = org
      AND NOT EXISTS (SELECT 1 FROM agent_schedules s
                      WHERE s.organization_id = a.organization_id AND s.agent_id = a.id);
$$;

CREATE OR REPLACE FUNCTION seed_builtin_agents() RETURNS trigger LANGUAGE plpgsql AS $$
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
        ('broadcast_sender', 'Broadcast sender', 'Sends scheduled broadcasts.'),
        ('email_parser', 'Email parser', 'Turns inbound emails into tasks and invoice drafts.'),
        ('question_answerer', 'Question answerer', 'Answers questions from the documents, citing them.')
    ) AS builtin (kind, name, description)
    ON CONFLICT DO NOTHING;
    PERFORM seed_builtin_agent_schedules(NEW.id);
    RETURN NEW;
END
$$;

-- The new kinds for existing organizations; one whose custom agent has the name already gets
-- the built-in under another.
INSERT INTO agents (organization_id, kind, name, description)
SELECT o.id, b.kind,
       CASE WHEN EXISTS (SELECT 1 FROM agents a WHERE a.organization_id = o.id AND a.name = b.name)
            THEN b.name || ' (built-in)' ELSE b.name END,
       b.description
FROM organizations o, (VALUES
    ('email_parser', 'Email parser', 'Turns inbound emails into tasks and invoice drafts.'),
    ('question_answerer', 'Question answerer', 'Answers questions from the documents, citing them.')
) AS b (kind, name, description)
ON CONFLICT DO NOTHING;

SELECT seed_builtin_agent_schedules(id) FROM organizations;

DELETE FROM cron_ticks WHERE name IN ('approvals.nudge_overdue', 'reminders.send');

-- Each organization's nudger looks at its own overdue steps.
CREATE INDEX approval_steps_org_overdue_idx ON approval_steps (organization_id, due_at) WHERE status = 'pending';
