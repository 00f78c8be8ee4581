-- Governance laws a buggy or hostile caller of rai_app cannot bend (issue 11, items 11 and 12).
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

-- Item 11: platform keys vouch for everything the platform signs (drift reports, model
-- versions, bias audits) and for the SHADOW decision, so rai_app must not be able to plant
-- one. Only a role with rai_owner's privileges (the administrative path, `rai keys platform
-- register`) inserts a platform key; nobody un-revokes any key (revoking stays open to
-- rai_app: it only ever takes trust away). Not SECURITY DEFINER: current_user is the caller.
CREATE FUNCTION rai.guard_platform_keys() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.purpose = 'platform'
       AND NOT pg_catalog.pg_has_role(current_user, 'rai_owner', 'USAGE') THEN
        RAISE EXCEPTION 'platform key %: only the administrative path registers platform keys (% may not)',
            NEW.key_id, current_user
            USING ERRCODE = 'RA010',
                  HINT = 'An administrator runs `rai keys platform register --tenant T`.';
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.revoked_at IS NOT NULL
       AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'key %: a revoked key stays revoked', OLD.key_id
            USING ERRCODE = 'RA010';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER guard_platform_keys BEFORE INSERT OR UPDATE ON rai.signing_keys
    FOR EACH ROW EXECUTE FUNCTION rai.guard_platform_keys();

-- SHADOW needs more than a passed audit: the latest audit of the version must name a
-- registered, unrevoked platform key of the tenant (the signature itself is verified by the
-- registry service, which Postgres cannot do; what it can do is refuse an audit signed with a
-- device key, an unknown key or a revoked one). Named to fire after
-- validate_model_status_transition, so an illegal move still reports RA002.
CREATE FUNCTION rai.validate_shadow_audit_signer() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    audit_key text;
    key_purpose text;
    key_revoked timestamptz;
BEGIN
    SELECT a.key_id INTO audit_key
      FROM rai.bias_audits AS a
     WHERE a.tenant_id = NEW.tenant_id AND a.model_version_id = NEW.id
     ORDER BY a.created_at DESC, a.id DESC
     LIMIT 1;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model version % cannot enter SHADOW: it has no bias audit', NEW.id
            USING ERRCODE = 'RA003';
    END IF;
    SELECT k.purpose, k.revoked_at INTO key_purpose, key_revoked
      FROM rai.signing_keys AS k
     WHERE k.tenant_id = NEW.tenant_id AND k.key_id = audit_key;
    IF key_purpose IS DISTINCT FROM 'platform' OR key_revoked IS NOT NULL THEN
        RAISE EXCEPTION 'model version % cannot enter SHADOW: its latest bias audit is signed by key %, %',
            NEW.id, audit_key,
            CASE WHEN key_purpose IS NULL THEN 'which is not registered'
                 WHEN key_purpose <> 'platform' THEN 'a ' || key_purpose || ' key, not a platform key'
                 ELSE 'a revoked platform key' END
            USING ERRCODE = 'RA003';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER validate_shadow_audit_signer BEFORE UPDATE ON rai.model_versions
    FOR EACH ROW WHEN (NEW.status = 'SHADOW' AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION rai.validate_shadow_audit_signer();

REVOKE ALL ON FUNCTION rai.guard_platform_keys() FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.validate_shadow_audit_signer() FROM PUBLIC;
