"""The local stack for real: ``rai dev up | status | env | down`` and the Python API.

Every test has its own state directory and its own free ports, so a developer's running stack
is never touched. A private PostgreSQL runs as the ``postgres`` OS user when the tests run as
root, and that user cannot enter pytest's ``tmp_path`` (its base directory is mode 0700), so
those tests keep their state in a directory of their own under the system temp dir.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from adapters.processes import live_processes
from cli.main import main
from devstack import Owner, PartState, PrivatePostgres, Stack, StackError, ensure_postgres
from devstack.binaries import find_binary
from devstack.net import HttpResponse, http_request
from devstack.postgres import postgres_problem
from devstack.process import (
    ProcessRecord,
    ProcessSlot,
    is_alive,
    parse_proc_stat,
    spawn_detached,
    terminate,
)
from devstack.redis import redis_problem
from devstack.sigv4 import signed_headers
from settings import Settings, with_database
from tests.pg import shared_tempdir

pytestmark = pytest.mark.integration

PARTS = ("temporal", "postgres", "redis", "s3")
PORT_SETTINGS = (
    "dev_temporal_port",
    "dev_temporal_ui_port",
    "dev_s3_port",
    "dev_weed_master_port",
    "dev_weed_volume_port",
    "dev_weed_filer_port",
    "dev_postgres_port",
    "dev_redis_port",
)


def distinct_free_ports(count: int) -> list[int]:
    """``count`` different ports nobody listens on (all held at once while choosing)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for sock in held:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def live_session_members(sessions: set[int]) -> list[str]:
    """Processes (not zombies) still in one of ``sessions``: what a stop left behind."""
    return [f"{p.pid} ({p.name})" for p in live_processes() if p.session in sessions]


def session_of(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 1 :].split()[3])


def records(state: Path) -> dict[str, ProcessRecord]:
    found = {name: ProcessSlot(state / name).load() for name in PARTS}
    return {name: record for name, record in found.items() if record is not None}


def all_ports(record: ProcessRecord) -> set[int]:
    return set(record.ports.values())


