-- The metrics aggregates get a login of their own (issue 10, follow-up; found by the RLS
-- penetration scenario). Migration 0010 let rai_app call rai.metrics_tenants() and the other
-- aggregates, so any session of the services, acting for one tenant, could list every tenant's
-- id and name. Now only rai_metrics may call them: a LOGIN role that `rai db migrate` creates
-- (NOSUPERUSER, NOBYPASSRLS, NOINHERIT, owning nothing, a member of nothing) and that only the
-- worker's metrics collector logs in as. It gets USAGE on schema rai and EXECUTE on the four
-- functions: no table privilege, no CREATE, nothing else, so it reads no tenant row itself.

REVOKE EXECUTE ON FUNCTION rai.metrics_open_dead_letters() FROM rai_app;
REVOKE EXECUTE ON FUNCTION rai.metrics_cooldowns(timestamptz, interval) FROM rai_app;
REVOKE EXECUTE ON FUNCTION rai.metrics_tenants() FROM rai_app;
REVOKE EXECUTE ON FUNCTION rai.metrics_active_training_runs(timestamptz) FROM rai_app;

GRANT USAGE ON SCHEMA rai TO rai_metrics;
GRANT EXECUTE ON FUNCTION rai.metrics_open_dead_letters() TO rai_metrics;
GRANT EXECUTE ON FUNCTION rai.metrics_cooldowns(timestamptz, interval) TO rai_metrics;
GRANT EXECUTE ON FUNCTION rai.metrics_tenants() TO rai_metrics;
GRANT EXECUTE ON FUNCTION rai.metrics_active_training_runs(timestamptz) TO rai_metrics;
