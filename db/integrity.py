"""The hash-chained audit log (``integrity_checks``): append and verify.

The trigger ``chain_integrity_check`` assigns each row its per-tenant ``seq``, links it to the
previous row's hash and computes ``row_hash = sha256(prev_hash || canonical row)``. Verifying
walks a tenant's rows in ``seq`` order and recomputes every link, so a row edited, removed or
inserted behind the triggers' back (by a superuser, say) breaks the chain from that row on.
A chain cannot prove on its own that its tail was not cut off, or that a superuser did not
rewrite it from some row on and recompute every hash after it: signed checkpoints of its head,
kept in the WORM bucket (``services.checkpoints``), can.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from db.repository import Database

GENESIS_HASH = "0" * 64


@dataclass(frozen=True)
class ChainVerdict:
    tenant_id: UUID
    rows: int
    ok: bool
    head_seq: int
    head_hash: str
    problems: tuple[str, ...]
    #: The first seq at which the chain breaks (a missing row, a broken link, a row whose hash
    #: does not match its content), if any.
    first_broken_seq: int | None = None
    #: The stored row hash at the seqs the caller asked for (those that exist).
    hash_at: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ChainRow:
    """One row as the chain hashes it: ``row_hash = sha256(prev_hash || canonical)``, where
    ``canonical`` is the exact text the trigger hashed (Postgres' jsonb text of the row)."""

    seq: int
    check_type: str
    subject_id: str
    outcome: str
    prev_hash: str
    row_hash: str
    canonical: str

    def recomputed_hash(self) -> str:
        return hashlib.sha256((self.prev_hash + self.canonical).encode("utf-8")).hexdigest()


# ``canonical`` is the text rai.integrity_row_hash() (triggers.sql) hashes after prev_hash;
# read_rows checks every row against its stored hash, so a divergence from the trigger cannot
# go unnoticed.
_READ_ROWS = (
    "SELECT seq, check_type, subject_id, outcome, prev_hash, row_hash,"
    " jsonb_build_object('tenant_id', tenant_id, 'seq', seq, 'check_type', check_type,"
    " 'subject_id', subject_id, 'outcome', outcome, 'details', details, 'created_at',"
    " to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'))::text"
    " AS canonical"
    " FROM rai.integrity_checks WHERE tenant_id = $1 AND seq BETWEEN $2 AND $3 ORDER BY seq"
)


class ChainTextError(RuntimeError):
    """A row's canonical text does not hash to its stored hash."""


async def record_check(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    check_type: str,
    subject_id: str,
    outcome: str,
    details: Mapping[str, Any] | None = None,
) -> str:
    """Append one decision to the tenant's chain; returns its ``row_hash``."""
    row_hash: str = await conn.fetchval(
        "INSERT INTO rai.integrity_checks (tenant_id, check_type, subject_id, outcome, details,"
        " seq, prev_hash, row_hash)"
        " VALUES ($1, $2, $3, $4, $5, 0, $6, $6) RETURNING row_hash",
        tenant_id,
        check_type,
        subject_id,
        outcome,
        dict(details or {}),
        GENESIS_HASH,  # placeholders: the trigger sets seq, prev_hash and row_hash
    )
    return row_hash


async def read_rows(
    conn: asyncpg.Connection, tenant_id: UUID, first_seq: int, last_seq: int
) -> list[ChainRow]:
    """Rows ``first_seq..last_seq`` with their canonical text, for a bundle whose reader
    recomputes the links without a database. Raises ChainTextError when a row's text does not
    hash to its stored hash (the chain is broken there: verify it first)."""
    records = await conn.fetch(_READ_ROWS, tenant_id, first_seq, last_seq)
    rows = [ChainRow(**dict(record)) for record in records]
    for row in rows:
        if row.recomputed_hash() != row.row_hash:
            raise ChainTextError(f"seq {row.seq}: row_hash does not match the row's content")
    return rows


async def verify_chain(
    db: Database, tenant_id: UUID, *, keep_hashes_at: Collection[int] = ()
) -> ChainVerdict:
    """Recompute the tenant's whole chain and report every break; ``keep_hashes_at`` names
    seqs whose stored hash the verdict keeps (the sizes of checkpoints to compare with)."""
    async with db.transaction(tenant_id, isolation="repeatable_read") as conn:
        rows = await conn.fetch(
            "SELECT seq, prev_hash, row_hash,"
            " rai.integrity_row_hash(prev_hash, tenant_id, seq, check_type, subject_id,"
            "   outcome, details, created_at) AS recomputed"
            " FROM rai.integrity_checks WHERE tenant_id = $1 ORDER BY seq",
            tenant_id,
        )
    problems: list[str] = []
    broken: list[int] = []
    wanted = set(keep_hashes_at)
    hash_at: dict[int, str] = {}
    expected_prev = GENESIS_HASH
    expected_seq = 1
    for row in rows:
        seq = row["seq"]
        if seq != expected_seq:
            problems.append(f"seq {expected_seq}: missing (next row found is seq {seq})")
            broken.append(expected_seq)
        if row["prev_hash"] != expected_prev:
            problems.append(f"seq {seq}: prev_hash does not match the previous row's hash")
            broken.append(seq)
        if row["row_hash"] != row["recomputed"]:
            problems.append(f"seq {seq}: row_hash does not match the row's content")
            broken.append(seq)
        if seq in wanted:
            hash_at[seq] = row["row_hash"]
        expected_prev = row["row_hash"]
        expected_seq = seq + 1
    head_seq = rows[-1]["seq"] if rows else 0
    return ChainVerdict(
        tenant_id=tenant_id,
        rows=len(rows),
        ok=not problems,
        head_seq=head_seq,
        head_hash=expected_prev,
        problems=tuple(problems),
        first_broken_seq=min(broken) if broken else None,
        hash_at=hash_at,
    )


class TenantListError(Exception):
    """The administrative login cannot see every tenant."""


async def all_tenant_ids(admin_dsn: str) -> list[UUID]:
    """Every tenant's id, read with the administrative login: ``rai_app`` sees one tenant at a
    time by design (row-level security), so only a superuser or a BYPASSRLS role can list them
    (for ``rai audit checkpoint --all``)."""
    conn = await asyncpg.connect(admin_dsn)
    try:
        sees_all = await conn.fetchval(
            "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )
        if not sees_all:
            raise TenantListError(
                "the administrative login (RAI_DATABASE_URL) is neither a superuser nor"
                " BYPASSRLS: row-level security hides the tenants from it; name one with --tenant"
            )
        ids: list[UUID] = [
            row["id"] for row in await conn.fetch("SELECT id FROM rai.tenants ORDER BY created_at")
        ]
    finally:
        await conn.close()
    return ids
