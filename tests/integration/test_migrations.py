"""Migrations: versioned, idempotent, and refusing to run over an edited history."""

from __future__ import annotations

import secrets

import asyncpg
import pytest

from db.migrate import MIGRATIONS, MigrationError, migrate
from settings import with_database
from tests.pg import drop_database

pytestmark = pytest.mark.integration

CATALOG_SNAPSHOT = """
SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
  FROM information_schema.columns WHERE table_schema = 'rai'
UNION ALL
SELECT 'trigger ' || event_object_table || '.' || trigger_name || ' ' || event_manipulation
  FROM information_schema.triggers WHERE trigger_schema = 'rai'
UNION ALL
SELECT 'index ' || indexname || ' ' || indexdef FROM pg_indexes WHERE schemaname = 'rai'
UNION ALL
SELECT 'policy ' || tablename || '.' || policyname || ' ' || cmd FROM pg_policies
 WHERE schemaname = 'rai'
UNION ALL
SELECT 'grant ' || table_name || ' ' || grantee || ' ' || privilege_type
  FROM information_schema.role_table_grants WHERE table_schema = 'rai'
UNION ALL
SELECT 'row ' || from_status || '->' || to_status FROM rai.model_status_transitions
ORDER BY 1
"""


async def snapshot(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row[0] for row in await conn.fetch(CATALOG_SNAPSHOT)]
    finally:
        await conn.close()


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
