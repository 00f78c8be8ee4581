-- Per-tenant locks that only the tenant's own transactions can take (issue 13, found by the
-- acceptance battery's RLS penetration scenario).
--
-- The audit chain and the fencing check serialised a tenant's writers with
-- pg_advisory_xact_lock(hashtextextended('rai.integrity_checks:' || tenant, 0)). Advisory locks
-- are one namespace for every login and their keys are computable, so a rai_app session acting
-- for tenant A could take tenant B's key (pg_advisory_lock) and hold it: every one of B's audit
-- appends and training-run inserts then waited for as long as A liked. A lock is now a row of
-- rai.tenant_locks, taken with SELECT ... FOR UPDATE under row-level security: a transaction
-- acting for A neither sees nor can create B's lock rows, so it cannot hold them.

CREATE TABLE rai.tenant_locks (
    tenant_id  uuid NOT NULL REFERENCES rai.tenants (id),
    lock_name  text NOT NULL CONSTRAINT tenant_locks_lock_name_not_blank
                   CHECK (btrim(lock_name) <> ''),
    PRIMARY KEY (tenant_id, lock_name)
);

ALTER TABLE rai.tenant_locks ENABLE ROW LEVEL SECURITY;
ALTER TABLE rai.tenant_locks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON rai.tenant_locks FOR SELECT
    USING (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_insert ON rai.tenant_locks FOR INSERT
    WITH CHECK (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_update ON rai.tenant_locks FOR UPDATE
    USING (tenant_id = (SELECT rai.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_delete ON rai.tenant_locks FOR DELETE
    USING (tenant_id = (SELECT rai.current_tenant_id()));

-- UPDATE is what SELECT ... FOR UPDATE needs; no DELETE, no TRUNCATE.
GRANT SELECT, INSERT, UPDATE ON rai.tenant_locks TO rai_app;

-- Take the transaction-long lock lock_name of tenant_id (released at commit or rollback).
-- Not SECURITY DEFINER: it runs as the caller, so acting for another tenant it is refused by
-- the insert policy (42501) instead of taking anything.
CREATE FUNCTION rai.lock_tenant(tenant_id uuid, lock_name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    INSERT INTO rai.tenant_locks AS l (tenant_id, lock_name)
        VALUES (lock_tenant.tenant_id, lock_tenant.lock_name)
        ON CONFLICT DO NOTHING;
    PERFORM 1 FROM rai.tenant_locks AS l
      WHERE l.tenant_id = lock_tenant.tenant_id AND l.lock_name = lock_tenant.lock_name
        FOR UPDATE;
END;
$$;

REVOKE ALL ON FUNCTION rai.lock_tenant(uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rai.lock_tenant(uuid, text) TO rai_app;

-- The audit chain, the fencing check and the fence assertion (0007) take their tenant's lock
-- instead of an advisory one.
CREATE OR REPLACE FUNCTION rai.chain_integrity_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    last_seq bigint;
    last_hash text;
BEGIN
    PERFORM rai.lock_tenant(NEW.tenant_id, 'integrity_checks');
    SELECT c.seq, c.row_hash INTO last_seq, last_hash
      FROM rai.integrity_checks AS c
     WHERE c.tenant_id = NEW.tenant_id
     ORDER BY c.seq DESC
     LIMIT 1;
    NEW.seq := coalesce(last_seq, 0) + 1;
    NEW.prev_hash := coalesce(last_hash, repeat('0', 64));
    NEW.created_at := clock_timestamp();
    NEW.row_hash := rai.integrity_row_hash(
        NEW.prev_hash, NEW.tenant_id, NEW.seq, NEW.check_type, NEW.subject_id, NEW.outcome,
        NEW.details, NEW.created_at);
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION rai.enforce_fencing_token() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    newest bigint;
    granted bigint;
BEGIN
    IF NEW.fencing_token IS NULL THEN
        RAISE EXCEPTION 'training run % of tenant % has no fencing token: a run is recorded only by a lease holder',
            NEW.id, NEW.tenant_id
            USING ERRCODE = 'RA008';
    END IF;
    PERFORM rai.lock_tenant(NEW.tenant_id, 'training_runs');
    SELECT max(r.fencing_token) INTO newest FROM rai.training_runs AS r
     WHERE r.tenant_id = NEW.tenant_id;
    SELECT f.fence INTO granted FROM rai.tenant_fences AS f WHERE f.tenant_id = NEW.tenant_id;
    IF NEW.fencing_token <= coalesce(newest, 0) OR NEW.fencing_token < coalesce(granted, 0) THEN
        RAISE EXCEPTION 'stale fencing token % for tenant % (newest is %)',
            NEW.fencing_token, NEW.tenant_id, greatest(newest, granted)
            USING ERRCODE = 'RA008';
    END IF;
    RETURN NEW;
END;
$$;

CREATE OR REPLACE FUNCTION rai.assert_current_fence(run_tenant uuid, run_id uuid, act text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    fence bigint;
    newest bigint;
BEGIN
    PERFORM rai.lock_tenant(run_tenant, 'training_runs');
    SELECT r.fencing_token INTO fence FROM rai.training_runs AS r
     WHERE r.tenant_id = run_tenant AND r.id = run_id;
    SELECT greatest(max(r.fencing_token), (SELECT f.fence FROM rai.tenant_fences AS f
                                            WHERE f.tenant_id = run_tenant))
      INTO newest FROM rai.training_runs AS r
     WHERE r.tenant_id = run_tenant;
    IF fence IS NOT NULL AND newest > fence THEN
        RAISE EXCEPTION 'stale fencing token % for tenant % (newest is %): % of training run % refused',
            fence, run_tenant, newest, act, run_id
            USING ERRCODE = 'RA008';
    END IF;
END;
$$;
