-- RAI Level D: the laws that need procedural code. Applied after schema.sql, as rai_owner.
--
-- Every law raises with its own SQLSTATE (class "RA", user-defined), listed in db/errors.py:
--   RA001 lineage_integrity_violation     enforce_lineage_integrity
--   RA002 illegal_model_status_transition validate_model_status_transition, enforce_model_registration
--   RA003 shadow_requires_passed_bias_audit validate_model_status_transition,
--                                         validate_shadow_audit_signer
--   RA004 model_tampering                 prevent_model_tampering
--   RA005 append_only_violation           forbid_append_only_change
--   RA006 immutable_column                guard_immutable_columns
--   RA007 illegal_training_run_transition validate_training_run_transition,
--                                         enforce_training_run_starts_queued
--   RA008 stale_fence                     enforce_fencing_token, assert_current_fence,
--                                         enforce_fence_rises
--   RA010 platform_key_administrative     guard_platform_keys
-- Laws expressed as constraints keep the standard SQLSTATEs: 23505 for
-- model_versions_one_production_per_model, model_versions_one_per_training_run and
-- training_runs_one_active_per_tenant,
-- 23514 for CHECK/domain formats (hashes, signatures, key ids), 42501 for row-level security.
--
-- Triggers of one table and timing fire in name order; the names below are chosen so the
-- order is the one the comments describe.

-- Lineage (M13). lineage_hash = hex(sha256(utf8(P || ':' || artifact_sha256 || ':' ||
-- dataset_sha256))), P = the parent's lineage_hash, or 64 zeros for a root. The parent must be
-- a version of the same tenant and model name. domain/lineage.py computes the same bytes.
CREATE FUNCTION rai.enforce_lineage_integrity() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    parent_lineage text;
    parent_model text;
    expected text;
BEGIN
    IF NEW.parent_version_id IS NULL THEN
        parent_lineage := repeat('0', 64);
    ELSE
        -- Row-level security limits this lookup to the acting tenant: a parent of another
        -- tenant is simply not found (and its existence is not revealed).
        SELECT mv.lineage_hash, mv.model_name INTO parent_lineage, parent_model
          FROM rai.model_versions AS mv
         WHERE mv.id = NEW.parent_version_id AND mv.tenant_id = NEW.tenant_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'lineage violation: parent model version % not found for tenant %',
                NEW.parent_version_id, NEW.tenant_id
                USING ERRCODE = 'RA001';
        END IF;
        IF parent_model <> NEW.model_name THEN
            RAISE EXCEPTION 'lineage violation: parent model version % belongs to model %, not %',
                NEW.parent_version_id, parent_model, NEW.model_name
                USING ERRCODE = 'RA001';
        END IF;
    END IF;
    expected := encode(sha256(convert_to(
        parent_lineage || ':' || NEW.artifact_sha256 || ':' || NEW.dataset_sha256, 'UTF8')), 'hex');
    IF NEW.lineage_hash IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'lineage violation: lineage_hash % does not match the recomputed %',
            NEW.lineage_hash, expected
            USING ERRCODE = 'RA001';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER enforce_lineage_integrity
    BEFORE INSERT ON rai.model_versions
    FOR EACH ROW EXECUTE FUNCTION rai.enforce_lineage_integrity();

-- A model version enters the world REGISTERED, stamped by the database clock.
CREATE FUNCTION rai.enforce_model_registration() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM 'REGISTERED' THEN
        RAISE EXCEPTION 'illegal model status transition: a new model version starts REGISTERED, not %',
            NEW.status
            USING ERRCODE = 'RA002';
    END IF;
    NEW.created_at := now();
    NEW.status_changed_at := NEW.created_at;
    RETURN NEW;
END;
$$;

CREATE TRIGGER enforce_model_registration
    BEFORE INSERT ON rai.model_versions
    FOR EACH ROW EXECUTE FUNCTION rai.enforce_model_registration();

-- Immutability (M13): a registered model version never changes, except its status (whose
-- timestamp only the status machine sets), and is never deleted.
CREATE FUNCTION rai.prevent_model_tampering() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    new_row jsonb;
    old_row jsonb;
    changed text;
