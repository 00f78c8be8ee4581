"""Tenants: creation and lookup, each inside the tenant's own row-level-security scope."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID, uuid4

from db.integrity import record_check
from db.repository import Database


@dataclass(frozen=True)
class Tenant:
    id: UUID
    name: str
    created_at: datetime


async def create_tenant(db: Database, name: str, tenant_id: UUID | None = None) -> Tenant:
    """Create a tenant (idempotent for a given id: an existing tenant is returned as is)."""
    if not name.strip():
        raise ValueError("tenant name must not be blank")
    tenant_id = tenant_id or uuid4()
    async with db.transaction(tenant_id) as conn:
        row = await conn.fetchrow(
            "INSERT INTO rai.tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"
            " RETURNING id, name, created_at",
            tenant_id,
            name,
        )
        if row is not None:
            await record_check(
                conn, tenant_id, "tenant.created", str(tenant_id), "CREATED", {"name": name}
            )
        else:
            row = await conn.fetchrow(
                "SELECT id, name, created_at FROM rai.tenants WHERE id = $1", tenant_id
            )
    if row is None:  # the id exists, but not as a tenant this transaction may see
        raise ValueError(f"tenant id {tenant_id} is not available")
    return Tenant(id=row["id"], name=row["name"], created_at=row["created_at"])


async def get_tenant(db: Database, tenant_id: UUID) -> Tenant | None:
    async with db.transaction(tenant_id) as conn:
        row = await conn.fetchrow(
            "SELECT id, name, created_at FROM rai.tenants WHERE id = $1", tenant_id
        )
    return (
        None
        if row is None
        else Tenant(id=row["id"], name=row["name"], created_at=row["created_at"])
    )
