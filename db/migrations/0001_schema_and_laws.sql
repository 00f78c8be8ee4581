-- RAI Level D: tables, constraints, roles' privileges and row-level security.
--
-- Runs inside the migration transaction as rai_owner, with search_path = rai.
-- The laws that need procedural code (lineage, status machine, immutability, append-only logs,
-- the integrity hash chain) live in triggers.sql, applied right after this file.
--
-- Conventions: hashes are lowercase hex SHA-256 (64 chars) text; signatures are raw Ed25519
-- bytes (64 bytes); every tenant table has tenant_id and row-level security keyed by
-- rai.current_tenant_id().

CREATE DOMAIN rai.sha256_hex AS text
    CONSTRAINT sha256_hex_format CHECK (VALUE ~ '^[0-9a-f]{64}$');

CREATE DOMAIN rai.ed25519_signature AS bytea
    CONSTRAINT ed25519_signature_length CHECK (octet_length(VALUE) = 64);

CREATE DOMAIN rai.key_id AS text
    CONSTRAINT key_id_format CHECK (VALUE ~ '^[0-9a-f]{32}$');

CREATE DOMAIN rai.model_status AS text
    CONSTRAINT model_status_value CHECK (VALUE IN (
        'REGISTERED', 'SHADOW', 'CANARY', 'PRODUCTION', 'ARCHIVED', 'REJECTED', 'ROLLED_BACK'
    ));

-- The tenant a transaction acts for: the transaction-local setting app.current_tenant_id.
-- Unset, empty or not a UUID -> NULL, which no row's tenant_id equals: no rows, no writes.
CREATE FUNCTION rai.current_tenant_id() RETURNS uuid
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    SET search_path = ''
AS $$
DECLARE
    raw text := current_setting('app.current_tenant_id', true);
BEGIN
    IF raw IS NULL
       OR raw !~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' THEN
        RETURN NULL;
    END IF;
    RETURN raw::uuid;
END;
$$;

