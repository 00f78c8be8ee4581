"""Test databases: one migrated template per run, one ``CREATE DATABASE … TEMPLATE`` copy per
test, all on a real Postgres server, dropped afterwards."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg

from db.migrate import migrate
from settings import with_database


async def create_template(server_dsn: str) -> str:
    name = f"rai_test_tpl_{secrets.token_hex(6)}"
    await migrate(with_database(server_dsn, name))
    return name


async def drop_database(server_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(with_database(server_dsn, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@asynccontextmanager
async def cloned_database(server_dsn: str, template: str) -> AsyncIterator[str]:
    """A fresh database copied from ``template``; yields its admin DSN."""
    name = f"rai_test_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(with_database(server_dsn, "postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    finally:
        await conn.close()
    try:
        yield with_database(server_dsn, name)
    finally:
        await drop_database(server_dsn, name)


@contextmanager
def shared_tempdir() -> Iterator[Path]:
    """A temporary directory the ``postgres`` OS user can enter (a private cluster started as
    root runs as that user; pytest's own temporary directories are mode 0700)."""
    directory = Path(tempfile.mkdtemp(prefix="rai-test-"))
    directory.chmod(0o711)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
