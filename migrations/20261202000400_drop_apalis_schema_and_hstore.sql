-- apalis-postgres's own schema goes. The job engine keeps its jobs in Zoark's tables (`jobs`,
-- `job_workers`, `cron_ticks`); nothing ever read or wrote the `apalis` schema that
-- apalis-postgres's migrations created (its jobs and workers tables, functions, trigger and its
-- own `_sqlx_migrations`). `migrate_all` no longer applies those migrations, so a fresh database
-- never gets the schema; this removes it from existing ones.
DROP SCHEMA IF EXISTS apalis CASCADE;

-- hstore was there only for `apalis.jobs.metadata`; a fresh database needs no hstore. Dropping
-- an extension takes its owner (or a superuser), not the database's owner. hstore is a trusted
-- extension, so where apalis-postgres's migration created it, the application role owns it and
-- it is dropped here. Where an administrator created it (a superuser, e.g. in `template1`, as
-- `cargo xtask` used to), the application role may not drop it: it is left in place, unused and
-- harmless, for the administrator to drop (`DROP EXTENSION hstore`). It is also kept, with a
-- notice, when anything else still uses it (the drop is not CASCADE).
DO $$
DECLARE
    owner regrole;
BEGIN
    SELECT extowner::regrole INTO owner FROM pg_extension WHERE extname = 'hstore';
    IF owner IS NULL THEN
        RETURN;
    END IF;
    IF NOT pg_has_role(owner, 'USAGE') THEN
        RAISE NOTICE 'hstore is no longer needed but is kept: it belongs to %, not to %', owner, current_user;
        RETURN;
    END IF;
    BEGIN
        DROP EXTENSION hstore;
    EXCEPTION WHEN dependent_objects_still_exist THEN
        RAISE NOTICE 'hstore is no longer needed by Zoark but is kept: other objects use it';
    END;
END
$$;
