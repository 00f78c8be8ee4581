"""Migrations: versioned, idempotent, refusing to run over an edited history, and a new
database equal to one upgraded through every migration."""

from __future__ import annotations

import re
import secrets

import asyncpg
import pytest

from db.migrate import LATEST, MIGRATIONS, MigrationError, migrate
from settings import with_database
from tests.pg import drop_database

pytestmark = pytest.mark.integration

# Everything a migration can change in schema rai, by name and definition (never by OID):
# columns in their order, relations with owner, RLS flags and privileges, constraints, indexes,
# triggers, functions with body and privileges, types and domains, policies, the schema's own
# privileges, and the rows of the FSM table.
CATALOG_SNAPSHOT = """
SELECT 'column ' || table_name || '.' || column_name || ' #' || ordinal_position || ' '
       || data_type || coalesce(' ' || domain_name, '') || ' ' || is_nullable
       || coalesce(' default ' || column_default, '') || ' ' || is_identity
  FROM information_schema.columns WHERE table_schema = 'rai'
UNION ALL
SELECT 'relation ' || c.relname || ' ' || c.relkind::text
       || ' owner ' || pg_get_userbyid(c.relowner)
       || ' rls ' || c.relrowsecurity || ' force ' || c.relforcerowsecurity
       || ' acl ' || coalesce(c.relacl::text, 'default')
  FROM pg_class AS c WHERE c.relnamespace = 'rai'::regnamespace
UNION ALL
SELECT 'constraint '
       || CASE WHEN c.conrelid <> 0 THEN c.conrelid::regclass::text
               ELSE c.contypid::regtype::text END  -- a table's or a domain's
       || '.' || c.conname || ' ' || pg_get_constraintdef(c.oid)
  FROM pg_constraint AS c WHERE c.connamespace = 'rai'::regnamespace
UNION ALL
SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'rai'
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
 WHERE c.relnamespace = 'rai'::regnamespace AND NOT t.tgisinternal
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ' owner ' || pg_get_userbyid(p.proowner)
       || ' acl ' || coalesce(p.proacl::text, 'default') || ' ' || pg_get_functiondef(p.oid)
  FROM pg_proc AS p WHERE p.pronamespace = 'rai'::regnamespace
UNION ALL
SELECT 'type ' || t.typname || ' ' || t.typtype::text
       || ' ' || format_type(t.typbasetype, t.typtypmod) || ' not null ' || t.typnotnull
  FROM pg_type AS t WHERE t.typnamespace = 'rai'::regnamespace
UNION ALL
SELECT 'policy ' || tablename || '.' || policyname || ' ' || permissive || ' ' || cmd || ' '
       || roles::text || ' using ' || coalesce(qual, '-') || ' check ' || coalesce(with_check, '-')
  FROM pg_policies WHERE schemaname = 'rai'
UNION ALL
SELECT 'grant ' || table_name || ' ' || grantee || ' ' || privilege_type
  FROM information_schema.role_table_grants WHERE table_schema = 'rai'
UNION ALL
SELECT 'schema ' || n.nspname || ' owner ' || pg_get_userbyid(n.nspowner) || ' acl '
       || coalesce(n.nspacl::text, 'default')
  FROM pg_namespace AS n WHERE n.nspname = 'rai'
UNION ALL
SELECT 'row ' || from_status || '->' || to_status FROM rai.model_status_transitions
ORDER BY 1
"""

# What every database migrated by a release carries in rai.schema_migrations: the SQL of a
# released migration never changes, or `rai db migrate` refuses those databases.
RELEASED_CHECKSUMS = {
    1: "8ca02501542fcc5712e51a486a90a9523121102e55b3a7faf576accf5a26cb8a",
    2: "0c21ff6e49ca86c2f6871c6ab274118036d0cbb9728821f83e3c4501532e9c47",
    3: "e5bf5e37e1fc34fe7da65d5830c75c4c01177de73b656aa06c88f22bb37e3a75",
    6: "a6a3b3dc248b8e583924d52f2a653bbcf6339698cde46860b112f0d74f6eeed7",
    7: "07c361f29582fc346591689ef53cad9d4205de2049efc8d9508b65705934c6ac",
    8: "31389ccacb2fbd3848ec5918f718b57569165b1df9ff242906f6c15e61b198d2",
    9: "5e667cc2dce59d05f9dc106c68eed96601b31c7ad4916886739dbcc24f746ba5",
    10: "7e7a24940ae81f6359414a6646480d85f5f4fedf02a365cc5d0b1bef98a988fc",
    11: "d58db7c34c24c0d9b52a4b5a7406289ec966194d80368a439a99a50d7637fc17",
}
# Every version this checkout knows, in order. Migrations land from several branches, so the
# numbers need not be contiguous; the tests below hold for whichever exist.
VERSIONS = tuple(m.version for m in MIGRATIONS)


async def snapshot(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row[0] for row in await conn.fetch(CATALOG_SNAPSHOT)]
    finally:
        await conn.close()


