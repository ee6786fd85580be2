-- A step becomes pending only when the one before it is approved, so it keeps its own SLA (to
-- set `due_at` then) and the moment it started waiting (the nudge email says since when).

ALTER TABLE approval_steps
    ADD COLUMN sla interval NOT NULL DEFAULT interval '2 days' CHECK (sla > interval '0'),
    ADD COLUMN pending_since timestamptz;

COMMENT ON COLUMN approval_steps.sla IS 'Copied from the stage: due_at = pending_since + sla.';
COMMENT ON COLUMN approval_steps.pending_since IS 'When the step became the pending one.';
