"""The hash-chained audit log: honest chains verify; edits behind the triggers' back do not."""

from __future__ import annotations

import asyncio
from uuid import UUID

import asyncpg
import pytest

from db.integrity import GENESIS_HASH, record_check, verify_chain
from db.repository import Database
from db.tenants import create_tenant

pytestmark = pytest.mark.integration


@pytest.fixture
async def alpha(app_db: Database) -> UUID:
    """A tenant with nothing but its creation in the chain."""
    return (await create_tenant(app_db, "alpha farms")).id


async def append(db: Database, world: UUID, n: int) -> None:
    for i in range(n):
        async with db.transaction(world) as conn:
            await record_check(conn, world, "test.step", f"s-{i}", "OK", {"i": i})


async def test_trigger_links_rows_whatever_the_client_sends(app_db: Database, alpha: UUID) -> None:
    async with app_db.transaction(alpha) as conn:
        await conn.execute(
            "INSERT INTO integrity_checks (tenant_id, check_type, subject_id, outcome, seq,"
            " prev_hash, row_hash, created_at)"
            " VALUES ($1, 'forged', 'x', 'OK', 42, repeat('a', 64), repeat('b', 64), 'epoch')",
            alpha,
        )
        rows = await conn.fetch("SELECT * FROM integrity_checks ORDER BY seq")
    # tenant.created was the first row; the forged values were all replaced
    assert [r["seq"] for r in rows] == [1, 2]
    assert rows[0]["prev_hash"] == GENESIS_HASH
    assert rows[1]["prev_hash"] == rows[0]["row_hash"]
    assert rows[1]["row_hash"] != "b" * 64
    assert rows[1]["created_at"].year >= 2026
    verdict = await verify_chain(app_db, alpha)
    assert verdict.ok
    assert verdict.head_seq == 2
    assert verdict.head_hash == rows[1]["row_hash"]


async def test_concurrent_appends_never_fork_the_chain(app_db: Database, alpha: UUID) -> None:
    await asyncio.gather(*(append(app_db, alpha, 5) for _ in range(4)))
    verdict = await verify_chain(app_db, alpha)
    assert verdict.ok, verdict.problems
    assert verdict.rows == 21


async def test_chains_are_per_tenant(app_db: Database, alpha: UUID) -> None:
    beta = (await create_tenant(app_db, "beta")).id
    await append(app_db, alpha, 3)
    await append(app_db, beta, 2)
    a, b = await verify_chain(app_db, alpha), await verify_chain(app_db, beta)
    assert (a.ok, a.rows, b.ok, b.rows) == (True, 4, True, 3)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("UPDATE rai.integrity_checks SET outcome = 'FORGED' WHERE seq = 3", "seq 3: row_hash"),
        ("UPDATE rai.integrity_checks SET details = '{\"i\": 9}' WHERE seq = 2", "seq 2: row_hash"),
        ("DELETE FROM rai.integrity_checks WHERE seq = 3", "seq 3: missing"),
        (
            "UPDATE rai.integrity_checks SET created_at = created_at + interval '1 s'"
            " WHERE seq = 4",
            "seq 4: row_hash",
        ),
    ],
)
async def test_tampering_behind_the_triggers_is_detected(
    app_db: Database, alpha: UUID, db_admin_dsn: str, tamper: str, expected: str
) -> None:
    await append(app_db, alpha, 4)
    assert (await verify_chain(app_db, alpha)).ok
    # A superuser can switch triggers off; the chain still tells.
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(tamper)
    finally:
        await conn.close()
    verdict = await verify_chain(app_db, alpha)
    assert not verdict.ok
    assert any(p.startswith(expected) for p in verdict.problems), verdict.problems


async def test_a_recomputed_row_still_breaks_the_next_link(
    app_db: Database, alpha: UUID, db_admin_dsn: str
) -> None:
    await append(app_db, alpha, 3)
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(
                "UPDATE rai.integrity_checks SET outcome = 'FORGED',"
                " row_hash = rai.integrity_row_hash(prev_hash, tenant_id, seq, check_type,"
                " subject_id, 'FORGED', details, created_at) WHERE seq = 2"
            )
    finally:
        await conn.close()
    verdict = await verify_chain(app_db, alpha)
    assert verdict.problems == ("seq 3: prev_hash does not match the previous row's hash",)
