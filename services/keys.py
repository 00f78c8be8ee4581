"""Signing keys: the platform's own key, and the per-tenant registry of public keys.

Device keys are registered by the services' role. Platform keys vouch for everything the
platform signs (drift reports, model versions, bias audits, the SHADOW decision), so the
database lets only the administrative path insert them (law RA010): ``register_platform_key``
connects with the administrative DSN and acts as ``rai_owner``. A revoked key of any kind stays
revoked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal
from uuid import UUID

import asyncpg

from db.errors import Law
from db.integrity import record_check
from db.repository import Database
from domain.signing import Signer, key_id
from services.errors import NotFoundError
from settings import OWNER_ROLE, Settings, redacted_dsn

KeyPurpose = Literal["device", "platform"]


class PlatformKeyError(Exception):
    """The platform signing key cannot be loaded."""


class AdministrativeDatabaseUnavailable(ValueError):
    """The administrative login cannot reach the database."""


class UnknownTenantError(NotFoundError, ValueError):
    """The administrative path was asked about a tenant that does not exist."""


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
    """Register a public key for the tenant (idempotent); returns its key id. The database
    refuses a platform key here: see ``register_platform_key``."""
    async with db.transaction(tenant_id) as conn:
        try:
            return await _register(conn, tenant_id, public_key, purpose)
        except asyncpg.PostgresError as exc:
            if exc.sqlstate == Law.PLATFORM_KEY_ADMINISTRATIVE:
                raise ValueError(
                    f"{exc}; an administrator runs `rai keys platform register --tenant "
                    f"{tenant_id}`"
                ) from exc
            raise


async def register_platform_key(admin_dsn: str, tenant_id: UUID, public_key: bytes) -> str:
    """The administrative path: register ``public_key`` as a platform key of the tenant,
    acting as ``rai_owner`` over ``admin_dsn`` (idempotent); returns its key id."""
    try:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise AdministrativeDatabaseUnavailable(
            f"cannot connect to {redacted_dsn(admin_dsn)}: {exc}"
        ) from exc
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        async with conn.transaction():
            try:
                await conn.execute(f"SET LOCAL ROLE {OWNER_ROLE}")
            except asyncpg.InsufficientPrivilegeError as exc:
                raise ValueError(
                    f"{redacted_dsn(admin_dsn)} cannot act as {OWNER_ROLE}: platform keys are "
                    "registered with the administrative login (RAI_DATABASE_URL)"
                ) from exc
            await conn.execute("SET LOCAL search_path = rai")
            await conn.execute(
                "SELECT set_config('app.current_tenant_id', $1, true)", str(tenant_id)
            )
            if not await conn.fetchval("SELECT 1 FROM tenants WHERE id = $1", tenant_id):
                raise UnknownTenantError(f"no tenant {tenant_id}")
            return await _register(conn, tenant_id, public_key, "platform")
    finally:
        await conn.close()


async def _register(
    conn: asyncpg.Connection, tenant_id: UUID, public_key: bytes, purpose: KeyPurpose
) -> str:
    kid = key_id(public_key)
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
        "INSERT INTO signing_keys (tenant_id, key_id, public_key, purpose) VALUES ($1, $2, $3, $4)",
        tenant_id,
        kid,
        public_key,
        purpose,
    )
    await record_check(conn, tenant_id, "key.registered", kid, "REGISTERED", {"purpose": purpose})
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
