-- The question answerer joins the built-in kinds: `POST /api/v1/ask` records a run of it, which
-- searches the documents the asker may read and has the LLM answer from the passages found, each
-- claim citing its document and chunk. It has no schedule: every run is someone's question.

ALTER TABLE agents DROP CONSTRAINT agents_kind_check;
ALTER TABLE agents ADD CONSTRAINT agents_kind_check
    CHECK (kind IN ('task_monitor', 'task_escalator', 'approval_nudger', 'timesheet_reminder',
                    'team_coordinator', 'document_indexer', 'broadcast_sender', 'email_parser',
                    'question_answerer', 'custom'));

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

-- An organization whose custom agent has the name already gets the built-in under another.
INSERT INTO agents (organization_id, kind, name, description)
SELECT o.id, 'question_answerer',
       CASE WHEN EXISTS (SELECT 1 FROM agents a
                         WHERE a.organization_id = o.id AND a.name = 'Question answerer')
            THEN 'Question answerer (built-in)' ELSE 'Question answerer' END,
       'Answers questions from the documents, citing them.'
FROM organizations o
ON CONFLICT DO NOTHING;
