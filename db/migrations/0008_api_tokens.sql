-- Per-tenant API tokens (issue 9): who may call the /v1/tenants/{T}/... routes.
--
-- Only the SHA-256 of a token is stored (tokens are 256-bit random strings, so a plain hash is
-- enough: nothing to brute-force). A token row is a record: it may only be revoked, once, and is
-- never deleted; creating and revoking one appends a row to the tenant's hash-chained audit log
-- (integrity_checks) in the same transaction, whoever does it.

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

GRANT SELECT, INSERT, UPDATE ON rai.api_tokens TO rai_app;

ALTER TABLE rai.api_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE rai.api_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_select ON rai.api_tokens FOR SELECT
    USING (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_insert ON rai.api_tokens FOR INSERT
    WITH CHECK (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_update ON rai.api_tokens FOR UPDATE
    USING (tenant_id = (SELECT rai.current_tenant_id()))
    WITH CHECK (tenant_id = (SELECT rai.current_tenant_id()));
CREATE POLICY tenant_isolation_delete ON rai.api_tokens FOR DELETE
    USING (tenant_id = (SELECT rai.current_tenant_id()));
-- rai.api_token_valid_elsewhere() (below) runs as rai_owner and must see every tenant's rows
-- to answer its one question; rai_owner is NOLOGIN and nothing else runs as it but migrations.
CREATE POLICY owner_token_lookup ON rai.api_tokens FOR SELECT TO rai_owner USING (true);

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

REVOKE ALL ON FUNCTION rai.guard_api_token_revocation() FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.record_api_token_change() FROM PUBLIC;
REVOKE ALL ON FUNCTION rai.api_token_valid_elsewhere(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION rai.api_token_valid_elsewhere(text) TO rai_app;
