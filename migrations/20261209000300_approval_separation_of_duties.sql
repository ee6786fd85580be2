-- Separation of duties: whoever started an approval may not approve it, unless its template
-- says otherwise. The instance keeps the rule it started with (templates change).
ALTER TABLE approval_pipeline_templates ADD COLUMN allow_self_approval boolean NOT NULL DEFAULT false;
ALTER TABLE approval_instances ADD COLUMN allow_self_approval boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN approval_pipeline_templates.allow_self_approval IS 'Whether whoever starts an approval from this template may approve its steps.';
COMMENT ON COLUMN approval_instances.allow_self_approval IS 'Copied from the template when the approval started.';
