"""The platform key inside a tenant's scope: every tenant's key registry holds the platform's
public key, so signatures the platform makes for that tenant verify from the tenant's rows.

Services never register it (the database refuses a platform key from ``rai_app``, law RA010):
an administrator does, once per tenant, with ``rai keys platform register --tenant T``.
"""

from __future__ import annotations

import asyncpg

from domain.signing import Signer
from services.errors import GovernanceRefusal


class PlatformKeyNotRegisteredError(GovernanceRefusal):
    """The tenant has no active registration of the key the platform signs with."""


async def require_platform_key(conn: asyncpg.Connection, signer: Signer) -> None:
    """Refuse to sign for the transaction's tenant unless ``signer``'s public key is one of its
    registered, unrevoked platform keys."""
    if await active_public_key(conn, signer.key_id, "platform") == signer.public_key:
        return
    tenant = await conn.fetchval("SELECT rai.current_tenant_id()")
    raise PlatformKeyNotRegisteredError(
        f"platform key {signer.key_id} is not an active platform key of tenant {tenant}:"
        f" an administrator runs `rai keys platform register --tenant {tenant}`"
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
