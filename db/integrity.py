"""The hash-chained audit log (``integrity_checks``): append and verify.

The trigger ``chain_integrity_check`` assigns each row its per-tenant ``seq``, links it to the
previous row's hash and computes ``row_hash = sha256(prev_hash || canonical row)``. Verifying
walks a tenant's rows in ``seq`` order and recomputes every link, so a row edited, removed or
inserted behind the triggers' back (by a superuser, say) breaks the chain from that row on.
A chain cannot prove its own tail was not cut off: keep the printed head hash elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


async def verify_chain(db: Database, tenant_id: UUID) -> ChainVerdict:
    """Recompute the tenant's whole chain and report every break."""
    async with db.transaction(tenant_id, isolation="repeatable_read") as conn:
        rows = await conn.fetch(
            "SELECT seq, prev_hash, row_hash,"
            " rai.integrity_row_hash(prev_hash, tenant_id, seq, check_type, subject_id,"
            "   outcome, details, created_at) AS recomputed"
            " FROM rai.integrity_checks WHERE tenant_id = $1 ORDER BY seq",
            tenant_id,
        )
    problems: list[str] = []
    expected_prev = GENESIS_HASH
    expected_seq = 1
    for row in rows:
        seq = row["seq"]
        if seq != expected_seq:
            problems.append(f"seq {expected_seq}: missing (next row found is seq {seq})")
        if row["prev_hash"] != expected_prev:
            problems.append(f"seq {seq}: prev_hash does not match the previous row's hash")
        if row["row_hash"] != row["recomputed"]:
            problems.append(f"seq {seq}: row_hash does not match the row's content")
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
    )
