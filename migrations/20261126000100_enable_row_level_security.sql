-- Row-level security: the second wall behind the API's `WHERE organization_id = …`.
--
-- The API runs each tenant request in a transaction that sets `zoark.organization_id`
-- (`SET LOCAL`); its connections carry no other privilege, so a query that forgets its tenant
-- filter sees no other organization's rows, and writes into another organization fail.
-- Workers, the scheduler, migrations and the API's authentication step (which must find a user
-- by email or a key by digest before any tenant is known) set `zoark.rls = 'bypass'`: the
-- platform processes on their connections, authentication per transaction.
--
-- FORCE applies the policies to the tables' owner too (the application connects as the owner
-- on managed Postgres, where creating roles is not possible). One exception: `jobs` is not
-- forced, because Postgres refuses `COPY FROM` into a table whose policies apply, and bulk
-- enqueue streams jobs with COPY. Its policy is in place for a non-owner role; the API's job
-- queries filter by organization themselves (and are tested across tenants).

CREATE FUNCTION zoark_tenant() RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('zoark.organization_id', true), '')::uuid
$$;
COMMENT ON FUNCTION zoark_tenant() IS 'The organization of the current tenant transaction, or NULL.';

CREATE FUNCTION zoark_rls_bypassed() RETURNS boolean LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(current_setting('zoark.rls', true), '') = 'bypass'
$$;
COMMENT ON FUNCTION zoark_rls_bypassed() IS 'True on platform connections (workers, scheduler, migrations, authentication).';

DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname
        FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations'
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        IF t <> 'jobs' THEN
            EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        END IF;
        IF EXISTS (
            SELECT 1 FROM information_schema.columns
            WHERE table_schema = current_schema() AND table_name = t AND column_name = 'organization_id'
        ) THEN
            -- The sub-selects are evaluated once per statement (init plans), not once per row.
            EXECUTE format(
                'CREATE POLICY tenant_isolation ON %I
                     USING ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))
                     WITH CHECK ((SELECT zoark_rls_bypassed()) OR organization_id = (SELECT zoark_tenant()))',
                t);
        ELSIF t NOT IN ('organizations', 'users') THEN
            -- Platform tables (backups, password reset tokens, worker bookkeeping): no tenant
            -- transaction reads or writes them.
            EXECUTE format(
                'CREATE POLICY platform_only ON %I USING ((SELECT zoark_rls_bypassed()))
                     WITH CHECK ((SELECT zoark_rls_bypassed()))',
                t);
        END IF;
    END LOOP;
END
$$;

-- A tenant sees its own organization row only.
CREATE POLICY tenant_isolation ON organizations
    USING ((SELECT zoark_rls_bypassed()) OR id = (SELECT zoark_tenant()))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR id = (SELECT zoark_tenant()));

-- Users are global identities; a tenant sees (and may update) only its members.
CREATE POLICY members_only ON users
    USING ((SELECT zoark_rls_bypassed()) OR EXISTS (
        SELECT 1 FROM memberships m
        WHERE m.user_id = users.id AND m.organization_id = (SELECT zoark_tenant())))
    WITH CHECK ((SELECT zoark_rls_bypassed()) OR EXISTS (
        SELECT 1 FROM memberships m
        WHERE m.user_id = users.id AND m.organization_id = (SELECT zoark_tenant())));
