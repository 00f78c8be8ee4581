-- Governance laws a buggy or hostile caller of rai_app cannot bend (issue 11, items 10-13).
-- New laws are separate triggers rather than replacements of older trigger functions, so they
-- add to whatever other migrations define; trigger names are chosen for their firing order
-- (triggers of one table and timing fire in name order).

-- Item 12: a training run starts QUEUED. The transition law (RA007) covered UPDATE only, so a
-- caller could insert a run straight into RUNNING or SUCCEEDED and skip the whole lifecycle.
CREATE FUNCTION rai.enforce_training_run_starts_queued() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM 'QUEUED' THEN
        RAISE EXCEPTION 'illegal training run transition: a new training run starts QUEUED, not %',
            NEW.status
            USING ERRCODE = 'RA007';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER validate_training_run_start BEFORE INSERT ON rai.training_runs
    FOR EACH ROW EXECUTE FUNCTION rai.enforce_training_run_starts_queued();

REVOKE ALL ON FUNCTION rai.enforce_training_run_starts_queued() FROM PUBLIC;
