-- The retraining pipeline's bookkeeping on training runs.
--  * fencing_token: the per-tenant Redis mutex hands out a strictly increasing token with each
--    lease; a run may only be recorded with a token newer than every run before it, so a
--    holder whose lease expired while it was paused can never write a run (RA008).
--  * callback_public_key: the Ed25519 key the training job signs its completion callback
--    with (a fresh key pair per run; the job gets the private half).
--  * model_name: what the run trains.
-- A model version comes from at most one registration per training run (retries of the
-- registration step find it instead of registering twice).
ALTER TABLE rai.training_runs
    ADD COLUMN fencing_token bigint,
    ADD COLUMN callback_public_key bytea
        CONSTRAINT training_runs_callback_key_length CHECK (octet_length(callback_public_key) = 32),
    ADD COLUMN model_name text;

CREATE UNIQUE INDEX model_versions_one_per_training_run
    ON rai.model_versions (tenant_id, training_run_id) WHERE training_run_id IS NOT NULL;

CREATE FUNCTION rai.enforce_fencing_token() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    newest bigint;
BEGIN
    IF NEW.fencing_token IS NULL THEN
        RETURN NEW;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('rai.training_runs:' || NEW.tenant_id::text, 0));
    SELECT max(r.fencing_token) INTO newest FROM rai.training_runs AS r
     WHERE r.tenant_id = NEW.tenant_id;
    IF newest IS NOT NULL AND NEW.fencing_token <= newest THEN
        RAISE EXCEPTION 'stale fencing token % for tenant % (newest is %)',
            NEW.fencing_token, NEW.tenant_id, newest
            USING ERRCODE = 'RA008';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER enforce_fencing_token BEFORE INSERT ON rai.training_runs
    FOR EACH ROW EXECUTE FUNCTION rai.enforce_fencing_token();

REVOKE ALL ON FUNCTION rai.enforce_fencing_token() FROM PUBLIC;
