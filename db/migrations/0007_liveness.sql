-- Liveness (issue 11): a run names the Temporal execution that owns it, and fencing cannot be
-- skipped (item 4).

-- Item 1: a QUEUED/RUNNING run whose owning workflow execution (workflow id + run id) is closed
-- is reaped; the run id tells this execution from an earlier or later one of the same id.
ALTER TABLE rai.training_runs ADD COLUMN workflow_run_id text;

-- Item 4: every run carries a fencing token. Runs recorded before tokens existed get 0 (older
-- than any lease), with the immutable-column guard and row security lifted for this one
-- statement only.
ALTER TABLE rai.training_runs NO FORCE ROW LEVEL SECURITY;
ALTER TABLE rai.training_runs DISABLE ROW LEVEL SECURITY;
ALTER TABLE rai.training_runs DISABLE TRIGGER guard_immutable_columns;
UPDATE rai.training_runs SET fencing_token = 0 WHERE fencing_token IS NULL;
ALTER TABLE rai.training_runs ENABLE TRIGGER guard_immutable_columns;
ALTER TABLE rai.training_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE rai.training_runs FORCE ROW LEVEL SECURITY;
ALTER TABLE rai.training_runs ALTER COLUMN fencing_token SET NOT NULL;

-- The newest lease the tenant's Redis mutex granted (issue 11, item 4), recorded by the holder
-- as soon as it is granted: a run, its model and its SHADOW move are refused once a newer
-- fence exists here or on a newer run (assert_current_fence), even before the new holder has
-- recorded a run. The fence only rises (RA008).
CREATE TABLE rai.tenant_fences (
    tenant_id   uuid PRIMARY KEY REFERENCES rai.tenants (id),
    fence       bigint NOT NULL CONSTRAINT tenant_fences_fence_positive CHECK (fence > 0),
    holder      text NOT NULL,
    granted_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE rai.tenant_fences ENABLE ROW LEVEL SECURITY;
ALTER TABLE rai.tenant_fences FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON rai.tenant_fences FOR SELECT
    USING (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_insert ON rai.tenant_fences FOR INSERT
    WITH CHECK (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_update ON rai.tenant_fences FOR UPDATE
    USING (tenant_id = (SELECT rai.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_delete ON rai.tenant_fences FOR DELETE
    USING (tenant_id = (SELECT rai.current_tenant_id()));
GRANT SELECT, INSERT, UPDATE ON rai.tenant_fences TO rai_app;

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
    PERFORM pg_advisory_xact_lock(hashtextextended('rai.training_runs:' || NEW.tenant_id::text, 0));
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

-- Fencing that cannot be skipped (issue 11, item 4). A run is recorded only with a fencing
-- token (a run without one is refused, RA008, before the NOT NULL constraint could answer
-- with a generic code), and every later write that acts for the lease holder of a run -- the
-- run's moves to RUNNING and SUCCEEDED, registering the model of the run, promoting that model
-- to SHADOW -- is refused while a newer fence exists for the tenant. Ending a run FAILED or
-- CANCELLED stays open to anyone: it only takes away, and it is how a newer holder reaps a run
-- whose pipeline is gone.
CREATE FUNCTION rai.assert_current_fence(run_tenant uuid, run_id uuid, act text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    fence bigint;
    newest bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('rai.training_runs:' || run_tenant::text, 0));
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

CREATE FUNCTION rai.validate_training_run_writer_fence() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    PERFORM rai.assert_current_fence(NEW.tenant_id, NEW.id, 'the move to ' || NEW.status);
    RETURN NEW;
END;
$$;

CREATE TRIGGER validate_training_run_writer_fence BEFORE UPDATE ON rai.training_runs
    FOR EACH ROW WHEN (NEW.status IN ('RUNNING', 'SUCCEEDED')
                       AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION rai.validate_training_run_writer_fence();

CREATE FUNCTION rai.validate_model_version_fence() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF NEW.training_run_id IS NOT NULL THEN
        PERFORM rai.assert_current_fence(NEW.tenant_id, NEW.training_run_id,
            CASE WHEN TG_OP = 'INSERT' THEN 'registering the model'
                 ELSE 'promoting the model to ' || NEW.status END);
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER validate_model_version_fence BEFORE INSERT ON rai.model_versions
    FOR EACH ROW EXECUTE FUNCTION rai.validate_model_version_fence();
CREATE TRIGGER validate_model_version_fence_shadow BEFORE UPDATE ON rai.model_versions
    FOR EACH ROW WHEN (NEW.status = 'SHADOW' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION rai.validate_model_version_fence();

-- A tenant's recorded fence only rises: an older holder cannot record its fence over a newer.
CREATE FUNCTION rai.enforce_fence_rises() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF NEW.fence < OLD.fence OR NEW.tenant_id IS DISTINCT FROM OLD.tenant_id THEN
        RAISE EXCEPTION 'stale fencing token % for tenant % (newest is %)',
            NEW.fence, OLD.tenant_id, OLD.fence
            USING ERRCODE = 'RA008';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER enforce_fence_rises BEFORE UPDATE ON rai.tenant_fences
    FOR EACH ROW EXECUTE FUNCTION rai.enforce_fence_rises();


REVOKE ALL ON FUNCTION rai.enforce_fencing_token() FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.assert_current_fence(uuid, uuid, text) FROM PUBLIC;
-- Called by the fence triggers with the caller's rights; it can only refuse.
GRANT EXECUTE ON FUNCTION rai.assert_current_fence(uuid, uuid, text) TO rai_app;
REVOKE ALL ON FUNCTION rai.validate_training_run_writer_fence() FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.validate_model_version_fence() FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.enforce_fence_rises() FROM PUBLIC;
