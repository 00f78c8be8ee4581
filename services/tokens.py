"""Per-tenant API tokens: who may call the ``/v1/tenants/{T}/...`` routes.

A token is ``rai_`` followed by 43 URL-safe characters (256 random bits); it is shown once,
when created, and only its SHA-256 is stored (a plain hash suffices: nothing short enough to
guess is ever hashed). The database audits every creation and revocation itself (a row in
the tenant's hash-chained log, written by a trigger in the same transaction) and lets a token
be revoked once and never deleted (migration 0008).

Authentication reads nothing but the token and the tenant the URL names, and writes nothing:
the lookup runs under row-level security as that tenant; a token not found there is asked
about with ``rai.api_token_valid_elsewhere()``, which answers only "a valid token of some other
tenant, yes or no", so the caller learns 403 rather than 401 and nothing else.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final, cast
from uuid import UUID

import asyncpg

from db.repository import Database
from services.errors import NotFoundError

TOKEN_PREFIX: Final = "rai_"  # noqa: S105 -- a public marker, not a secret
_TOKEN_BYTES: Final = 32
MAX_TOKEN_NAME: Final = 200
# A presented token longer than any we issue is not hashed, just refused.
_MAX_PRESENTED_TOKEN: Final = 256


class TokenVerdict(StrEnum):
    VALID = "VALID"
    #: missing, unknown, expired or revoked (401)
    UNAUTHENTICATED = "UNAUTHENTICATED"
    #: a valid token, of another tenant (403)
    OTHER_TENANT = "OTHER_TENANT"


@dataclass(frozen=True)
class ApiToken:
    id: UUID
    tenant_id: UUID
    name: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class IssuedToken:
    """A new token: ``secret`` is shown once and stored nowhere."""

    token: ApiToken
    secret: str


class UnknownTokenError(NotFoundError):
    """No token with this id for this tenant."""


def token_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_token_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


def _token(row: asyncpg.Record) -> ApiToken:
    return ApiToken(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


async def create_token(
    db: Database, tenant_id: UUID, name: str = "default", *, expires_days: int | None = None
) -> IssuedToken:
    """Issue a token for an existing tenant (NotFoundError otherwise)."""
    if not name.strip() or len(name) > MAX_TOKEN_NAME or "\x00" in name:
        raise ValueError(f"a token name is 1 to {MAX_TOKEN_NAME} characters, not blank, no NUL")
    if expires_days is not None and expires_days < 1:
        raise ValueError(f"a token expires after at least 1 day, not {expires_days}")
    secret = new_token_secret()
    async with db.transaction(tenant_id) as conn:
        if await conn.fetchval("SELECT 1 FROM rai.tenants WHERE id = $1", tenant_id) is None:
            raise NotFoundError(f"unknown tenant {tenant_id}")
        row = await conn.fetchrow(
            "INSERT INTO rai.api_tokens (tenant_id, name, token_sha256, expires_at)"
            " VALUES ($1, $2, $3, CASE WHEN $4::int IS NULL THEN NULL"
            "   ELSE now() + make_interval(days => $4::int) END)"
            " RETURNING id, tenant_id, name, created_at, expires_at, revoked_at",
            tenant_id,
            name,
            token_sha256(secret),
            expires_days,
        )
    # INSERT ... RETURNING returns the row it inserted.
    return IssuedToken(_token(cast("asyncpg.Record", row)), secret)


async def list_tokens(db: Database, tenant_id: UUID) -> list[ApiToken]:
    async with db.transaction(tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT id, tenant_id, name, created_at, expires_at, revoked_at"
            " FROM rai.api_tokens WHERE tenant_id = $1 ORDER BY created_at, id",
            tenant_id,
        )
    return [_token(row) for row in rows]


async def revoke_token(db: Database, tenant_id: UUID, token_id: UUID) -> ApiToken:
    """Revoke a token (idempotent: revoking a revoked token returns it unchanged)."""
    async with db.transaction(tenant_id) as conn:
        row = await conn.fetchrow(
            "UPDATE rai.api_tokens SET revoked_at = now()"
            " WHERE tenant_id = $1 AND id = $2 AND revoked_at IS NULL"
            " RETURNING id, tenant_id, name, created_at, expires_at, revoked_at",
            tenant_id,
            token_id,
        )
        if row is None:
            row = await conn.fetchrow(
                "SELECT id, tenant_id, name, created_at, expires_at, revoked_at"
                " FROM rai.api_tokens WHERE tenant_id = $1 AND id = $2",
                tenant_id,
                token_id,
            )
    if row is None:
        raise UnknownTokenError(f"no API token {token_id} for tenant {tenant_id}")
    return _token(row)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or len(credentials) > _MAX_PRESENTED_TOKEN:
        return None
    return credentials


async def authenticate(db: Database, tenant_id: UUID, secret: str | None) -> TokenVerdict:
    """Judge a presented token for ``tenant_id``; reads only, writes nothing."""
    if secret is None or not secret.startswith(TOKEN_PREFIX):
        return TokenVerdict.UNAUTHENTICATED
    digest = token_sha256(secret)
    async with db.transaction(tenant_id) as conn:
        answer = await conn.fetchrow(
            "SELECT coalesce((SELECT revoked_at IS NULL"
            "   AND (expires_at IS NULL OR expires_at > now())"
            "   FROM rai.api_tokens WHERE token_sha256 = $1), false) AS valid,"
            " rai.api_token_valid_elsewhere($1) AS elsewhere",
            digest,
        )
    row = cast("asyncpg.Record", answer)  # a SELECT without FROM returns its one row
    if row["valid"]:
        return TokenVerdict.VALID
    return TokenVerdict.OTHER_TENANT if row["elsewhere"] else TokenVerdict.UNAUTHENTICATED
