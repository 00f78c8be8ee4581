"""The Level D database laws (M12-M15), attacked as the services' own role, rai_app.

Each test runs in its own database copied from a migrated template. Every law has at least
one negative test; the owner-level tests show the triggers bind rai_owner as well.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import AsyncIterator
from uuid import UUID, uuid4

import asyncpg
import pytest

from db.errors import ONE_ACTIVE_TRAINING_RUN, ONE_PRODUCTION_PER_MODEL, Law
from db.repository import Database
from domain.lineage import lineage_hash
from services.keys import register_platform_key
from settings import app_dsn_for
from tests.integration.world import (
    TenantWorld,
    insert_audit,
    insert_model,
    new_tenant,
    set_status,
    sha,
    signature,
)

pytestmark = pytest.mark.integration

TENANT_TABLES = (
    "tenants",
    "signing_keys",
    "learning_events",
    "training_runs",
    "model_versions",
    "model_status_history",
    "drift_reports",
    "bias_audits",
    "integrity_checks",
    "dead_letters",
    "tenant_fences",
    "api_tokens",
    "tenant_locks",
)


@pytest.fixture
async def alpha(app_db: Database, db_admin_dsn: str) -> TenantWorld:
    return await new_tenant(app_db, db_admin_dsn, "alpha farms")


@pytest.fixture
async def beta(app_db: Database, db_admin_dsn: str) -> TenantWorld:
    return await new_tenant(app_db, db_admin_dsn, "beta farms")


@pytest.fixture
async def owner_conn(db_admin_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """An administrative connection; tests use SET LOCAL ROLE rai_owner inside transactions."""
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        yield conn
    finally:
        await conn.close()


def raises_law(law: Law | str) -> pytest.RaisesExc[asyncpg.PostgresError]:
    code = law.value if isinstance(law, Law) else law
    return pytest.raises(asyncpg.PostgresError, check=lambda e: e.sqlstate == code)


async def populate(db: Database, world: TenantWorld) -> UUID:
    """One row in every tenant table of ``world``; returns the model version id."""
    async with db.transaction(world.tenant_id) as conn:
        model = await insert_model(conn, world)
        await insert_audit(conn, world, model["id"], passed=True)
        await conn.execute(
            "INSERT INTO learning_events (tenant_id, season_id, field_id, payload, payload_sha256,"
            " signature, key_id) VALUES ($1, '2026', 'f-1', $2, $3, $4, $5)",
            world.tenant_id,
            {"yield_t_ha": 7.1},
            sha(),
            signature(),
            world.key_id,
        )
        await conn.execute(
            "INSERT INTO tenant_fences (tenant_id, fence, holder) VALUES ($1, 1, 'retrain/x/r')",
            world.tenant_id,
        )
        await conn.execute(
            "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
            " VALUES ($1, 'retrain/x', 1)",
            world.tenant_id,
        )
        await conn.execute(
            "INSERT INTO drift_reports (tenant_id, report_uri, report_sha256, signature, key_id,"
            " summary) VALUES ($1, 's3://r/d.json', $2, $3, $4, '{}')",
            world.tenant_id,
            sha(),
            signature(),
            world.key_id,
        )
        await conn.execute(
            "INSERT INTO dead_letters (tenant_id, queue, workflow_id, error, attempts)"
            " VALUES ($1, 'training-queue-failed', 'retrain/x', 'boom', 5)",
            world.tenant_id,
        )
        await conn.execute(
            "INSERT INTO api_tokens (tenant_id, name, token_sha256) VALUES ($1, 'client', $2)",
            world.tenant_id,
            sha(),
        )
    model_id: UUID = model["id"]
    return model_id


# --- M15 T-D1-01: UPDATE of an immutable field raises -------------------------------------


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("artifact_sha256", "0" * 64),
        ("signature", b"\x00" * 64),
        ("lineage_hash", "1" * 64),
        ("model_name", "other"),
        ("version", 99),
        ("metrics", {"rmse": 0.0}),
        ("artifact_uri", "s3://elsewhere/model.json"),
        ("created_at", None),
    ],
)
async def test_t_d1_01_update_of_immutable_field_raises(
    app_db: Database, alpha: TenantWorld, column: str, value: object
) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        model = await insert_model(conn, alpha)
    async with app_db.transaction(alpha.tenant_id) as conn:
        if column == "created_at":
            statement = "UPDATE model_versions SET created_at = created_at - interval '1 day'"
            args: tuple[object, ...] = (model["id"],)
            statement += " WHERE id = $1"
        else:
            statement = f"UPDATE model_versions SET {column} = $1 WHERE id = $2"
            args = (value, model["id"])
        with raises_law(Law.MODEL_TAMPERING) as info:
            await conn.execute(statement, *args)
        assert column in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        unchanged = await conn.fetchrow("SELECT * FROM model_versions WHERE id = $1", model["id"])
    assert dict(unchanged or {}) == dict(model)


async def test_status_timestamp_cannot_be_set_by_hand(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        model = await insert_model(conn, alpha)
        with raises_law(Law.MODEL_TAMPERING):
            await conn.execute(
                "UPDATE model_versions SET status_changed_at = now() - interval '1 year'"
                " WHERE id = $1",
                model["id"],
            )


async def test_model_versions_cannot_be_deleted(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        model = await insert_model(conn, alpha)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.MODEL_TAMPERING):
            await conn.execute("DELETE FROM model_versions WHERE id = $1", model["id"])


async def test_owner_is_bound_by_the_model_laws(
    app_db: Database, alpha: TenantWorld, owner_conn: asyncpg.Connection
) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        model = await insert_model(conn, alpha)
    for statement in (
        "UPDATE rai.model_versions SET artifact_sha256 = repeat('a', 64) WHERE id = $1",
        "DELETE FROM rai.model_versions WHERE id = $1",
    ):
        async with owner_conn.transaction():
            await owner_conn.execute("SET LOCAL ROLE rai_owner")
            await owner_conn.execute(
                "SELECT set_config('app.current_tenant_id', $1, true)", str(alpha.tenant_id)
            )
            with raises_law(Law.MODEL_TAMPERING):
                await owner_conn.execute(statement, model["id"])
    async with owner_conn.transaction():
        await owner_conn.execute("SET LOCAL ROLE rai_owner")
        with raises_law(Law.MODEL_TAMPERING):
            await owner_conn.execute("TRUNCATE rai.model_versions CASCADE")


# --- M15 T-D1-06 and M14: row-level security ------------------------------------------------


async def test_t_d1_06_cross_tenant_select_is_empty(
    app_db: Database, alpha: TenantWorld, beta: TenantWorld
) -> None:
    await populate(app_db, alpha)
    async with app_db.transaction(beta.tenant_id) as conn:
        for table in TENANT_TABLES:
            key = "id" if table == "tenants" else "tenant_id"
            leaked = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {key} = $1", alpha.tenant_id
            )
            assert leaked == 0, table
            # beta sees only itself, whatever the query asks for
            others = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE {key} <> $1", beta.tenant_id
            )
            assert others == 0, table
    async with app_db.transaction(alpha.tenant_id) as conn:
        for table in TENANT_TABLES:
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") >= 1, table


@pytest.mark.parametrize("setting", [None, "", "not-a-uuid", "1; DROP TABLE tenants", "00000000"])
async def test_no_or_malformed_tenant_sees_nothing_and_writes_nothing(
    app_db: Database, alpha: TenantWorld, db_admin_dsn: str, setting: str | None
) -> None:
    await populate(app_db, alpha)
    from settings import app_dsn_for

    conn = await asyncpg.connect(app_dsn_for(db_admin_dsn), server_settings={"search_path": "rai"})
    try:
        async with conn.transaction():
            if setting is not None:
                await conn.execute("SELECT set_config('app.current_tenant_id', $1, true)", setting)
            for table in TENANT_TABLES:
                assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, table
        for statement, args in (
            ("INSERT INTO tenants (id, name) VALUES ($1, 'x')", (uuid4(),)),
            (
                "INSERT INTO dead_letters (tenant_id, queue, workflow_id, error, attempts)"
                " VALUES ($1, 'q', 'w', 'e', 1)",
                (alpha.tenant_id,),
            ),
        ):
            async with conn.transaction():
                if setting is not None:
                    await conn.execute(
                        "SELECT set_config('app.current_tenant_id', $1, true)", setting
                    )
                with raises_law(Law.ROW_LEVEL_SECURITY):
                    await conn.execute(statement, *args)
        async with conn.transaction():
            if setting is not None:
                await conn.execute("SELECT set_config('app.current_tenant_id', $1, true)", setting)
            assert await conn.execute("UPDATE dead_letters SET resolved_at = now()") == "UPDATE 0"
    finally:
        await conn.close()


async def test_cross_tenant_insert_is_refused(
    app_db: Database, alpha: TenantWorld, beta: TenantWorld
) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.ROW_LEVEL_SECURITY):
            await conn.execute(
                "INSERT INTO dead_letters (tenant_id, queue, workflow_id, error, attempts)"
                " VALUES ($1, 'q', 'w', 'e', 1)",
                beta.tenant_id,
            )
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.ROW_LEVEL_SECURITY):
            await conn.execute(
                "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
                " VALUES ($1, 'w', 1)",
                beta.tenant_id,
            )


async def test_cross_tenant_update_and_delete_touch_nothing(
    app_db: Database, alpha: TenantWorld, beta: TenantWorld
) -> None:
    await populate(app_db, beta)
    async with app_db.transaction(alpha.tenant_id) as conn:
        assert await conn.execute("UPDATE dead_letters SET resolved_at = now()") == "UPDATE 0"
        assert await conn.execute("UPDATE tenants SET name = 'mine'") == "UPDATE 1"  # itself only
        assert await conn.execute("DELETE FROM model_versions") == "DELETE 0"
        assert await conn.execute("UPDATE signing_keys SET revoked_at = now()") == "UPDATE 1"
    async with app_db.transaction(beta.tenant_id) as conn:
        assert await conn.fetchval("SELECT name FROM tenants") == "beta farms"
        assert (
            await conn.fetchval("SELECT count(*) FROM signing_keys WHERE revoked_at IS NULL") == 1
        )


async def test_a_row_cannot_be_moved_to_another_tenant(
    app_db: Database, alpha: TenantWorld, beta: TenantWorld
) -> None:
    await populate(app_db, alpha)
    for table, law in (
        ("dead_letters", Law.IMMUTABLE_COLUMN),
        ("training_runs", Law.IMMUTABLE_COLUMN),
        ("model_versions", Law.MODEL_TAMPERING),
        ("drift_reports", Law.APPEND_ONLY),
        ("signing_keys", Law.IMMUTABLE_COLUMN),
    ):
        async with app_db.transaction(alpha.tenant_id) as conn:
            with raises_law(law):
                await conn.execute(f"UPDATE {table} SET tenant_id = $1", beta.tenant_id)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.IMMUTABLE_COLUMN):
            await conn.execute("UPDATE tenants SET id = $1", beta.tenant_id)


async def test_cross_tenant_references_are_refused(
    app_db: Database, alpha: TenantWorld, beta: TenantWorld
) -> None:
    beta_model = await populate(app_db, beta)
    async with app_db.transaction(alpha.tenant_id) as conn:
        # a bias audit of alpha's cannot point at beta's model
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await insert_audit(conn, alpha, beta_model, passed=True)
    async with app_db.transaction(alpha.tenant_id) as conn:
        # nor can alpha sign with beta's key
        with pytest.raises(asyncpg.ForeignKeyViolationError):
            await insert_model(conn, TenantWorld(alpha.tenant_id, beta.key_id))


# --- the roles ----------------------------------------------------------------------------


async def test_rai_app_has_no_power_beyond_dml(owner_conn: asyncpg.Connection) -> None:
    role = await owner_conn.fetchrow("SELECT * FROM pg_roles WHERE rolname = 'rai_app'")
    assert role is not None
    assert not role["rolsuper"]
    assert not role["rolbypassrls"]
    assert not role["rolcreaterole"]
    assert not role["rolcreatedb"]
    owned = await owner_conn.fetchval(
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner"
        " WHERE r.rolname = 'rai_app'"
    )
    assert owned == 0
    forbidden = await owner_conn.fetch(
        "SELECT table_name, privilege_type FROM information_schema.role_table_grants"
        " WHERE grantee = 'rai_app'"
        " AND privilege_type NOT IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')"
    )
    assert forbidden == []
    owner = await owner_conn.fetchrow("SELECT * FROM pg_roles WHERE rolname = 'rai_owner'")
    assert owner is not None
    assert not owner["rolsuper"]
    assert not owner["rolbypassrls"]
    assert not owner["rolcanlogin"]


@pytest.mark.parametrize(
    "statement",
    [
        "TRUNCATE rai.drift_reports",
        "TRUNCATE rai.model_versions CASCADE",
        "ALTER TABLE rai.model_versions DISABLE TRIGGER ALL",
        "ALTER TABLE rai.model_versions NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation_select ON rai.tenants",
        "SET ROLE rai_owner",
        "SET session_replication_role = replica",
        "CREATE TABLE rai.mine (x int)",
        "CREATE TABLE public.mine (x int)",
        "INSERT INTO rai.model_status_transitions VALUES ('REGISTERED', 'PRODUCTION')",
        "DELETE FROM rai.model_status_transitions",
        "CREATE OR REPLACE FUNCTION rai.current_tenant_id() RETURNS uuid LANGUAGE sql"
        " AS 'SELECT NULL::uuid'",
    ],
)
async def test_rai_app_cannot_change_the_rules(
    app_db: Database, alpha: TenantWorld, statement: str
) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(statement)


async def test_every_tenant_table_enables_and_forces_rls(owner_conn: asyncpg.Connection) -> None:
    rows = await owner_conn.fetch(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,"
        " array_agg(p.polcmd ORDER BY p.polcmd) AS commands"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_policy p ON p.polrelid = c.oid"
        " WHERE n.nspname = 'rai' AND c.relkind = 'r' GROUP BY 1, 2, 3"
    )
    by_table = {row["relname"]: row for row in rows}
    for table in TENANT_TABLES:
        row = by_table[table]
        assert row["relrowsecurity"], table
        assert row["relforcerowsecurity"], table
        # insert/delete/select/update; one more SELECT policy, for rai_owner only, on
        # api_tokens (what rai.api_token_valid_elsewhere() runs as) and on the tables the
        # metrics aggregates count (rai.metrics_*(), migration 0010)
        owner_reads = {
            "api_tokens",
            "tenants",
            "dead_letters",
            "training_runs",
            "model_status_history",
        }
        extra = [b"r"] if table in owner_reads else []
        assert sorted(row["commands"]) == sorted([b"a", b"d", b"r", b"w", *extra]), table
    # every table with a tenant_id column is covered
    with_tenant = {
        r["table_name"]
        for r in await owner_conn.fetch(
            "SELECT table_name FROM information_schema.columns"
            " WHERE table_schema = 'rai' AND column_name = 'tenant_id'"
        )
    }
    assert with_tenant <= set(TENANT_TABLES)


async def test_services_refuse_a_privileged_login(db_admin_dsn: str) -> None:
    from db.repository import UnsafeDatabaseRoleError

    with pytest.raises(UnsafeDatabaseRoleError, match="rai_app"):
        await Database.connect(db_admin_dsn)


# --- the status machine ---------------------------------------------------------------------


async def test_the_whole_legal_path_and_its_history(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        model = await insert_model(conn, alpha)
        await insert_audit(conn, alpha, model["id"], passed=True)
    path = ["SHADOW", "CANARY", "PRODUCTION", "ROLLED_BACK"]
    for status in path:
        async with app_db.transaction(alpha.tenant_id) as conn:
            await conn.execute(
                "SELECT set_config('app.status_change_reason', $1, true)", f"to {status}"
            )
            await set_status(conn, model["id"], status)
    async with app_db.transaction(alpha.tenant_id) as conn:
        history = await conn.fetch(
            "SELECT from_status, to_status, reason FROM model_status_history"
            " WHERE model_version_id = $1 ORDER BY id",
            model["id"],
        )
        changed_at = await conn.fetchval(
            "SELECT status_changed_at FROM model_versions WHERE id = $1", model["id"]
        )
    assert [(r["from_status"], r["to_status"]) for r in history] == [
        (None, "REGISTERED"),
        ("REGISTERED", "SHADOW"),
        ("SHADOW", "CANARY"),
        ("CANARY", "PRODUCTION"),
        ("PRODUCTION", "ROLLED_BACK"),
    ]
    assert [r["reason"] for r in history[1:]] == [f"to {s}" for s in path]
    assert changed_at > model["status_changed_at"]


async def test_every_illegal_move_is_refused(app_db: Database, alpha: TenantWorld) -> None:
    statuses = [
        "REGISTERED",
        "SHADOW",
        "CANARY",
        "PRODUCTION",
        "ARCHIVED",
        "REJECTED",
        "ROLLED_BACK",
    ]
    async with app_db.transaction(alpha.tenant_id) as conn:
        allowed = {
            (r["from_status"], r["to_status"])
            for r in await conn.fetch("SELECT * FROM model_status_transitions")
        }
    # Reach each status by a legal path, then try every move from there.
    paths = {
        "REGISTERED": [],
        "SHADOW": ["SHADOW"],
        "CANARY": ["SHADOW", "CANARY"],
        "PRODUCTION": ["SHADOW", "CANARY", "PRODUCTION"],
        "ARCHIVED": ["SHADOW", "CANARY", "PRODUCTION", "ARCHIVED"],
        "REJECTED": ["REJECTED"],
        "ROLLED_BACK": ["SHADOW", "CANARY", "PRODUCTION", "ROLLED_BACK"],
    }
    refused = 0
    for version, (start, path) in enumerate(paths.items(), start=1):
        async with app_db.transaction(alpha.tenant_id) as conn:
            model = await insert_model(conn, alpha, model_name=f"m{version}")
            await insert_audit(conn, alpha, model["id"], passed=True)
            for status in path:
                await set_status(conn, model["id"], status)
        for target in statuses:
            if target == start or (start, target) in allowed:
                continue
            async with app_db.transaction(alpha.tenant_id) as conn:
                with raises_law(Law.ILLEGAL_MODEL_STATUS_TRANSITION):
                    await set_status(conn, model["id"], target)
            refused += 1
    assert refused == 7 * 6 - len(allowed)


async def test_a_new_version_must_start_registered(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.ILLEGAL_MODEL_STATUS_TRANSITION):
            await insert_model(conn, alpha, status="PRODUCTION")


async def test_shadow_requires_a_passed_bias_audit(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        model = await insert_model(conn, alpha)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.SHADOW_REQUIRES_PASSED_BIAS_AUDIT) as info:
            await set_status(conn, model["id"], "SHADOW")
        assert "no bias audit" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        await insert_audit(conn, alpha, model["id"], passed=False)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.SHADOW_REQUIRES_PASSED_BIAS_AUDIT) as info:
            await set_status(conn, model["id"], "SHADOW")
        assert "failed" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        await insert_audit(conn, alpha, model["id"], passed=True)
        await set_status(conn, model["id"], "SHADOW")


async def insert_key(conn: asyncpg.Connection, tenant_id: UUID, purpose: str) -> str:
    public_key = secrets.token_bytes(32)
    key_id = hashlib.sha256(public_key).hexdigest()[:32]
    await conn.execute(
        "INSERT INTO signing_keys (tenant_id, key_id, public_key, purpose) VALUES ($1, $2, $3, $4)",
        tenant_id,
        key_id,
        public_key,
        purpose,
    )
    return key_id


async def test_rai_app_cannot_insert_a_platform_key(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.PLATFORM_KEY_ADMINISTRATIVE) as info:
            await insert_key(conn, alpha.tenant_id, "platform")
        assert "administrative path" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        await insert_key(conn, alpha.tenant_id, "device")  # device keys stay rai_app's
        # the only platform key is the one the administrative path registered
        assert await conn.fetchval(
            "SELECT array_agg(key_id) FROM signing_keys WHERE purpose = 'platform'"
        ) == [alpha.key_id]


async def test_the_administrative_path_registers_platform_keys(
    app_db: Database, db_admin_dsn: str, alpha: TenantWorld
) -> None:
    public_key = secrets.token_bytes(32)
    kid = await register_platform_key(db_admin_dsn, alpha.tenant_id, public_key)
    assert await register_platform_key(db_admin_dsn, alpha.tenant_id, public_key) == kid
    async with app_db.transaction(alpha.tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT purpose, revoked_at FROM signing_keys WHERE key_id = $1", kid
        )
        audit = await conn.fetch(
            "SELECT subject_id FROM integrity_checks WHERE check_type = 'key.registered'"
        )
    assert row is not None
    assert (row["purpose"], row["revoked_at"]) == ("platform", None)
    assert [r["subject_id"] for r in audit] == [alpha.key_id, kid]  # once each
    with pytest.raises(ValueError, match="cannot act as rai_owner"):  # not with the app login
        await register_platform_key(app_dsn_for(db_admin_dsn), alpha.tenant_id, public_key)
    with pytest.raises(ValueError, match="no tenant"):
        await register_platform_key(db_admin_dsn, uuid4(), public_key)


async def test_a_revoked_key_stays_revoked(
    app_db: Database, alpha: TenantWorld, owner_conn: asyncpg.Connection
) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        device = await insert_key(conn, alpha.tenant_id, "device")
        # revoking is open to rai_app: it only takes trust away
        await conn.execute(
            "UPDATE signing_keys SET revoked_at = now() WHERE key_id = ANY($1::text[])",
            [alpha.key_id, device],
        )
    for kid in (alpha.key_id, device):
        async with app_db.transaction(alpha.tenant_id) as conn:
            with raises_law(Law.PLATFORM_KEY_ADMINISTRATIVE):
                await conn.execute(
                    "UPDATE signing_keys SET revoked_at = NULL WHERE key_id = $1", kid
                )
    async with owner_conn.transaction():  # not even the owner
        await owner_conn.execute("SET LOCAL ROLE rai_owner")
        await owner_conn.execute(
            "SELECT set_config('app.current_tenant_id', $1, true)", str(alpha.tenant_id)
        )
        with raises_law(Law.PLATFORM_KEY_ADMINISTRATIVE):
            await owner_conn.execute(
                "UPDATE rai.signing_keys SET revoked_at = NULL WHERE key_id = $1", alpha.key_id
            )


async def test_shadow_requires_an_audit_signed_by_an_active_platform_key(
    app_db: Database, db_admin_dsn: str, alpha: TenantWorld
) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        model = await insert_model(conn, alpha)
        device = await insert_key(conn, alpha.tenant_id, "device")
        await insert_audit(conn, alpha, model["id"], passed=True, key_id=device)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.SHADOW_REQUIRES_PASSED_BIAS_AUDIT) as info:
            await set_status(conn, model["id"], "SHADOW")
        assert "a device key, not a platform key" in str(info.value)

    second = await register_platform_key(db_admin_dsn, alpha.tenant_id, secrets.token_bytes(32))
    async with app_db.transaction(alpha.tenant_id) as conn:
        await insert_audit(conn, alpha, model["id"], passed=True, key_id=second)
        await conn.execute("UPDATE signing_keys SET revoked_at = now() WHERE key_id = $1", second)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.SHADOW_REQUIRES_PASSED_BIAS_AUDIT) as info:
            await set_status(conn, model["id"], "SHADOW")
        assert "a revoked platform key" in str(info.value)

    async with app_db.transaction(alpha.tenant_id) as conn:
        await insert_audit(conn, alpha, model["id"], passed=True)  # the active platform key
        await set_status(conn, model["id"], "SHADOW")
        assert await conn.fetchval("SELECT status FROM model_versions") == "SHADOW"


async def test_at_most_one_production_per_model(app_db: Database, alpha: TenantWorld) -> None:
    ids = []
    async with app_db.transaction(alpha.tenant_id) as conn:
        for version in (1, 2):
            model = await insert_model(conn, alpha, version=version)
            await insert_audit(conn, alpha, model["id"], passed=True)
            for status in ("SHADOW", "CANARY"):
                await set_status(conn, model["id"], status)
            ids.append(model["id"])
        await set_status(conn, ids[0], "PRODUCTION")
        other = await insert_model(conn, alpha, model_name="moisture")
        await insert_audit(conn, alpha, other["id"], passed=True)
        for status in ("SHADOW", "CANARY", "PRODUCTION"):  # another model may be in production
            await set_status(conn, other["id"], status)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.UNIQUE) as info:
            await set_status(conn, ids[1], "PRODUCTION")
        assert ONE_PRODUCTION_PER_MODEL in str(info.value)
    # archive first, then promote: the way a promotion is done, in one transaction
    async with app_db.transaction(alpha.tenant_id) as conn:
        await set_status(conn, ids[0], "ARCHIVED")
        await set_status(conn, ids[1], "PRODUCTION")


async def test_history_cannot_be_forged(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        model = await insert_model(conn, alpha)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO model_status_history (tenant_id, model_version_id, to_status)"
                " VALUES ($1, $2, 'PRODUCTION')",
                alpha.tenant_id,
                model["id"],
            )


# --- lineage ----------------------------------------------------------------------------


async def test_an_honest_lineage_chain_is_accepted(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        root = await insert_model(conn, alpha, version=1)
        child = await insert_model(conn, alpha, version=2, parent=root)
        grandchild = await insert_model(conn, alpha, version=3, parent=child)
    assert grandchild["lineage_hash"] == lineage_hash(
        child["lineage_hash"], grandchild["artifact_sha256"], grandchild["dataset_sha256"]
    )


async def test_lineage_mismatch_is_refused(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        root = await insert_model(conn, alpha, version=1)
    async with app_db.transaction(alpha.tenant_id) as conn:
        # a root hash for a version that claims a parent
        artifact, dataset = sha(), sha()
        with raises_law(Law.LINEAGE_INTEGRITY):
            await insert_model(
                conn,
                alpha,
                version=2,
                parent=root,
                artifact_sha256=artifact,
                dataset_sha256=dataset,
                lineage_hash=lineage_hash(None, artifact, dataset),
            )
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.LINEAGE_INTEGRITY):
            await insert_model(conn, alpha, version=2, lineage_hash=sha())


async def test_parent_of_another_tenant_or_model_is_refused(
    app_db: Database, alpha: TenantWorld, beta: TenantWorld
) -> None:
    async with app_db.transaction(beta.tenant_id) as conn:
        foreign = await insert_model(conn, beta)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.LINEAGE_INTEGRITY) as info:
            await insert_model(conn, alpha, parent=foreign)
        assert "not found" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        other_model = await insert_model(conn, alpha, model_name="moisture")
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.LINEAGE_INTEGRITY) as info:
            await insert_model(conn, alpha, model_name="yield", parent=other_model)
        assert "moisture" in str(info.value)


async def test_hashes_must_be_lowercase_hex(app_db: Database, alpha: TenantWorld) -> None:
    artifact, dataset = sha().upper(), sha()
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.CHECK):
            await insert_model(conn, alpha, artifact_sha256=artifact, dataset_sha256=dataset)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.CHECK):
            await insert_model(conn, alpha, signature=b"short")


# --- append-only logs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "table", ["drift_reports", "bias_audits", "integrity_checks", "learning_events"]
)
async def test_append_only_tables_refuse_update_and_delete(
    app_db: Database, alpha: TenantWorld, owner_conn: asyncpg.Connection, table: str
) -> None:
    await populate(app_db, alpha)
    for statement in (f"UPDATE {table} SET tenant_id = tenant_id", f"DELETE FROM {table}"):
        async with app_db.transaction(alpha.tenant_id) as conn:
            with raises_law(Law.APPEND_ONLY):
                await conn.execute(statement)
    async with owner_conn.transaction():
        await owner_conn.execute("SET LOCAL ROLE rai_owner")
        with raises_law(Law.APPEND_ONLY):
            await owner_conn.execute(f"TRUNCATE rai.{table} CASCADE")


async def test_status_history_is_append_only_even_for_the_owner(
    app_db: Database, alpha: TenantWorld, owner_conn: asyncpg.Connection
) -> None:
    await populate(app_db, alpha)
    for statement in (
        "UPDATE rai.model_status_history SET reason = 'forged'",
        "DELETE FROM rai.model_status_history",
        "TRUNCATE rai.model_status_history",
    ):
        async with owner_conn.transaction():
            await owner_conn.execute("SET LOCAL ROLE rai_owner")
            await owner_conn.execute(
                "SELECT set_config('app.current_tenant_id', $1, true)", str(alpha.tenant_id)
            )
            with raises_law(Law.APPEND_ONLY):
                await owner_conn.execute(statement)


async def test_events_are_unique_per_season_and_field(app_db: Database, alpha: TenantWorld) -> None:
    await populate(app_db, alpha)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                "INSERT INTO learning_events (tenant_id, season_id, field_id, payload,"
                " payload_sha256, signature, key_id) VALUES ($1, '2026', 'f-1', '{}', $2, $3, $4)",
                alpha.tenant_id,
                sha(),
                signature(),
                alpha.key_id,
            )


# --- training runs ------------------------------------------------------------------------


async def test_one_active_training_run_per_tenant(
    app_db: Database, alpha: TenantWorld, beta: TenantWorld
) -> None:
    insert = (
        "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
        " VALUES ($1, $2, $3) RETURNING id"
    )
    async with app_db.transaction(alpha.tenant_id) as conn:
        run = await conn.fetchval(insert, alpha.tenant_id, "retrain/a", 1)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.UNIQUE) as info:
            await conn.fetchval(insert, alpha.tenant_id, "retrain/a", 2)
        assert ONE_ACTIVE_TRAINING_RUN in str(info.value)
    async with app_db.transaction(beta.tenant_id) as conn:  # other tenants are not blocked
        await conn.fetchval(insert, beta.tenant_id, "retrain/b", 1)
    async with app_db.transaction(alpha.tenant_id) as conn:
        await conn.execute(
            "UPDATE training_runs SET status = 'RUNNING', started_at = now() WHERE id = $1", run
        )
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.UNIQUE):
            await conn.fetchval(insert, alpha.tenant_id, "retrain/a", 3)
    async with app_db.transaction(alpha.tenant_id) as conn:
        await conn.execute(
            "UPDATE training_runs SET status = 'SUCCEEDED', finished_at = now() WHERE id = $1", run
        )
        await conn.fetchval(insert, alpha.tenant_id, "retrain/a", 4)


async def test_concurrent_run_starts_have_one_winner(app_db: Database, alpha: TenantWorld) -> None:
    async def start(fence: int) -> bool:
        try:
            async with app_db.transaction(alpha.tenant_id) as conn:
                await conn.execute(
                    "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
                    " VALUES ($1, 'w', $2)",
                    alpha.tenant_id,
                    fence,
                )
        except asyncpg.PostgresError as exc:  # the active run, or a newer fence, wins
            if exc.sqlstate in (Law.UNIQUE, Law.STALE_FENCE):
                return False
            raise
        return True

    outcomes = await asyncio.gather(*(start(fence) for fence in range(1, 21)))
    assert outcomes.count(True) == 1


async def test_training_runs_only_move_forward(app_db: Database, alpha: TenantWorld) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        run = await conn.fetchval(
            "INSERT INTO training_runs (tenant_id, workflow_id, dataset_sha256, fencing_token)"
            " VALUES ($1, 'w', $2, 1) RETURNING id",
            alpha.tenant_id,
            sha(),
        )
        await conn.execute(
            "UPDATE training_runs SET status = 'FAILED', finished_at = now() WHERE id = $1", run
        )
    for statement in (
        "UPDATE training_runs SET status = 'RUNNING', finished_at = NULL WHERE id = $1",
        "UPDATE training_runs SET status = 'SUCCEEDED' WHERE id = $1",
    ):
        async with app_db.transaction(alpha.tenant_id) as conn:
            with raises_law(Law.ILLEGAL_TRAINING_RUN_TRANSITION):
                await conn.execute(statement, run)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.IMMUTABLE_COLUMN):
            await conn.execute(
                "UPDATE training_runs SET dataset_sha256 = $2 WHERE id = $1", run, sha()
            )
    async with app_db.transaction(alpha.tenant_id) as conn:
        queued = await conn.fetchval(
            "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
            " VALUES ($1, 'w', 2) RETURNING id",
            alpha.tenant_id,
        )
        with raises_law(Law.CHECK):  # finished means finished_at is set
            await conn.execute("UPDATE training_runs SET status = 'FAILED' WHERE id = $1", queued)


@pytest.mark.parametrize("status", ["RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"])
async def test_training_runs_start_queued(
    app_db: Database, alpha: TenantWorld, status: str
) -> None:
    finished_at = "now()" if status in ("SUCCEEDED", "FAILED", "CANCELLED") else "NULL"
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.ILLEGAL_TRAINING_RUN_TRANSITION) as info:
            await conn.execute(
                "INSERT INTO training_runs (tenant_id, workflow_id, status, started_at,"
                f" finished_at, fencing_token) VALUES ($1, 'w', $2, now(), {finished_at}, 1)",
                alpha.tenant_id,
                status,
            )
        assert "starts QUEUED" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        assert await conn.fetchval("SELECT count(*) FROM training_runs") == 0
        await conn.execute(
            "INSERT INTO training_runs (tenant_id, workflow_id, status, fencing_token)"
            " VALUES ($1, 'w', 'QUEUED', 1)",
            alpha.tenant_id,
        )


async def test_the_owner_cannot_insert_a_finished_training_run(
    owner_conn: asyncpg.Connection, alpha: TenantWorld
) -> None:
    async with owner_conn.transaction():
        await owner_conn.execute("SET LOCAL ROLE rai_owner")
        await owner_conn.execute(
            "SELECT set_config('app.current_tenant_id', $1, true)", str(alpha.tenant_id)
        )
        with raises_law(Law.ILLEGAL_TRAINING_RUN_TRANSITION):
            await owner_conn.execute(
                "INSERT INTO rai.training_runs (tenant_id, workflow_id, status, finished_at,"
                " fencing_token) VALUES ($1, 'w', 'SUCCEEDED', now(), 1)",
                alpha.tenant_id,
            )


async def test_dead_letters_keep_their_content(app_db: Database, alpha: TenantWorld) -> None:
    await populate(app_db, alpha)
    async with app_db.transaction(alpha.tenant_id) as conn:
        assert await conn.execute("UPDATE dead_letters SET resolved_at = now()") == "UPDATE 1"
        with raises_law(Law.IMMUTABLE_COLUMN):
            await conn.execute("UPDATE dead_letters SET error = 'nothing happened'")


async def test_a_stale_fencing_token_cannot_record_a_run(
    app_db: Database, alpha: TenantWorld, beta: TenantWorld
) -> None:
    async def record_finished_run(conn: asyncpg.Connection, tenant_id: UUID, fence: int) -> None:
        """Record a run with ``fence`` and end it, so the next one is not blocked as active."""
        run = await conn.fetchval(
            "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
            " VALUES ($1, 'w', $2) RETURNING id",
            tenant_id,
            fence,
        )
        await conn.execute(
            "UPDATE training_runs SET status = 'FAILED', finished_at = now() WHERE id = $1", run
        )

    async with app_db.transaction(alpha.tenant_id) as conn:
        await record_finished_run(conn, alpha.tenant_id, 7)
    for stale in (7, 3):
        async with app_db.transaction(alpha.tenant_id) as conn:
            with raises_law(Law.STALE_FENCE):
                await record_finished_run(conn, alpha.tenant_id, stale)
    async with app_db.transaction(alpha.tenant_id) as conn:
        await record_finished_run(conn, alpha.tenant_id, 8)
    async with app_db.transaction(beta.tenant_id) as conn:  # tokens are per tenant
        await record_finished_run(conn, beta.tenant_id, 1)


@pytest.mark.parametrize("fence", ["NULL", "DEFAULT"])
async def test_a_run_without_a_fencing_token_is_refused(
    app_db: Database, alpha: TenantWorld, fence: str
) -> None:
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.STALE_FENCE) as info:
            await conn.execute(
                "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
                f" VALUES ($1, 'w', {fence})",
                alpha.tenant_id,
            )
        assert "no fencing token" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        assert await conn.fetchval("SELECT count(*) FROM training_runs") == 0


async def test_the_owner_cannot_record_a_run_without_a_fence_either(
    owner_conn: asyncpg.Connection, alpha: TenantWorld
) -> None:
    async with owner_conn.transaction():
        await owner_conn.execute("SET LOCAL ROLE rai_owner")
        await owner_conn.execute(
            "SELECT set_config('app.current_tenant_id', $1, true)", str(alpha.tenant_id)
        )
        with raises_law(Law.STALE_FENCE):
            await owner_conn.execute(
                "INSERT INTO rai.training_runs (tenant_id, workflow_id) VALUES ($1, 'w')",
                alpha.tenant_id,
            )


async def record_run(conn: asyncpg.Connection, tenant_id: UUID, fence: int) -> UUID:
    run: UUID = await conn.fetchval(
        "INSERT INTO training_runs (tenant_id, workflow_id, fencing_token)"
        " VALUES ($1, 'w', $2) RETURNING id",
        tenant_id,
        fence,
    )
    return run


async def grant_fence(conn: asyncpg.Connection, tenant_id: UUID, fence: int) -> None:
    await conn.execute(
        "INSERT INTO tenant_fences (tenant_id, fence, holder) VALUES ($1, $2, 'h')"
        " ON CONFLICT (tenant_id) DO UPDATE SET fence = EXCLUDED.fence",
        tenant_id,
        fence,
    )


async def test_a_newer_fence_refuses_every_later_write_of_the_old_holder(
    app_db: Database, alpha: TenantWorld
) -> None:
    """Run 5 trained and registered its model; run 7 is queued when the mutex grants fence 8
    to a new holder (run 7's lease was lost). From then on neither old holder advances its
    run, registers a model or promotes one to SHADOW; ending a run stays open."""
    async with app_db.transaction(alpha.tenant_id) as conn:
        await grant_fence(conn, alpha.tenant_id, 5)
        done = await record_run(conn, alpha.tenant_id, 5)
        for status, column in (("RUNNING", "started_at"), ("SUCCEEDED", "finished_at")):
            await conn.execute(
                f"UPDATE training_runs SET status = $2, {column} = now() WHERE id = $1",
                done,
                status,
            )
        model = await insert_model(conn, alpha, training_run_id=done)
        await insert_audit(conn, alpha, model["id"], passed=True)
        await grant_fence(conn, alpha.tenant_id, 7)
        queued = await record_run(conn, alpha.tenant_id, 7)
        await grant_fence(conn, alpha.tenant_id, 8)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.STALE_FENCE) as info:
            await conn.execute(
                "UPDATE training_runs SET status = 'RUNNING', started_at = now() WHERE id = $1",
                queued,
            )
        assert "the move to RUNNING" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.STALE_FENCE) as info:
            await set_status(conn, model["id"], "SHADOW")
        assert "promoting the model to SHADOW" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:
        with raises_law(Law.STALE_FENCE) as info:
            await insert_model(conn, alpha, version=2, training_run_id=queued)
        assert "registering the model" in str(info.value)
    async with app_db.transaction(alpha.tenant_id) as conn:  # ending a run stays open
        await conn.execute(
            "UPDATE training_runs SET status = 'FAILED', finished_at = now() WHERE id = $1",
            queued,
        )
    async with app_db.transaction(alpha.tenant_id) as conn:  # the old holder cannot record a run
        with raises_law(Law.STALE_FENCE):
            await record_run(conn, alpha.tenant_id, 7)
    async with app_db.transaction(alpha.tenant_id) as conn:  # the fence only rises
        with raises_law(Law.STALE_FENCE):
            await grant_fence(conn, alpha.tenant_id, 3)
    async with app_db.transaction(alpha.tenant_id) as conn:  # the new holder writes
        newest = await record_run(conn, alpha.tenant_id, 8)
        await conn.execute(
            "UPDATE training_runs SET status = 'RUNNING', started_at = now() WHERE id = $1",
            newest,
        )
        statuses = await conn.fetch("SELECT fencing_token, status FROM training_runs ORDER BY 1")
        assert [tuple(r) for r in statuses] == [(5, "SUCCEEDED"), (7, "FAILED"), (8, "RUNNING")]
        assert await conn.fetchval("SELECT status FROM model_versions") == "REGISTERED"