CREATE TABLE rai.tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CONSTRAINT tenants_name_not_blank CHECK (btrim(name) <> ''),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rai.signing_keys (
    tenant_id   uuid NOT NULL REFERENCES rai.tenants (id),
    key_id      rai.key_id NOT NULL,
    public_key  bytea NOT NULL CONSTRAINT signing_keys_public_key_length
                    CHECK (octet_length(public_key) = 32),
    purpose     text NOT NULL CONSTRAINT signing_keys_purpose
                    CHECK (purpose IN ('device', 'platform')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (tenant_id, key_id),
    -- key_id is derived from the public key (first 16 bytes of its SHA-256, hex).
    CONSTRAINT signing_keys_key_id_matches_public_key
        CHECK (key_id = substr(encode(sha256(public_key), 'hex'), 1, 32))
);

CREATE TABLE rai.learning_events (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES rai.tenants (id),
    season_id       text NOT NULL CONSTRAINT learning_events_season_id_not_blank
                        CHECK (btrim(season_id) <> ''),
    field_id        text NOT NULL CONSTRAINT learning_events_field_id_not_blank
                        CHECK (btrim(field_id) <> ''),
    payload         jsonb NOT NULL,
    payload_sha256  rai.sha256_hex NOT NULL,
    signature       rai.ed25519_signature NOT NULL,
    key_id          rai.key_id NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT learning_events_one_per_season_field UNIQUE (tenant_id, season_id, field_id),
    FOREIGN KEY (tenant_id, key_id) REFERENCES rai.signing_keys (tenant_id, key_id)
);

CREATE TABLE rai.training_runs (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id       uuid NOT NULL REFERENCES rai.tenants (id),
    workflow_id     text NOT NULL,
    status          text NOT NULL DEFAULT 'QUEUED' CONSTRAINT training_runs_status
                        CHECK (status IN ('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED')),
    job_name        text,
    dataset_uri     text,
    dataset_sha256  rai.sha256_hex,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    UNIQUE (tenant_id, id),
    -- A run has finished exactly when it is in a final status.
    CONSTRAINT training_runs_finished_when_final
        CHECK ((status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')) = (finished_at IS NOT NULL))
);

-- M22: at most one active (QUEUED or RUNNING) training run per tenant.
CREATE UNIQUE INDEX training_runs_one_active_per_tenant
    ON rai.training_runs (tenant_id) WHERE status IN ('QUEUED', 'RUNNING');

CREATE TABLE rai.model_status_transitions (
    from_status rai.model_status NOT NULL,
    to_status   rai.model_status NOT NULL,
    PRIMARY KEY (from_status, to_status)
);

INSERT INTO rai.model_status_transitions (from_status, to_status) VALUES
    ('REGISTERED', 'SHADOW'),
    ('REGISTERED', 'REJECTED'),
    ('SHADOW', 'CANARY'),
    ('SHADOW', 'REJECTED'),
    ('CANARY', 'PRODUCTION'),
    ('CANARY', 'REJECTED'),
    ('PRODUCTION', 'ARCHIVED'),
    ('PRODUCTION', 'ROLLED_BACK'),
    ('ARCHIVED', 'PRODUCTION');

CREATE TABLE rai.model_versions (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id            uuid NOT NULL REFERENCES rai.tenants (id),
    model_name           text NOT NULL CONSTRAINT model_versions_model_name_format
                             CHECK (model_name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$'),
    version              integer NOT NULL CONSTRAINT model_versions_version_positive
                             CHECK (version > 0),
    status               rai.model_status NOT NULL DEFAULT 'REGISTERED',
    artifact_uri         text NOT NULL,
    artifact_version_id  text,
    artifact_sha256      rai.sha256_hex NOT NULL,
    signature            rai.ed25519_signature NOT NULL,
    key_id               rai.key_id NOT NULL,
    dataset_uri          text NOT NULL,
    dataset_sha256       rai.sha256_hex NOT NULL,
    parent_version_id    uuid,
    lineage_hash         rai.sha256_hex NOT NULL,
    training_run_id      uuid,
    metrics              jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at           timestamptz NOT NULL DEFAULT now(),
    status_changed_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, id),
    CONSTRAINT model_versions_one_number_per_version UNIQUE (tenant_id, model_name, version),
    CONSTRAINT model_versions_not_own_parent CHECK (parent_version_id IS DISTINCT FROM id),
    FOREIGN KEY (tenant_id, parent_version_id) REFERENCES rai.model_versions (tenant_id, id),
    FOREIGN KEY (tenant_id, key_id) REFERENCES rai.signing_keys (tenant_id, key_id),
    FOREIGN KEY (tenant_id, training_run_id) REFERENCES rai.training_runs (tenant_id, id)
);

-- At most one PRODUCTION version per (tenant, model name).
CREATE UNIQUE INDEX model_versions_one_production_per_model
    ON rai.model_versions (tenant_id, model_name) WHERE status = 'PRODUCTION';

CREATE TABLE rai.model_status_history (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id         uuid NOT NULL,
    model_version_id  uuid NOT NULL,
    from_status       rai.model_status,
    to_status         rai.model_status NOT NULL,
    changed_at        timestamptz NOT NULL DEFAULT now(),
    reason            text,
    FOREIGN KEY (tenant_id, model_version_id) REFERENCES rai.model_versions (tenant_id, id)
);

CREATE INDEX model_status_history_by_version
    ON rai.model_status_history (tenant_id, model_version_id, id);

CREATE TABLE rai.drift_reports (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES rai.tenants (id),
    report_uri     text NOT NULL,
    report_sha256  rai.sha256_hex NOT NULL,
    signature      rai.ed25519_signature NOT NULL,
    key_id         rai.key_id NOT NULL,
    summary        jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, key_id) REFERENCES rai.signing_keys (tenant_id, key_id)
);

CREATE TABLE rai.bias_audits (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id         uuid NOT NULL REFERENCES rai.tenants (id),
    model_version_id  uuid NOT NULL,
    passed            boolean NOT NULL,
    metrics           jsonb NOT NULL,
    report_sha256     rai.sha256_hex NOT NULL,
    signature         rai.ed25519_signature NOT NULL,
    key_id            rai.key_id NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, model_version_id) REFERENCES rai.model_versions (tenant_id, id),
    FOREIGN KEY (tenant_id, key_id) REFERENCES rai.signing_keys (tenant_id, key_id)
);

CREATE INDEX bias_audits_by_version ON rai.bias_audits (tenant_id, model_version_id, created_at);

-- The tamper-evident audit log. seq, prev_hash and row_hash are set by the trigger
-- chain_integrity_check (triggers.sql); whatever a client sends for them is replaced.
CREATE TABLE rai.integrity_checks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES rai.tenants (id),
    seq         bigint NOT NULL,
    check_type  text NOT NULL CONSTRAINT integrity_checks_check_type_not_blank
                    CHECK (btrim(check_type) <> ''),
    subject_id  text NOT NULL,
    outcome     text NOT NULL CONSTRAINT integrity_checks_outcome_not_blank
                    CHECK (btrim(outcome) <> ''),
    details     jsonb NOT NULL DEFAULT '{}'::jsonb,
    prev_hash   rai.sha256_hex NOT NULL,
    row_hash    rai.sha256_hex NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integrity_checks_one_row_per_seq UNIQUE (tenant_id, seq)
);

CREATE TABLE rai.dead_letters (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id    uuid NOT NULL REFERENCES rai.tenants (id),
    queue        text NOT NULL CONSTRAINT dead_letters_queue_not_blank CHECK (btrim(queue) <> ''),
    workflow_id  text NOT NULL,
    error        text NOT NULL,
    attempts     integer NOT NULL CONSTRAINT dead_letters_attempts_positive CHECK (attempts > 0),
    created_at   timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz
);

