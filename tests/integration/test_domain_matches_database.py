"""The Python copy of the status machine equals the database's own. (The lineage hash is
proved equal through the trigger itself: tests/integration/test_db_laws.py inserts chains
hashed by domain.lineage.)"""

from __future__ import annotations

import asyncpg
import pytest

from domain.model_status import ALLOWED_TRANSITIONS, ModelStatus

pytestmark = pytest.mark.integration


async def test_fsm_equals_the_transition_table(db_admin_dsn: str) -> None:
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        rows = await conn.fetch("SELECT from_status, to_status FROM rai.model_status_transitions")
        statuses = await conn.fetchval(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conname = 'model_status_value'"
        )
    finally:
        await conn.close()
    assert {(ModelStatus(r[0]), ModelStatus(r[1])) for r in rows} == ALLOWED_TRANSITIONS
    for status in ModelStatus:
        assert f"'{status.value}'" in statuses
