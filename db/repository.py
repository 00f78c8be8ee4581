"""Tenant-scoped access to Postgres: the only way services touch the database.

Every unit of work is one transaction on a ``rai_app`` connection in which the acting tenant is
set with ``set_config('app.current_tenant_id', $1, true)``. The setting is transaction-local,
so a pooled connection never carries one tenant's identity into another's work, and the
row-level security policies see exactly one tenant.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal, cast
from uuid import UUID

import asyncpg

from settings import APP_ROLE

Isolation = Literal["read_committed", "repeatable_read", "serializable"]


class UnsafeDatabaseRoleError(Exception):
    """The pool would not be bound by the database laws (wrong role, superuser or BYPASSRLS)."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """A pool of ``rai_app`` connections that hands out tenant-scoped transactions."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, app_dsn: str, *, min_size: int = 1, max_size: int = 10) -> Database:
        """Open the pool and refuse to run unless it is bound by the laws."""
        pool = await asyncpg.create_pool(
            app_dsn,
            min_size=min_size,
            max_size=max_size,
            init=_init_connection,
            server_settings={"search_path": "rai", "application_name": "rai"},
        )
        try:
            role = await pool.fetchrow(
                "SELECT current_user AS name, r.rolsuper, r.rolbypassrls"
                " FROM pg_roles AS r WHERE r.rolname = current_user"
            )
        except BaseException:
            await pool.close()
            raise
        if role is None or role["name"] != APP_ROLE or role["rolsuper"] or role["rolbypassrls"]:
            await pool.close()
            name = role["name"] if role else "?"
            raise UnsafeDatabaseRoleError(
                f"services must connect as {APP_ROLE} (NOSUPERUSER, NOBYPASSRLS), not as {name}"
            )
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def transaction(
        self, tenant_id: UUID, *, isolation: Isolation = "read_committed"
    ) -> AsyncIterator[asyncpg.Connection]:
        """One transaction acting for ``tenant_id``; commits on success, rolls back on error."""
        if not isinstance(tenant_id, UUID):
            raise TypeError(f"tenant_id must be a UUID, not {type(tenant_id).__name__}")
        async with self._pool.acquire() as proxy, proxy.transaction(isolation=isolation):
            await proxy.execute(
                "SELECT set_config('app.current_tenant_id', $1, true)", str(tenant_id)
            )
            # The pool's proxy forwards every Connection method; callers type against Connection.
            yield cast("asyncpg.Connection", proxy)