async def recorded(dsn: str) -> list[tuple[int, str, str]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT version, name, checksum FROM rai.schema_migrations ORDER BY version"
        )
    finally:
        await conn.close()
    return [(row["version"], row["name"], row["checksum"]) for row in rows]


def test_released_migrations_are_unchanged() -> None:
    assert {m.version: m.checksum() for m in MIGRATIONS} == RELEASED_CHECKSUMS


async def test_a_new_database_equals_one_upgraded_through_every_migration(
    pg_server_dsn: str,
) -> None:
    """schema.sql + triggers.sql are the current schema: a new database made from them alone
    has the catalog, and the recorded versions, of one that took every migration in turn."""
    fresh_name, upgraded_name = (f"rai_test_mig_{secrets.token_hex(6)}" for _ in range(2))
    fresh, upgraded = (with_database(pg_server_dsn, n) for n in (fresh_name, upgraded_name))
    try:
        made = await migrate(fresh)
        assert (made.applied, made.current_version) == (VERSIONS, LATEST)
        for migration in MIGRATIONS:  # one release after another
            step = await migrate(upgraded, target=migration.version)
            assert (step.applied, step.current_version) == ((migration.version,), migration.version)

        fresh_catalog = await snapshot(fresh)
        assert fresh_catalog == await snapshot(upgraded)
        assert await recorded(fresh) == await recorded(upgraded)
        assert [(v, c) for v, _, c in await recorded(fresh)] == sorted(RELEASED_CHECKSUMS.items())
        for name in ("drift_report_id", "fencing_token", "callback_public_key"):
            assert any(f".{name} #" in line for line in fresh_catalog), name
        for law in (
            "validate_training_run_start",
            "guard_platform_keys",
            "validate_shadow_audit_signer",
        ):
            assert any(line.startswith(f"trigger CREATE TRIGGER {law} ") for line in fresh_catalog)
        for aggregate in ("open_dead_letters", "cooldowns", "tenants", "active_training_runs"):
            (function,) = [
                line
                for line in fresh_catalog
                if line.startswith(f"function rai.metrics_{aggregate}(")
            ]
            assert "acl {rai_owner=X/rai_owner,rai_metrics=X/rai_owner} " in function, aggregate
        (schema,) = [line for line in fresh_catalog if line.startswith("schema rai ")]
        assert "rai_metrics=U/rai_owner" in schema
        assert not any(
            " rai_metrics " in line for line in fresh_catalog if line.startswith("grant ")
        )
    finally:
        for name in (fresh_name, upgraded_name):
            await drop_database(pg_server_dsn, name)


async def test_a_database_of_the_first_release_is_brought_to_the_latest_version(
    pg_server_dsn: str, db_admin_dsn: str
) -> None:
    name = f"rai_test_mig_{secrets.token_hex(6)}"
    old = with_database(pg_server_dsn, name)
    try:
        await migrate(old, target=1)
        upgrade = await migrate(old)
        assert (upgrade.applied, upgrade.current_version) == (VERSIONS[1:], LATEST)
        assert await snapshot(old) == await snapshot(db_admin_dsn)
        again = await migrate(old, target=1)  # never back
        assert (again.applied, again.current_version) == ((), LATEST)
    finally:
        await drop_database(pg_server_dsn, name)


async def test_an_unknown_target_version_is_refused() -> None:
    known = re.escape(str(list(VERSIONS)))
    with pytest.raises(MigrationError, match=rf"no migration 99; known versions are {known}"):
        await migrate("postgresql://postgres@127.0.0.1:1/rai", target=99)


async def test_migrate_creates_the_database_and_is_idempotent(pg_server_dsn: str) -> None:
    name = f"rai_test_mig_{secrets.token_hex(6)}"
    dsn = with_database(pg_server_dsn, name)
    try:
        first = await migrate(dsn)
        assert first.applied == tuple(m.version for m in MIGRATIONS)
        before = await snapshot(dsn)
        assert len(before) > 100
        second = await migrate(dsn)
        assert second.applied == ()
        assert second.current_version == first.current_version
        assert await snapshot(dsn) == before
    finally:
        await drop_database(pg_server_dsn, name)


async def test_an_edited_applied_migration_is_refused(db_admin_dsn: str) -> None:
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        await conn.execute("UPDATE rai.schema_migrations SET checksum = 'edited' WHERE version = 1")
    finally:
        await conn.close()
    before = await snapshot(db_admin_dsn)
    with pytest.raises(MigrationError, match="different SQL"):
        await migrate(db_admin_dsn)
    assert await snapshot(db_admin_dsn) == before


async def test_a_database_from_a_newer_release_is_refused(db_admin_dsn: str) -> None:
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        await conn.execute(
            "INSERT INTO rai.schema_migrations (version, name, checksum) VALUES (999, 'x', 'y')"
        )
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match=r"\[999\]"):
        await migrate(db_admin_dsn)


async def test_unreachable_server_gives_a_clear_error() -> None:
    with pytest.raises(MigrationError, match="cannot connect"):
        await migrate("postgresql://postgres@127.0.0.1:1/rai")