BEGIN
    IF TG_OP IN ('DELETE', 'TRUNCATE') THEN
        RAISE EXCEPTION 'model tampering: model versions are never deleted (% refused)', TG_OP
            USING ERRCODE = 'RA004';
    END IF;
    new_row := to_jsonb(NEW) - 'status';
    old_row := to_jsonb(OLD) - 'status';
    IF NEW.status IS DISTINCT FROM OLD.status THEN
        new_row := new_row - 'status_changed_at';
        old_row := old_row - 'status_changed_at';
    END IF;
    IF new_row IS DISTINCT FROM old_row THEN
        SELECT string_agg(n.key, ', ' ORDER BY n.key) INTO changed
          FROM jsonb_each(new_row) AS n
         WHERE n.value IS DISTINCT FROM old_row -> n.key;
        RAISE EXCEPTION 'model tampering: model version % is immutable; refused change of %',
            OLD.id, changed
            USING ERRCODE = 'RA004',
                  HINT = 'Only status may change, along model_status_transitions.';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER prevent_model_tampering
    BEFORE UPDATE OR DELETE ON rai.model_versions
    FOR EACH ROW EXECUTE FUNCTION rai.prevent_model_tampering();

CREATE TRIGGER prevent_model_tampering_truncate
    BEFORE TRUNCATE ON rai.model_versions
    FOR EACH STATEMENT EXECUTE FUNCTION rai.prevent_model_tampering();

-- The status machine (M13): only moves listed in model_status_transitions; entering SHADOW
-- needs the version's latest bias audit to have passed (M17).
CREATE FUNCTION rai.validate_model_status_transition() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    latest_audit_passed boolean;
BEGIN
    IF NEW.status IS NOT DISTINCT FROM OLD.status THEN
        RETURN NEW;
    END IF;
    IF NOT EXISTS (
        SELECT 1 FROM rai.model_status_transitions AS t
         WHERE t.from_status = OLD.status AND t.to_status = NEW.status
    ) THEN
        RAISE EXCEPTION 'illegal model status transition % -> % for model version %',
            OLD.status, NEW.status, OLD.id
            USING ERRCODE = 'RA002';
    END IF;
    IF NEW.status = 'SHADOW' THEN
        SELECT a.passed INTO latest_audit_passed
          FROM rai.bias_audits AS a
         WHERE a.tenant_id = NEW.tenant_id AND a.model_version_id = NEW.id
         ORDER BY a.created_at DESC, a.id DESC
         LIMIT 1;
        IF latest_audit_passed IS NOT TRUE THEN
            RAISE EXCEPTION 'model version % cannot enter SHADOW: %', NEW.id,
                CASE WHEN latest_audit_passed IS NULL THEN 'it has no bias audit'
                     ELSE 'its latest bias audit failed' END
                USING ERRCODE = 'RA003';
        END IF;
    END IF;
    NEW.status_changed_at := now();
    RETURN NEW;
END;
$$;

CREATE TRIGGER validate_model_status_transition
    BEFORE UPDATE ON rai.model_versions
    FOR EACH ROW EXECUTE FUNCTION rai.validate_model_status_transition();

-- Every status a version takes, including its registration, lands in model_status_history.
-- The reason comes from the transaction-local setting app.status_change_reason. SECURITY
-- DEFINER because rai_app may read the history but not write it.
CREATE FUNCTION rai.record_model_status_change() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    INSERT INTO rai.model_status_history
        (tenant_id, model_version_id, from_status, to_status, changed_at, reason)
    VALUES (
        NEW.tenant_id,
        NEW.id,
        CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
        NEW.status,
        NEW.status_changed_at,
        nullif(current_setting('app.status_change_reason', true), '')
    );
    RETURN NULL;
END;
$$;

CREATE TRIGGER record_model_registration
    AFTER INSERT ON rai.model_versions
    FOR EACH ROW EXECUTE FUNCTION rai.record_model_status_change();

CREATE TRIGGER record_model_status_change
    AFTER UPDATE OF status ON rai.model_versions
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION rai.record_model_status_change();

-- Append-only logs: no UPDATE, DELETE or TRUNCATE, whoever asks.
CREATE FUNCTION rai.forbid_append_only_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    RAISE EXCEPTION 'append-only violation: % on %.% is not allowed',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME
        USING ERRCODE = 'RA005';
END;
$$;

DO $$
DECLARE
    log_table text;
BEGIN
    FOREACH log_table IN ARRAY ARRAY[
        'drift_reports', 'bias_audits', 'integrity_checks', 'model_status_history',
        'learning_events'
    ]
    LOOP
        EXECUTE format(
            'CREATE TRIGGER forbid_append_only_change BEFORE UPDATE OR DELETE ON rai.%I '
            'FOR EACH ROW EXECUTE FUNCTION rai.forbid_append_only_change()', log_table);
        EXECUTE format(
            'CREATE TRIGGER forbid_append_only_truncate BEFORE TRUNCATE ON rai.%I '
            'FOR EACH STATEMENT EXECUTE FUNCTION rai.forbid_append_only_change()', log_table);
    END LOOP;
END;
$$;

