"""The platform key inside a tenant's scope: every tenant's key registry holds the platform's
public key, so signatures the platform makes for that tenant verify from the tenant's rows."""

from __future__ import annotations

import asyncpg

from domain.signing import Signer


async def ensure_platform_key(conn: asyncpg.Connection, signer: Signer) -> None:
    """Register the platform public key for the transaction's tenant (no-op if present)."""
    await conn.execute(
        "INSERT INTO signing_keys (tenant_id, key_id, public_key, purpose)"
        " VALUES (rai.current_tenant_id(), $1, $2, 'platform')"
        " ON CONFLICT (tenant_id, key_id) DO NOTHING",
        signer.key_id,
        signer.public_key,
    )


async def active_public_key(conn: asyncpg.Connection, key_id: str, purpose: str) -> bytes | None:
    """The tenant's non-revoked public key ``key_id`` of ``purpose``, if any."""
    key: bytes | None = await conn.fetchval(
        "SELECT public_key FROM signing_keys"
        " WHERE key_id = $1 AND purpose = $2 AND revoked_at IS NULL",
        key_id,
        purpose,
    )
    return key
