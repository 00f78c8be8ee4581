-- RAI Level D: tables, constraints, roles' privileges and row-level security.
--
-- This file and triggers.sql are the current schema: a new database is made from them alone.
-- Databases made by earlier releases are brought here by the numbered files in migrations/
-- (see db/migrate.py); tests/integration/test_migrations.py proves both routes end in the
-- same catalog. Columns added by a migration stay last in their table, where ALTER TABLE put
-- them on upgraded databases.
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
    -- The per-tenant Redis mutex hands out a strictly increasing fencing token with each
    -- lease; a run may only be recorded with a token newer than every run before it, so a
    -- holder whose lease expired while it was paused can never write a run (RA008,
    -- triggers.sql). Required (RA008 without one), and every later write for the run's
    -- holder is refused once a newer fence exists (assert_current_fence).
    fencing_token   bigint NOT NULL,
    -- The Ed25519 key the training job signs its completion callback with (a fresh key pair
    -- per run; the job gets the private half).
    callback_public_key bytea CONSTRAINT training_runs_callback_key_length
                        CHECK (octet_length(callback_public_key) = 32),
    model_name      text,  -- what the run trains
    -- The Temporal run id of the workflow execution that owns the run (with workflow_id): a
    -- QUEUED/RUNNING run whose execution is closed is reaped (services/reaper.py).
    workflow_run_id text,
    UNIQUE (tenant_id, id),
    -- A run has finished exactly when it is in a final status.
    CONSTRAINT training_runs_finished_when_final
        CHECK ((status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')) = (finished_at IS NOT NULL))
);

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

CREATE TABLE rai.drift_reports (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id      uuid NOT NULL REFERENCES rai.tenants (id),
    report_uri     text NOT NULL,
    report_sha256  rai.sha256_hex NOT NULL,
    signature      rai.ed25519_signature NOT NULL,
    key_id         rai.key_id NOT NULL,
    summary        jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT drift_reports_tenant_id_id_key UNIQUE (tenant_id, id),
    FOREIGN KEY (tenant_id, key_id) REFERENCES rai.signing_keys (tenant_id, key_id)
);

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
    -- The drift report that triggered the training, so the version's whole provenance
    -- (artifact, dataset, lineage, drift report, bias audit) can be verified from it.
    drift_report_id      uuid,
    UNIQUE (tenant_id, id),
    CONSTRAINT model_versions_one_number_per_version UNIQUE (tenant_id, model_name, version),
    CONSTRAINT model_versions_not_own_parent CHECK (parent_version_id IS DISTINCT FROM id),
    FOREIGN KEY (tenant_id, parent_version_id) REFERENCES rai.model_versions (tenant_id, id),
    FOREIGN KEY (tenant_id, key_id) REFERENCES rai.signing_keys (tenant_id, key_id),
    FOREIGN KEY (tenant_id, training_run_id) REFERENCES rai.training_runs (tenant_id, id),
    CONSTRAINT model_versions_drift_report_fkey
        FOREIGN KEY (tenant_id, drift_report_id) REFERENCES rai.drift_reports (tenant_id, id)
);

-- At most one PRODUCTION version per (tenant, model name).
CREATE UNIQUE INDEX model_versions_one_production_per_model
    ON rai.model_versions (tenant_id, model_name) WHERE status = 'PRODUCTION';

-- A model version comes from at most one registration per training run (retries of the
-- registration step find it instead of registering twice).
CREATE UNIQUE INDEX model_versions_one_per_training_run
    ON rai.model_versions (tenant_id, training_run_id) WHERE training_run_id IS NOT NULL;

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

-- A pipeline run records its outcome once: a RECORD_OUTCOME activity retried after its first
-- attempt committed finds this row and appends nothing (services.pipeline.record_outcome), and
-- two attempts racing cannot both append. Outcomes recorded before migration 0010 carry no
-- run id and are left alone.
CREATE UNIQUE INDEX integrity_checks_one_outcome_per_run
    ON rai.integrity_checks (tenant_id, subject_id, (details ->> 'workflow_run_id'))
    WHERE check_type = 'pipeline.outcome';

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

-- Per-tenant API tokens (issue 9): only a token's SHA-256 is stored; see triggers.sql for the
-- laws (revoke once, never delete, audited) and the one cross-tenant question.
CREATE TABLE rai.api_tokens (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id     uuid NOT NULL REFERENCES rai.tenants (id),
    name          text NOT NULL CONSTRAINT api_tokens_name_format
                      CHECK (btrim(name) <> '' AND length(name) <= 200),
    token_sha256  rai.sha256_hex NOT NULL CONSTRAINT api_tokens_one_row_per_token UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz CONSTRAINT api_tokens_expire_after_creation
                      CHECK (expires_at IS NULL OR expires_at > created_at),
    revoked_at    timestamptz
);

CREATE INDEX api_tokens_by_tenant ON rai.api_tokens (tenant_id, created_at);

-- Per-tenant locks (rai.lock_tenant, triggers.sql): rows only the tenant's own transactions
-- can see, create and lock, unlike advisory locks, whose keys anyone can take.
CREATE TABLE rai.tenant_locks (
    tenant_id  uuid NOT NULL REFERENCES rai.tenants (id),
    lock_name  text NOT NULL CONSTRAINT tenant_locks_lock_name_not_blank
                   CHECK (btrim(lock_name) <> ''),
    PRIMARY KEY (tenant_id, lock_name)
);

-- Privileges. rai_app gets DML on what it needs and nothing else: no TRUNCATE, no DDL, no
-- write on the status history (only the trigger writes it) or the FSM table. What rai_app may
-- technically do is further narrowed by the triggers, which bind the owner as well.
-- rai_metrics (the worker's metrics collector) gets the schema's USAGE and, in triggers.sql,
-- EXECUTE on the rai.metrics_* aggregates: no table, no CREATE, nothing else.
REVOKE ALL ON SCHEMA rai FROM PUBLIC;
GRANT USAGE ON SCHEMA rai TO rai_app;
GRANT USAGE ON SCHEMA rai TO rai_metrics;
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
GRANT SELECT, INSERT, UPDATE ON rai.tenant_fences TO rai_app;
GRANT SELECT, INSERT, UPDATE ON rai.api_tokens TO rai_app;
GRANT SELECT, INSERT, UPDATE ON rai.tenant_locks TO rai_app;

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
        ('dead_letters', 'tenant_id'),
        ('tenant_fences', 'tenant_id'),
        ('api_tokens', 'tenant_id'),
        ('tenant_locks', 'tenant_id')
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

-- rai.api_token_valid_elsewhere() (below) runs as rai_owner and must see every tenant's rows
-- to answer its one question; rai_owner is NOLOGIN and nothing else runs as it but migrations.
CREATE POLICY owner_token_lookup ON rai.api_tokens FOR SELECT TO rai_owner USING (true);
