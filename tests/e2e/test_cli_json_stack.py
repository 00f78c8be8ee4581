"""``rai dev up | status | env | down`` and a whole ``rai demo`` with ``--json``, on a local
stack of the test's own (tests/e2e/test_cli_json.py has the rest of the commands; a file of its
own so that the two run on different pytest workers)."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest

from devstack import Stack
from settings import Settings, with_database
from tests.e2e.support import REDIS_KEY_PREFIX
from tests.e2e.test_cli_json import ok, rai
from tests.environment import rai_environment
from tests.pg import drop_database

pytestmark = pytest.mark.e2e


def free_ports(count: int) -> list[int]:
    """``count`` different ports nobody listens on (all held at once while choosing)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for sock in held:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in held]
    finally:
        for sock in held:
            sock.close()


DEV_PORTS = (
    "dev_temporal_port",
    "dev_temporal_ui_port",
    "dev_s3_port",
    "dev_weed_master_port",
    "dev_weed_volume_port",
    "dev_weed_filer_port",
    "dev_postgres_port",
    "dev_redis_port",
)


async def test_the_local_stack_and_the_demo_answer_in_json(
    pg_server_dsn: str, tmp_path: Path
) -> None:
    """``rai dev up | status | env | down`` and a whole ``rai demo`` (quiet: one document)."""
    database = f"rai_test_json_demo_{secrets.token_hex(6)}"
    ports = dict(zip(DEV_PORTS, free_ports(len(DEV_PORTS)), strict=True))
    settings = Settings(
        state_dir=tmp_path / "state",
        database_url=with_database(pg_server_dsn, database),
        redis_key_prefix=REDIS_KEY_PREFIX,
        dev_stop_grace_seconds=5,
    ).model_copy(update=ports)
    env = rai_environment(settings)
    try:
        up = await ok(env, "dev", "up")
        assert up["healthy"] is True
        assert {part["name"] for part in up["parts"]} == {"temporal", "postgres", "redis", "s3"}
        status = await ok(env, "dev", "status")
        assert [p["state"] for p in status["parts"]] == ["healthy"] * 4
        stack_env = (await ok(env, "dev", "env"))["environment"]
        assert stack_env["RAI_TEMPORAL_ADDRESS"] == f"127.0.0.1:{ports['dev_temporal_port']}"

        demo = await ok(env, "demo", "--tenant", f"json demo {secrets.token_hex(3)}")
        assert (demo["status"], demo["verified"]) == ("SHADOW", True)
        assert demo["result"]["outcome"] == "SUCCEEDED_SHADOW"
        assert demo["model_version_id"] == demo["result"]["model_version_id"]
        assert all(check["ok"] for check in demo["checks"])
        # The demo's worker is gone: the finished run's result comes from its history.
        on_stack = {**env, **stack_env}
        finished = await ok(on_stack, "pipeline", "status", "--tenant", demo["tenant_id"])
        assert (finished["state"], finished["progress"]) == ("COMPLETED", None)
        assert finished["result"] == demo["result"]

        down = await ok(env, "dev", "down")
        assert {p["name"]: p["state"] for p in down["parts"]}["temporal"] == "stopped"
        assert (await rai(env, "dev", "status", "--json")).code == 1
    finally:
        await Stack(settings).down()
        await drop_database(pg_server_dsn, database)