CREATE INDEX dead_letters_unresolved ON rai.dead_letters (tenant_id, created_at)
    WHERE resolved_at IS NULL;

-- Privileges. rai_app gets DML on what it needs and nothing else: no TRUNCATE, no DDL, no
-- write on the status history (only the trigger writes it) or the FSM table. What rai_app may
-- technically do is further narrowed by the triggers, which bind the owner as well.
REVOKE ALL ON SCHEMA rai FROM PUBLIC;
GRANT USAGE ON SCHEMA rai TO rai_app;
REVOKE ALL ON ALL TABLES IN SCHEMA rai FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA rai FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rai.current_tenant_id() TO rai_app;

GRANT SELECT ON rai.model_status_transitions TO rai_app;
GRANT SELECT, INSERT, UPDATE ON rai.tenants TO rai_app;
GRANT SELECT, INSERT, UPDATE ON rai.signing_keys TO rai_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON rai.learning_events TO rai_app;
GRANT SELECT, INSERT, UPDATE ON rai.training_runs TO rai_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON rai.model_versions TO rai_app;
GRANT SELECT ON rai.model_status_history TO rai_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON rai.drift_reports TO rai_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON rai.bias_audits TO rai_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON rai.integrity_checks TO rai_app;
GRANT SELECT, INSERT, UPDATE ON rai.dead_letters TO rai_app;

-- Row-level security (M14): ENABLE and FORCE on every tenant table, so the owner is bound
-- too; one policy per command. (SELECT rai.current_tenant_id()) is evaluated once per query.
DO $$
DECLARE
    tenant_table text;
    key_column text;
BEGIN
    FOR tenant_table, key_column IN VALUES
        ('tenants', 'id'),
        ('signing_keys', 'tenant_id'),
        ('learning_events', 'tenant_id'),
        ('training_runs', 'tenant_id'),
        ('model_versions', 'tenant_id'),
        ('model_status_history', 'tenant_id'),
        ('drift_reports', 'tenant_id'),
        ('bias_audits', 'tenant_id'),
        ('integrity_checks', 'tenant_id'),
        ('dead_letters', 'tenant_id')
    LOOP
        EXECUTE format('ALTER TABLE rai.%I ENABLE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format('ALTER TABLE rai.%I FORCE ROW LEVEL SECURITY', tenant_table);
        EXECUTE format(
            'CREATE POLICY tenant_isolation_select ON rai.%I FOR SELECT '
            'USING (%I = (SELECT rai.current_tenant_id()))', tenant_table, key_column);
        EXECUTE format(
            'CREATE POLICY tenant_isolation_insert ON rai.%I FOR INSERT '
            'WITH CHECK (%I = (SELECT rai.current_tenant_id()))', tenant_table, key_column);
        EXECUTE format(
            'CREATE POLICY tenant_isolation_update ON rai.%I FOR UPDATE '
            'USING (%I = (SELECT rai.current_tenant_id())) '
            'WITH CHECK (%I = (SELECT rai.current_tenant_id()))',
            tenant_table, key_column, key_column);
        EXECUTE format(
            'CREATE POLICY tenant_isolation_delete ON rai.%I FOR DELETE '
            'USING (%I = (SELECT rai.current_tenant_id()))', tenant_table, key_column);
    END LOOP;
END;
$$;

-- RAI Level D: the laws that need procedural code. Applied after schema.sql, as rai_owner.
--
-- Every law raises with its own SQLSTATE (class "RA", user-defined), listed in db/errors.py:
--   RA001 lineage_integrity_violation     enforce_lineage_integrity
--   RA002 illegal_model_status_transition validate_model_status_transition, enforce_model_registration
--   RA003 shadow_requires_passed_bias_audit validate_model_status_transition
--   RA004 model_tampering                 prevent_model_tampering
--   RA005 append_only_violation           forbid_append_only_change
--   RA006 immutable_column                guard_immutable_columns
--   RA007 illegal_training_run_transition validate_training_run_transition
-- Laws expressed as constraints keep the standard SQLSTATEs: 23505 for
-- model_versions_one_production_per_model and training_runs_one_active_per_tenant,
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

-- Appends link to the tenant's previous row. A per-tenant advisory lock serialises appends, so
-- the chain never forks; the unique (tenant_id, seq) backs it up under any isolation level.
CREATE FUNCTION rai.chain_integrity_check() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    last_seq bigint;
    last_hash text;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('rai.integrity_checks:' || NEW.tenant_id::text, 0));
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

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA rai FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rai.current_tenant_id() TO rai_app;
GRANT EXECUTE ON FUNCTION
    rai.integrity_row_hash(text, uuid, bigint, text, text, text, jsonb, timestamptz) TO rai_app;
