-- Metrics without a privileged login (issue 10, follow-up). The database-held gauges (open
-- dead letters, retraining cooldowns, active training runs, tenant names) span every tenant,
-- and rai_app sees one tenant at a time. Instead of a superuser or BYPASSRLS login, rai_app
-- calls these narrow functions: SECURITY DEFINER (they run as rai_owner), search_path '',
-- aggregates only (counts, flags, ages, a tenant's id and name; never a row's content).
--
-- FORCE ROW LEVEL SECURITY binds rai_owner too, so each function reads through one extra
-- SELECT policy: for rai_owner only, and only while app.metrics_aggregate is 'on', which these
-- functions turn on for their one query and then back to what it was. rai_app is never
-- rai_owner, so the setting widens nothing it reads itself; writes are untouched (the policy
-- is FOR SELECT); a SECURITY DEFINER function that reads a tenant table must not run while
-- the caller has turned the setting on (today's other one, record_model_status_change, only
-- inserts).

DO $$
DECLARE
    tenant_table text;
BEGIN
    FOREACH tenant_table IN ARRAY ARRAY[
        'tenants', 'dead_letters', 'training_runs', 'model_status_history'
    ]
    LOOP
        EXECUTE format(
            'CREATE POLICY metrics_aggregate_select ON rai.%I FOR SELECT TO rai_owner '
            'USING (current_setting(''app.metrics_aggregate'', true) = ''on'')', tenant_table);
    END LOOP;
END;
$$;

-- Unresolved dead letters per queue (M8's alert reads this).
CREATE FUNCTION rai.metrics_open_dead_letters()
    RETURNS TABLE (queue text, open bigint)
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    previous text := current_setting('app.metrics_aggregate', true);
BEGIN
    PERFORM set_config('app.metrics_aggregate', 'on', true);
    RETURN QUERY
        SELECT d.queue, count(*) FROM rai.dead_letters AS d
         WHERE d.resolved_at IS NULL GROUP BY d.queue;
    PERFORM set_config('app.metrics_aggregate', coalesce(previous, ''), true);
END;
$$;

-- Every tenant, and whether its retraining cooldown (`cooldown` after its latest rollback;
-- the length comes from domain.policies) still runs at `at`.
CREATE FUNCTION rai.metrics_cooldowns(at timestamptz, cooldown interval)
    RETURNS TABLE (tenant_id uuid, active boolean)
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    previous text := current_setting('app.metrics_aggregate', true);
BEGIN
    PERFORM set_config('app.metrics_aggregate', 'on', true);
    RETURN QUERY
        SELECT t.id, coalesce(at < max(h.changed_at) + cooldown, false)
          FROM rai.tenants AS t
          LEFT JOIN rai.model_status_history AS h
            ON h.tenant_id = t.id AND h.to_status = 'ROLLED_BACK'
         GROUP BY t.id;
    PERFORM set_config('app.metrics_aggregate', coalesce(previous, ''), true);
END;
$$;

-- Every tenant's id and name (rai_tenant_info).
CREATE FUNCTION rai.metrics_tenants()
    RETURNS TABLE (tenant_id uuid, name text)
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    previous text := current_setting('app.metrics_aggregate', true);
BEGIN
    PERFORM set_config('app.metrics_aggregate', 'on', true);
    RETURN QUERY
        SELECT t.id, t.name FROM rai.tenants AS t;
    PERFORM set_config('app.metrics_aggregate', coalesce(previous, ''), true);
END;
$$;

-- Training runs QUEUED or RUNNING per tenant and status, and the age at `at` of the oldest
-- RUNNING one.
CREATE FUNCTION rai.metrics_active_training_runs(at timestamptz)
    RETURNS TABLE (tenant_id uuid, status text, runs bigint, oldest_seconds double precision)
    LANGUAGE plpgsql VOLATILE
    SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    previous text := current_setting('app.metrics_aggregate', true);
BEGIN
    PERFORM set_config('app.metrics_aggregate', 'on', true);
    RETURN QUERY
        SELECT r.tenant_id, r.status, count(*),
               (max(extract(epoch FROM (at - coalesce(r.started_at, r.created_at))))
                   FILTER (WHERE r.status = 'RUNNING'))::double precision
          FROM rai.training_runs AS r
         WHERE r.status IN ('QUEUED', 'RUNNING')
         GROUP BY r.tenant_id, r.status;
    PERFORM set_config('app.metrics_aggregate', coalesce(previous, ''), true);
END;
$$;

REVOKE ALL ON FUNCTION rai.metrics_open_dead_letters() FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.metrics_cooldowns(timestamptz, interval) FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.metrics_tenants() FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.metrics_active_training_runs(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rai.metrics_open_dead_letters() TO rai_app;
GRANT EXECUTE ON FUNCTION rai.metrics_cooldowns(timestamptz, interval) TO rai_app;
GRANT EXECUTE ON FUNCTION rai.metrics_tenants() TO rai_app;
GRANT EXECUTE ON FUNCTION rai.metrics_active_training_runs(timestamptz) TO rai_app;

-- A pipeline run records its outcome once: a RECORD_OUTCOME activity retried after its first
-- attempt committed finds this row and appends nothing (services.pipeline.record_outcome), and
-- two attempts racing cannot both append. Outcomes recorded before migration 0010 carry no
-- run id and are left alone.
CREATE UNIQUE INDEX integrity_checks_one_outcome_per_run
    ON rai.integrity_checks (tenant_id, subject_id, (details ->> 'workflow_run_id'))
    WHERE check_type = 'pipeline.outcome';