@dataclass(frozen=True)
class Machine:
    """The machine's own PostgreSQL and Redis, as configured before the test cleared RAI_*."""

    database_url: str
    redis_url: str


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> Machine:
    configured = Settings()
    for name in list(os.environ):
        if name.startswith("RAI_"):
            monkeypatch.delenv(name)
    return Machine(configured.database_url, configured.redis_url)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory the ``postgres`` OS user can enter."""
    with shared_tempdir() as directory:
        yield directory


def isolated_settings(state: Path, *, database_url: str, redis_url: str) -> Settings:
    """Settings of a stack in ``state`` on fresh free ports."""
    ports = distinct_free_ports(len(PORT_SETTINGS))
    return Settings(
        state_dir=state,
        database_url=database_url,
        redis_url=redis_url,
        dev_stop_grace_seconds=5,
        dev_temporal_port=ports[0],
        dev_temporal_ui_port=ports[1],
        dev_s3_port=ports[2],
        dev_weed_master_port=ports[3],
        dev_weed_volume_port=ports[4],
        dev_weed_filer_port=ports[5],
        dev_postgres_port=ports[6],
        dev_redis_port=ports[7],
    )


def stack_environment(monkeypatch: pytest.MonkeyPatch, state: Path, **extra: str) -> Settings:
    """Point ``RAI_*`` at ``state`` and fresh free ports; the Settings ``rai`` will build."""
    monkeypatch.setenv("RAI_STATE_DIR", str(state))
    monkeypatch.setenv("RAI_DEV_STOP_GRACE_SECONDS", "5")
    for setting, port in zip(PORT_SETTINGS, distinct_free_ports(len(PORT_SETTINGS)), strict=True):
        monkeypatch.setenv(f"RAI_{setting.upper()}", str(port))
    for name, value in extra.items():
        monkeypatch.setenv(name, value)
    return Settings()


def rai(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["dev", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rai_command(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def lines_by_part(out: str) -> dict[str, str]:
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == list(PARTS), out
    return {line.split()[0]: line for line in lines}


def parse_exports(out: str) -> dict[str, str]:
    """Evaluate the ``export`` lines in a real shell and read the variables back."""
    names = [line.split()[1].split("=", 1)[0] for line in out.splitlines()]
    script = out + "\n" + "".join(f'printf "%s\\0" "${name}"\n' for name in names)
    printed = subprocess.run(
        ["/bin/sh", "-c", script], check=True, capture_output=True, env={}
    ).stdout
    return dict(zip(names, printed.decode().split("\0")[:-1], strict=True))


async def s3_request(
    env: dict[str, str], method: str, path: str, *, body: bytes = b"", secret: str | None = None
) -> HttpResponse:
    url = env["RAI_S3_ENDPOINT_URL"] + path
    extra = {}
    if body:
        extra["content-md5"] = base64.b64encode(
            hashlib.md5(body, usedforsecurity=False).digest()
        ).decode()
    headers = signed_headers(
        method=method,
        url=url,
        access_key=env["RAI_S3_ACCESS_KEY"],
        secret_key=secret if secret is not None else env["RAI_S3_SECRET_KEY"],
        region="us-east-1",
        now=datetime.now(UTC),
        headers=extra,
        payload=body,
    )
    return await http_request(method, url, headers=headers, body=body, socket_timeout=30)


def stored_bytes(data_dir: Path) -> bytes:
    return b"".join(path.read_bytes() for path in data_dir.rglob("*") if path.is_file())


DEFAULT_ENCRYPTION = (
    b'<ServerSideEncryptionConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    b"<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm>"
    b"</ApplyServerSideEncryptionByDefault></Rule></ServerSideEncryptionConfiguration>"
)


async def exercise_s3(env: dict[str, str], data_dir: Path) -> None:
    """Keys work, strangers are refused, and encrypted objects are ciphertext on disk."""
    assert (await s3_request(env, "GET", "/")).status == 200
    assert (await http_request("GET", env["RAI_S3_ENDPOINT_URL"] + "/")).status == 403
    assert (await s3_request(env, "GET", "/", secret="wrong" + secrets.token_hex(8))).status == 403

    assert (await s3_request(env, "PUT", "/plain-bucket")).status == 200
    assert (await s3_request(env, "PUT", "/sealed-bucket")).status == 200
    sealing = await s3_request(env, "PUT", "/sealed-bucket?encryption", body=DEFAULT_ENCRYPTION)
    assert sealing.status == 200, sealing.body

    plain, explicit, by_default = (secrets.token_bytes(4096) for _ in range(3))
    assert (await s3_request(env, "PUT", "/plain-bucket/plain", body=plain)).status == 200

    url = env["RAI_S3_ENDPOINT_URL"] + "/plain-bucket/explicit"
    headers = signed_headers(
        method="PUT",
        url=url,
        access_key=env["RAI_S3_ACCESS_KEY"],
        secret_key=env["RAI_S3_SECRET_KEY"],
        region="us-east-1",
        now=datetime.now(UTC),
        headers={"x-amz-server-side-encryption": "AES256"},
        payload=explicit,
    )
    stored = await http_request("PUT", url, headers=headers, body=explicit, socket_timeout=30)
    assert stored.status == 200
    assert stored.headers.get("x-amz-server-side-encryption") == "AES256"

    stored = await s3_request(env, "PUT", "/sealed-bucket/by-default", body=by_default)
    assert stored.status == 200
    assert stored.headers.get("x-amz-server-side-encryption") == "AES256"

    assert (await s3_request(env, "GET", "/plain-bucket/explicit")).body == explicit
    assert (await s3_request(env, "GET", "/sealed-bucket/by-default")).body == by_default

    on_disk = stored_bytes(data_dir)
    assert plain[:64] in on_disk  # the search does find unencrypted data
    assert explicit[:64] not in on_disk
    assert by_default[:64] not in on_disk


def test_up_status_env_down_reusing_the_machines_postgres_and_redis(
    machine: Machine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert asyncio.run(postgres_problem(machine.database_url)) is None, "needs a Postgres"
    assert asyncio.run(redis_problem(machine.redis_url)) is None, "needs a Redis"
    state = tmp_path / "state"
    settings = stack_environment(
        monkeypatch,
        state,
        RAI_DATABASE_URL=machine.database_url,
        RAI_REDIS_URL=machine.redis_url,
    )
    # A stale record whose PID now belongs to this very test process: `up` must see through
    # it (start time) and `down` must never signal us.
    own = Path(f"/proc/{os.getpid()}/stat").read_text()
    stale = ProcessRecord(
        pid=os.getpid(),
        start_time=parse_proc_stat(own)[1] + 1,
        argv=("temporal",),
        log=str(state / "temporal" / "temporal.log"),
        ports={"grpc": settings.dev_temporal_port},
        started_at=datetime.now(UTC),
    )
    ProcessSlot(state / "temporal").save(stale)
    try:
        code, out, err = rai(capsys, "up")
        assert code == 0, out + err
        first = lines_by_part(out)
        for part in PARTS:
            assert " healthy " in first[part], out
        assert "[started by rai dev, pid" in first["temporal"]
        assert "[started by rai dev, pid" in first["s3"]
        assert "[external; reused]" in first["postgres"]
        assert "[external; reused]" in first["redis"]
        started = records(state)
        assert set(started) == {"temporal", "s3"}
        assert started["temporal"].pid != os.getpid()

        code, out, _ = rai(capsys, "status")
        assert code == 0, out
        assert all(" healthy " in line for line in lines_by_part(out).values())

        code, out, _ = rai(capsys, "up")
        assert code == 0, out
        again = lines_by_part(out)
        assert "already running" in again["temporal"]
        assert "already running" in again["s3"]
        assert records(state) == started

        code, out, _ = rai(capsys, "env")
        assert code == 0
        env = parse_exports(out)
        assert env == {
            "RAI_DATABASE_URL": machine.database_url,
            "RAI_REDIS_URL": machine.redis_url,
            # The machine's Redis, reused: not ours to hold to the append-only rule.
            "RAI_REDIS_REQUIRE_AOF": "false",
            "RAI_TEMPORAL_ADDRESS": f"127.0.0.1:{settings.dev_temporal_port}",
            "RAI_TEMPORAL_UI_URL": f"http://127.0.0.1:{settings.dev_temporal_ui_port}",
            "RAI_S3_ENDPOINT_URL": f"http://127.0.0.1:{settings.dev_s3_port}",
            "RAI_S3_ACCESS_KEY": env["RAI_S3_ACCESS_KEY"],
            "RAI_S3_SECRET_KEY": env["RAI_S3_SECRET_KEY"],
            "RAI_STATE_DIR": str(state.absolute()),
        }
        health = subprocess.run(
            [
                str(find_binary("temporal", "")),
                "operator",
                "cluster",
                "health",
                "--address",
                env["RAI_TEMPORAL_ADDRESS"],
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        assert "SERVING" in health.stdout
        asyncio.run(exercise_s3(env, state / "s3" / "data"))

        sessions = {session_of(record.pid) for record in started.values()}
        ports = set().union(*(all_ports(record) for record in started.values()))
        code, out, _ = rai(capsys, "down")
        assert code == 0, out
        stopped = lines_by_part(out)
        assert " stopped " in stopped["temporal"]
        assert " stopped " in stopped["s3"]
        assert "left running" in stopped["postgres"]
        assert "left running" in stopped["redis"]
    finally:
        asyncio.run(Stack(settings).down())

    assert records(state) == {}
    for record in started.values():
        assert not is_alive(record.pid, record.start_time)
    assert live_session_members(sessions) == []
    assert [port for port in ports if listening(port)] == []
    assert asyncio.run(postgres_problem(machine.database_url)) is None
    assert asyncio.run(redis_problem(machine.redis_url)) is None

    code, out, _ = rai(capsys, "status")
    assert code == 1
    assert " down " in lines_by_part(out)["temporal"]


async def test_private_postgres_and_redis_when_none_answers(
    machine: Machine, shared_tmp: Path
) -> None:
    nobody = distinct_free_ports(2)
    settings = isolated_settings(
        shared_tmp / "state",
        database_url=f"postgresql://postgres@127.0.0.1:{nobody[0]}/rai",
        redis_url=f"redis://127.0.0.1:{nobody[1]}/2",
    )
    stack = Stack(settings)
    try:
        info = await stack.up()
        assert info.database_url == (
            f"postgresql://postgres@127.0.0.1:{settings.dev_postgres_port}/rai"
        )
        assert info.redis_url == f"redis://127.0.0.1:{settings.dev_redis_port}/2"
        # Our own redis-server runs with the append-only file: `rai worker` may insist on it.
        assert info.environment()["RAI_REDIS_REQUIRE_AOF"] == "true"
        # Absolute, so a `rai worker` started elsewhere from `rai dev env` uses the same state.
        assert info.environment()["RAI_STATE_DIR"] == str((shared_tmp / "state").absolute())
        status = await stack.status()
        assert status.healthy
        assert {part.owner for part in status.parts} == {Owner.OURS}

        connection = await asyncpg.connect(with_database(info.database_url, "postgres"))
        try:
            assert await connection.fetchval("SELECT current_user") == "postgres"
            assert await connection.fetchval("SHOW listen_addresses") == "127.0.0.1"
        finally:
            await connection.close()

        client = Redis.from_url(info.redis_url, decode_responses=True)
        try:
            assert await client.config_get("appendonly") == {"appendonly": "yes"}
            directory = await client.config_get("dir")
            assert directory["dir"] == str(shared_tmp / "state" / "redis" / "data")
        finally:
            await client.aclose()

        started = records(settings.state_dir)
        assert set(started) == set(PARTS)
        sessions = {session_of(record.pid) for record in started.values()}
        ports_in_use = set().union(*(all_ports(record) for record in started.values()))
    finally:
        down = await stack.down()

    assert {part.state for part in down.parts} == {PartState.STOPPED}
    assert records(settings.state_dir) == {}
    for record in started.values():
        assert not is_alive(record.pid, record.start_time)
    assert live_session_members(sessions) == []
    assert [port for port in ports_in_use if listening(port)] == []
    assert (shared_tmp / "state" / "postgres" / "data" / "PG_VERSION").exists()


async def test_a_private_postgres_alone_keeps_its_data(shared_tmp: Path) -> None:
    server = PrivatePostgres(shared_tmp / "pg")
    try:
        dsn = await server.start()
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute("CREATE TABLE kept (value text)")
            await connection.execute("INSERT INTO kept VALUES ('still here')")
        finally:
            await connection.close()
        # A start interrupted before its record was written leaves a postmaster nobody
        # recorded: it is recognised by its data directory and adopted, not started twice.
        running = server.live()
        assert running is not None
        server.slot.clear()
        adopted = server.live()
        assert adopted is not None
        assert (adopted.pid, adopted.start_time) == (running.pid, running.start_time)

        assert await server.stop()
        assert server.live() is None

        dsn = await server.start()
        connection = await asyncpg.connect(dsn)
        try:
            assert await connection.fetchval("SELECT value FROM kept") == "still here"
        finally:
            await connection.close()
    finally:
        await server.stop()
    assert server.live() is None


async def test_ensure_postgres_reuses_a_server_that_answers(
    machine: Machine, tmp_path: Path
) -> None:
    settings = Settings(state_dir=tmp_path, database_url=machine.database_url)
    assert await ensure_postgres(settings) == machine.database_url
    assert records(tmp_path) == {}


def test_a_missing_program_is_one_line_and_nothing_starts(
    machine: Machine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (nobody,) = distinct_free_ports(1)
    stack_environment(
        monkeypatch,
        tmp_path / "state",
        RAI_DATABASE_URL=machine.database_url,
        RAI_REDIS_URL=f"redis://127.0.0.1:{nobody}/0",
        PATH=str(tmp_path / "empty"),
    )
    code, out, err = rai(capsys, "up")
    assert code == 1
    assert out == ""
    assert err == "rai: error: redis-server not found: apt-get install redis-server\n"
    assert records(tmp_path / "state") == {}


async def test_a_taken_port_is_reported_before_anything_starts(
    machine: Machine, tmp_path: Path
) -> None:
    settings = isolated_settings(
        tmp_path, database_url=machine.database_url, redis_url=machine.redis_url
    )
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.dev_temporal_port))
        squatter.listen()
        with pytest.raises(StackError) as caught:
            await Stack(settings).up()
        status = await Stack(settings).status()
    assert f"port {settings.dev_temporal_port} (gRPC) is already in use" in str(caught.value)
    assert "RAI_DEV_TEMPORAL_PORT" in str(caught.value)
    assert records(tmp_path) == {}
    assert "in use by another process" in status.part("temporal").line()


async def spawn_when_ready(tmp_path: Path, script: str) -> ProcessRecord:
    """``/bin/sh -c script`` detached; returns once the script has written to the FIFO named
    by ``{ready}`` (its children are then in place)."""
    ready = tmp_path / "ready"
    os.mkfifo(ready)
    record = await spawn_detached(
        ["/bin/sh", "-c", script.format(ready=ready)],
        log=tmp_path / "spawned.log",
        cwd=tmp_path,
    )
    async with asyncio.timeout(5):
        await asyncio.to_thread(ready.read_text)
    return record


async def test_a_process_deaf_to_sigterm_is_killed_with_its_children(tmp_path: Path) -> None:
    # The shell and its `sleep` child both ignore SIGTERM (an ignored signal stays ignored
    # across exec).
    record = await spawn_when_ready(tmp_path, "trap '' TERM; sleep 60 & echo >{ready}; wait")
    session = session_of(record.pid)
    assert session == os.getpgid(record.pid) != os.getpgrp()
    assert is_alive(record.pid, record.start_time)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await terminate(record, grace=0.5)
    assert loop.time() - began >= 0.5
    assert not is_alive(record.pid, record.start_time)
    assert live_session_members({session}) == []


async def test_a_child_deaf_to_sigterm_outliving_its_leader_is_killed(tmp_path: Path) -> None:
    # The shell exits on SIGTERM; its `sleep` child ignores it and would stay behind in the
    # group if the stop only waited for the leader.
    record = await spawn_when_ready(tmp_path, "(trap '' TERM; exec sleep 60) & echo >{ready}; wait")
    session = session_of(record.pid)
    assert len(live_session_members({session})) == 2
    await terminate(record, grace=0.5)
    assert not is_alive(record.pid, record.start_time)
    assert live_session_members({session}) == [], "the SIGTERM-deaf child outlived the stop"


def test_demo_runs_a_complete_retraining_cycle_twice(
    machine: Machine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = f"rai_test_demo_{secrets.token_hex(6)}"
    state = tmp_path / "state"
    settings = stack_environment(
        monkeypatch,
        state,
        RAI_DATABASE_URL=with_database(machine.database_url, database),
        RAI_REDIS_URL=machine.redis_url,
    )
    try:
        code, first, err = rai_command(capsys, "demo")
        assert code == 0, first + err
        tenant_line = next(line for line in first.splitlines() if "Demo tenant" in line)
        tenant = tenant_line.split()[-1]
        for address in (
            f"127.0.0.1:{settings.dev_temporal_port}",
            f"http://127.0.0.1:{settings.dev_temporal_ui_port}",
            f"/{database}",
            machine.redis_url,
            f"http://127.0.0.1:{settings.dev_s3_port}",
        ):
            assert address in first, address
        assert "outcome          SUCCEEDED_SHADOW" in first
        assert "yield v1 (SHADOW)" in first
        code, second, err = rai_command(capsys, "demo")  # running it again trains v2
        assert code == 0, second + err
        assert f"Demo tenant  {tenant}" in second
        assert "(duplicate 1200)" in second
        assert "yield v2 (SHADOW)" in second
        monkeypatch.setenv("RAI_DATABASE_URL", with_database(machine.database_url, database))
        code, out, _ = rai_command(capsys, "db", "verify-chain", "--tenant", tenant)
        assert code == 0, out
        assert "chain intact" in out
        started = records(state)
        assert set(started) == {"temporal", "s3"}
        code, out, _ = rai(capsys, "down")
        assert code == 0, out
    finally:
        asyncio.run(Stack(settings).down())

        async def drop() -> None:
            conn = await asyncpg.connect(with_database(machine.database_url, "postgres"))
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            finally:
                await conn.close()

        asyncio.run(drop())
    for record in started.values():
        assert not is_alive(record.pid, record.start_time)
