"""The ``rai db`` and ``rai tenant`` commands, driven as a user would (in-process)."""

from __future__ import annotations

import secrets
from uuid import UUID

import asyncpg
import pytest

from cli.main import main
from settings import with_database
from tests.pg import drop_database

pytestmark = pytest.mark.e2e


@pytest.fixture
def fresh_database(pg_server_dsn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    dsn = with_database(pg_server_dsn, f"rai_test_cli_{secrets.token_hex(6)}")
    monkeypatch.setenv("RAI_DATABASE_URL", dsn)
    monkeypatch.delenv("RAI_APP_DATABASE_URL", raising=False)
    return dsn


async def test_migrate_create_tenant_and_verify_the_chain(
    fresh_database: str, pg_server_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # the commands run their own event loops: call them from a worker thread
    import asyncio

    try:
        assert await asyncio.to_thread(main, ["db", "migrate"]) == 0
        assert "applied: 1" in capsys.readouterr().out
        assert await asyncio.to_thread(main, ["db", "migrate"]) == 0
        assert "applied: none" in capsys.readouterr().out

        assert await asyncio.to_thread(main, ["tenant", "create", "north farm"]) == 0
        tenant = UUID(capsys.readouterr().out.strip())

        assert await asyncio.to_thread(main, ["db", "verify-chain", "--tenant", str(tenant)]) == 0
        assert "chain intact, 1 rows" in capsys.readouterr().out

        conn = await asyncpg.connect(fresh_database)
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL session_replication_role = replica")
                await conn.execute("UPDATE rai.integrity_checks SET outcome = 'FORGED'")
        finally:
            await conn.close()
        assert await asyncio.to_thread(main, ["db", "verify-chain", "--tenant", str(tenant)]) == 1
        out = capsys.readouterr().out
        assert "BROKEN  seq 1: row_hash does not match" in out

        unknown = "00000000-0000-4000-8000-000000000000"
        assert await asyncio.to_thread(main, ["db", "verify-chain", "--tenant", unknown]) == 1
    finally:
        await drop_database(pg_server_dsn, fresh_database.rsplit("/", 1)[1])


def test_bad_input_gets_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["db", "verify-chain", "--tenant", "farm-7"])
    assert exit_info.value.code == 2
    assert "not a tenant id (UUID): 'farm-7'" in capsys.readouterr().err


def test_unreachable_database_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAI_DATABASE_URL", "postgresql://postgres@127.0.0.1:1/rai")
    assert main(["db", "migrate"]) == 4  # a required service is unreachable
    err = capsys.readouterr().err
    assert err.startswith(
        "rai: error: cannot connect to postgresql://postgres@127.0.0.1:1/postgres"
    )
    assert err.count("\n") == 1
