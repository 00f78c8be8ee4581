"""Builders for law tests: tenants, keys and model versions with honest hashes."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from db.repository import Database
from db.tenants import create_tenant
from domain.lineage import lineage_hash
from services.keys import register_platform_key


def sha() -> str:
    return hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def signature() -> bytes:
    return secrets.token_bytes(64)


@dataclass(frozen=True)
class TenantWorld:
    tenant_id: UUID
    key_id: str


async def new_tenant(db: Database, admin_dsn: str, name: str = "farm") -> TenantWorld:
    """A tenant whose platform key is registered the administrative way (rai_app may not)."""
    tenant = await create_tenant(db, name)
    key_id = await register_platform_key(admin_dsn, tenant.id, secrets.token_bytes(32))
    return TenantWorld(tenant.id, key_id)


async def insert_model(
    conn: asyncpg.Connection,
    world: TenantWorld,
    *,
    model_name: str = "yield",
    version: int = 1,
    parent: asyncpg.Record | None = None,
    **overrides: Any,
) -> asyncpg.Record:
    artifact, dataset = sha(), sha()
    values: dict[str, Any] = {
        "id": uuid4(),
        "tenant_id": world.tenant_id,
        "model_name": model_name,
        "version": version,
        "artifact_uri": f"s3://rai-model-registry/{model_name}/{version}/model.json",
        "artifact_sha256": artifact,
        "signature": signature(),
        "key_id": world.key_id,
        "dataset_uri": f"s3://rai-datasets/{model_name}/{version}.jsonl",
        "dataset_sha256": dataset,
        "parent_version_id": parent["id"] if parent else None,
        "lineage_hash": lineage_hash(parent["lineage_hash"] if parent else None, artifact, dataset),
    }
    values.update(overrides)
    columns = ", ".join(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO model_versions ({columns}) VALUES ({placeholders}) RETURNING *",
        *values.values(),
    )
    assert row is not None
    return row


async def insert_audit(
    conn: asyncpg.Connection,
    world: TenantWorld,
    model_id: UUID,
    *,
    passed: bool,
    key_id: str | None = None,
) -> None:
    """A bias audit row, signed (by default) with the tenant's platform key."""
    await conn.execute(
        "INSERT INTO bias_audits (tenant_id, model_version_id, passed, metrics, report_sha256,"
        " signature, key_id) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        world.tenant_id,
        model_id,
        passed,
        {"worst_to_best_error_ratio": 1.1 if passed else 3.0},
        sha(),
        signature(),
        key_id or world.key_id,
    )


async def set_status(conn: asyncpg.Connection, model_id: UUID, status: str) -> None:
    await conn.execute("UPDATE model_versions SET status = $1 WHERE id = $2", status, model_id)
