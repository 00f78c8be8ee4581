"""Per-tenant locks (migration 0009): a tenant's writers are serialised by rows of
rai.tenant_locks that only its own transactions can see or create, so another tenant cannot
hold them; the advisory keys used before no longer stall anyone."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import pytest

from db.integrity import record_check
from db.repository import Database
from db.tenants import create_tenant
from settings import app_dsn_for

pytestmark = pytest.mark.integration

OLD_CHAIN_KEY = "SELECT pg_advisory_lock(hashtextextended('rai.integrity_checks:' || $1, 0))"


async def app_connection(db_admin_dsn: str, tenant: UUID | None) -> asyncpg.Connection:
    """A raw rai_app connection in an open transaction acting for ``tenant``."""
    conn: asyncpg.Connection = await asyncpg.connect(
        app_dsn_for(db_admin_dsn), server_settings={"search_path": "rai"}
    )
    await conn.execute("BEGIN")
    if tenant is not None:
        await conn.execute("SELECT set_config('app.current_tenant_id', $1, true)", str(tenant))
    return conn


async def append_within(db: Database, tenant: UUID, *, lock_timeout_ms: int) -> None:
    async with db.transaction(tenant) as conn:
        await conn.execute(f"SET LOCAL lock_timeout = {lock_timeout_ms}")
        await record_check(conn, tenant, "test.step", "s", "OK", {})


async def test_another_tenant_cannot_take_or_hold_a_tenants_lock(
    app_db: Database, db_admin_dsn: str
) -> None:
    a = (await create_tenant(app_db, "a")).id
    b = (await create_tenant(app_db, "b")).id
    await append_within(app_db, b, lock_timeout_ms=2000)  # B's lock row exists now
    attacker = await app_connection(db_admin_dsn, a)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):  # 42501: the insert policy
            await attacker.execute("SELECT rai.lock_tenant($1, 'integrity_checks')", b)
        await attacker.execute("ROLLBACK")
        await attacker.execute("BEGIN")
        await attacker.execute("SELECT set_config('app.current_tenant_id', $1, true)", str(a))
        locked = await attacker.fetch(
            "SELECT * FROM tenant_locks WHERE tenant_id = $1 FOR UPDATE", b
        )
        assert locked == []
        # The advisory key that used to serialise B's appends, held for the session: B's
        # append no longer waits for it.
        await attacker.execute(OLD_CHAIN_KEY, str(b))
        await append_within(app_db, b, lock_timeout_ms=2000)
    finally:
        await attacker.close()


async def test_the_tenants_own_lock_serialises_its_writers(
    app_db: Database, db_admin_dsn: str
) -> None:
    b = (await create_tenant(app_db, "b")).id
    holder = await app_connection(db_admin_dsn, b)
    try:
        await holder.execute("SELECT rai.lock_tenant($1, 'integrity_checks')", b)
        with pytest.raises(asyncpg.LockNotAvailableError):  # 55P03: it waits for the holder
            await append_within(app_db, b, lock_timeout_ms=300)
        await holder.execute("COMMIT")
        await append_within(app_db, b, lock_timeout_ms=2000)
    finally:
        await holder.close()


async def test_a_lock_with_no_tenant_set_is_refused(db_admin_dsn: str, app_db: Database) -> None:
    b = (await create_tenant(app_db, "b")).id
    conn = await app_connection(db_admin_dsn, None)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("SELECT rai.lock_tenant($1, 'training_runs')", b)
    finally:
        await conn.close()