-- The integrity log is hash-chained per tenant: row_hash = sha256(prev_hash || canonical row),
-- where the canonical row is the jsonb text below (jsonb prints keys in one fixed order).
CREATE FUNCTION rai.integrity_row_hash(
    prev_hash text,
    tenant_id uuid,
    seq bigint,
    check_type text,
    subject_id text,
    outcome text,
    details jsonb,
    created_at timestamptz
) RETURNS text
    LANGUAGE sql STABLE PARALLEL SAFE
    SET search_path = ''
AS $$
    SELECT encode(sha256(convert_to(prev_hash || jsonb_build_object(
        'tenant_id', tenant_id,
        'seq', seq,
        'check_type', check_type,
        'subject_id', subject_id,
        'outcome', outcome,
        'details', details,
        'created_at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    )::text, 'UTF8')), 'hex');
$$;

GRANT EXECUTE ON FUNCTION
    rai.integrity_row_hash(text, uuid, bigint, text, text, text, jsonb, timestamptz) TO rai_app;

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

-- Appends link to the tenant's previous row. A per-tenant lock (rai.lock_tenant) serialises appends, so
-- the chain never forks; the unique (tenant_id, seq) backs it up under any isolation level.
CREATE FUNCTION rai.chain_integrity_check() RETURNS trigger
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

CREATE TRIGGER chain_integrity_check
    BEFORE INSERT ON rai.integrity_checks
    FOR EACH ROW EXECUTE FUNCTION rai.chain_integrity_check();

-- Rows that are records of something keep their identity; TG_ARGV names the columns that may
-- change. Used where a row legitimately evolves (a key is revoked, a dead letter resolved).
CREATE FUNCTION rai.guard_immutable_columns() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    new_row jsonb := to_jsonb(NEW) - TG_ARGV;
    old_row jsonb := to_jsonb(OLD) - TG_ARGV;
    changed text;
BEGIN
    IF new_row IS DISTINCT FROM old_row THEN
        SELECT string_agg(n.key, ', ' ORDER BY n.key) INTO changed
          FROM jsonb_each(new_row) AS n
         WHERE n.value IS DISTINCT FROM old_row -> n.key;
        RAISE EXCEPTION 'immutable column: % may change only %; refused change of %',
            TG_TABLE_NAME, array_to_string(TG_ARGV, ', '), changed
            USING ERRCODE = 'RA006';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER guard_immutable_columns BEFORE UPDATE ON rai.tenants
    FOR EACH ROW EXECUTE FUNCTION rai.guard_immutable_columns('name');
CREATE TRIGGER guard_immutable_columns BEFORE UPDATE ON rai.signing_keys
    FOR EACH ROW EXECUTE FUNCTION rai.guard_immutable_columns('revoked_at');
CREATE TRIGGER guard_immutable_columns BEFORE UPDATE ON rai.dead_letters
    FOR EACH ROW EXECUTE FUNCTION rai.guard_immutable_columns('resolved_at');
CREATE TRIGGER guard_immutable_columns BEFORE UPDATE ON rai.training_runs
    FOR EACH ROW EXECUTE FUNCTION rai.guard_immutable_columns(
        'status', 'job_name', 'started_at', 'finished_at');

-- Training runs move forward only: QUEUED -> RUNNING -> SUCCEEDED | FAILED | CANCELLED
-- (a queued run may also fail or be cancelled); a finished run stays finished.
CREATE FUNCTION rai.validate_training_run_transition() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF NEW.status IS DISTINCT FROM OLD.status AND (OLD.status, NEW.status) NOT IN (
        ('QUEUED', 'RUNNING'), ('QUEUED', 'FAILED'), ('QUEUED', 'CANCELLED'),
        ('RUNNING', 'SUCCEEDED'), ('RUNNING', 'FAILED'), ('RUNNING', 'CANCELLED')
    ) THEN
        RAISE EXCEPTION 'illegal training run transition % -> % for run %',
            OLD.status, NEW.status, OLD.id
            USING ERRCODE = 'RA007';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER validate_training_run_transition BEFORE UPDATE ON rai.training_runs
    FOR EACH ROW EXECUTE FUNCTION rai.validate_training_run_transition();

-- Fencing: a run is recorded only with a fencing token (RA008 without one, before the NOT NULL
-- constraint answers) newer than every run of its tenant before it. A per-tenant lock
-- (rai.lock_tenant) serialises the check with concurrent inserts.
CREATE FUNCTION rai.enforce_fencing_token() RETURNS trigger
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

CREATE TRIGGER enforce_fencing_token BEFORE INSERT ON rai.training_runs
    FOR EACH ROW EXECUTE FUNCTION rai.enforce_fencing_token();

-- A training run starts QUEUED: validate_training_run_transition covers UPDATE only, and a
-- caller must not insert a run straight into RUNNING or SUCCEEDED, skipping its lifecycle.
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

-- Platform keys vouch for everything the platform signs (drift reports, model
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

-- API tokens (issue 9).
-- A token may only be revoked, once; its other columns never change.
CREATE TRIGGER guard_immutable_columns BEFORE UPDATE ON rai.api_tokens
    FOR EACH ROW EXECUTE FUNCTION rai.guard_immutable_columns('revoked_at');

CREATE FUNCTION rai.guard_api_token_revocation() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF OLD.revoked_at IS NOT NULL AND NEW.revoked_at IS DISTINCT FROM OLD.revoked_at THEN
        RAISE EXCEPTION 'api token %: a revoked token stays revoked', OLD.id
            USING ERRCODE = 'RA006';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER guard_api_token_revocation BEFORE UPDATE ON rai.api_tokens
    FOR EACH ROW EXECUTE FUNCTION rai.guard_api_token_revocation();

CREATE TRIGGER forbid_append_only_change BEFORE DELETE ON rai.api_tokens
    FOR EACH ROW EXECUTE FUNCTION rai.forbid_append_only_change();
CREATE TRIGGER forbid_append_only_truncate BEFORE TRUNCATE ON rai.api_tokens
    FOR EACH STATEMENT EXECUTE FUNCTION rai.forbid_append_only_change();

-- Creating and revoking a token are audited by the database itself, in the same transaction.
CREATE FUNCTION rai.record_api_token_change() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    INSERT INTO rai.integrity_checks
        (tenant_id, check_type, subject_id, outcome, details, seq, prev_hash, row_hash)
    VALUES (
        NEW.tenant_id,
        CASE WHEN TG_OP = 'INSERT' THEN 'api_token.create' ELSE 'api_token.revoke' END,
        NEW.id::text,
        'OK',
        jsonb_build_object('name', NEW.name, 'expires_at', NEW.expires_at,
                           'revoked_at', NEW.revoked_at),
        0, repeat('0', 64), repeat('0', 64));
    RETURN NULL;
END;
$$;

CREATE TRIGGER record_api_token_creation AFTER INSERT ON rai.api_tokens
    FOR EACH ROW EXECUTE FUNCTION rai.record_api_token_change();
CREATE TRIGGER record_api_token_revocation AFTER UPDATE OF revoked_at ON rai.api_tokens
    FOR EACH ROW WHEN (OLD.revoked_at IS DISTINCT FROM NEW.revoked_at)
    EXECUTE FUNCTION rai.record_api_token_change();

-- The one question asked across tenants, so a caller can be told 403 (a valid token, for
-- another tenant) rather than 401: is this hash that of a valid token of a tenant other than
-- the transaction's? It answers only yes or no; never which tenant, never a row.
CREATE FUNCTION rai.api_token_valid_elsewhere(token_hash text) RETURNS boolean
    LANGUAGE sql STABLE
    SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT EXISTS (
        SELECT 1 FROM rai.api_tokens AS t
         WHERE t.token_sha256 = token_hash
           AND t.tenant_id IS DISTINCT FROM rai.current_tenant_id()
           AND t.revoked_at IS NULL
           AND (t.expires_at IS NULL OR t.expires_at > now()));
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA rai FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rai.current_tenant_id() TO rai_app;
-- Called by the fence triggers with the caller's rights; it can only refuse.
GRANT EXECUTE ON FUNCTION rai.assert_current_fence(uuid, uuid, text) TO rai_app;
GRANT EXECUTE ON FUNCTION
    rai.integrity_row_hash(text, uuid, bigint, text, text, text, jsonb, timestamptz) TO rai_app;
GRANT EXECUTE ON FUNCTION rai.lock_tenant(uuid, text) TO rai_app;
GRANT EXECUTE ON FUNCTION rai.api_token_valid_elsewhere(text) TO rai_app;


-- Metrics without a privileged login: migration 0010 (its header explains the design); since
-- migration 0011 only rai_metrics, the worker's metrics collector, may call them.
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
GRANT EXECUTE ON FUNCTION rai.metrics_open_dead_letters() TO rai_metrics;
GRANT EXECUTE ON FUNCTION rai.metrics_cooldowns(timestamptz, interval) TO rai_metrics;
GRANT EXECUTE ON FUNCTION rai.metrics_tenants() TO rai_metrics;
GRANT EXECUTE ON FUNCTION rai.metrics_active_training_runs(timestamptz) TO rai_metrics;
