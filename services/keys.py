"""Signing keys: the platform's own key, and the per-tenant registry of public keys."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal
from uuid import UUID

from db.integrity import record_check
from db.repository import Database
from domain.signing import Signer, key_id
from settings import Settings

KeyPurpose = Literal["device", "platform"]


class PlatformKeyError(Exception):
    """The platform signing key cannot be loaded."""


def load_platform_signer(settings: Settings, *, create: bool = False) -> Signer:
    """The platform key from RAI_PLATFORM_SIGNING_KEY, or from its file (made 0600 if asked)."""
    if settings.platform_signing_key is not None:
        return Signer.from_hex(settings.platform_signing_key.get_secret_value())
    path = settings.resolved_platform_key_file()
    if not path.exists():
        if not create:
            raise PlatformKeyError(
                f"no platform signing key at {path}: run `rai keys platform` to create one"
            )
        write_private_key(path, Signer.generate())
    return Signer.from_hex(path.read_text(encoding="ascii"))


def write_private_key(path: Path, signer: Signer) -> None:
    """Write a seed readable by its owner only; never overwrites an existing key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(signer.seed_hex() + "\n")


async def register_key(
    db: Database, tenant_id: UUID, public_key: bytes, purpose: KeyPurpose
) -> str:
    """Register a public key for the tenant (idempotent); returns its key id."""
    kid = key_id(public_key)
    async with db.transaction(tenant_id) as conn:
        existing = await conn.fetchrow(
            "SELECT purpose, revoked_at FROM signing_keys WHERE key_id = $1", kid
        )
        if existing is not None:
            if existing["purpose"] != purpose:
                raise ValueError(f"key {kid} is already registered as a {existing['purpose']} key")
            if existing["revoked_at"] is not None:
                raise ValueError(f"key {kid} was revoked; a revoked key is never re-registered")
            return kid
        await conn.execute(
            "INSERT INTO signing_keys (tenant_id, key_id, public_key, purpose)"
            " VALUES ($1, $2, $3, $4)",
            tenant_id,
            kid,
            public_key,
            purpose,
        )
        await record_check(
            conn, tenant_id, "key.registered", kid, "REGISTERED", {"purpose": purpose}
        )
    return kid


async def revoke_key(db: Database, tenant_id: UUID, kid: str) -> bool:
    """Revoke a key; False when the tenant has no such active key."""
    async with db.transaction(tenant_id) as conn:
        status = await conn.execute(
            "UPDATE signing_keys SET revoked_at = now() WHERE key_id = $1 AND revoked_at IS NULL",
            kid,
        )
        revoked = status == "UPDATE 1"
        if revoked:
            await record_check(conn, tenant_id, "key.revoked", kid, "REVOKED")
    return revoked
