from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

import pytest
from pydantic import SecretStr

from cli.dev_commands import format_environment
from devstack import Owner, PartState, PartStatus, StackError, StackInfo
from devstack.redis import redis_database
from devstack.stack import configured_credentials
from devstack.temporal import temporal_argv
from settings import Settings

pytestmark = pytest.mark.unit

# Every character a careless `export` line would get wrong.
SHELL_HOSTILE = "it's a $ecret; `really`"
INFO = StackInfo(
    database_url="postgresql://postgres@127.0.0.1:55432/rai",
    redis_url="redis://127.0.0.1:56379/0",
    temporal_address="127.0.0.1:7233",
    temporal_ui_url="http://127.0.0.1:8233",
    s3_endpoint_url="http://127.0.0.1:8333",
    s3_access_key="RAIKEY",
    s3_secret_key=SHELL_HOSTILE,
    state_dir="/home/farm/level d/.rai",
)


def test_environment_names_every_setting() -> None:
    assert set(INFO.environment()) == {
        "RAI_DATABASE_URL",
        "RAI_REDIS_URL",
        "RAI_REDIS_REQUIRE_AOF",
        "RAI_TEMPORAL_ADDRESS",
        "RAI_TEMPORAL_UI_URL",
        "RAI_S3_ENDPOINT_URL",
        "RAI_S3_ACCESS_KEY",
        "RAI_S3_SECRET_KEY",
        "RAI_STATE_DIR",
    }
    assert INFO.s3_secret_key not in repr(INFO)


def test_export_lines_are_shell_quoted() -> None:
    lines = format_environment(INFO).splitlines()
    assert len(lines) == 9
    parsed = dict(shlex.split(line)[1].split("=", 1) for line in lines)
    assert parsed == INFO.environment()


def test_status_line() -> None:
    ours = PartStatus(
        "temporal", PartState.HEALTHY, Owner.OURS, "127.0.0.1:7233", "127.0.0.1:7233", 42, "started"
    )
    assert ours.line() == "temporal healthy   127.0.0.1:7233  [started by rai dev, pid 42; started]"
    assert ours.healthy
    external = PartStatus(
        "postgres",
        PartState.HEALTHY,
        Owner.EXTERNAL,
        "postgresql://u:pw@h/db",
        "postgresql://u:***@h/db",
    )
    assert "pw" not in external.line()
    assert "pw" not in repr(external)


def test_s3_keys_come_in_pairs(tmp_path: Path) -> None:
    assert configured_credentials(Settings(state_dir=tmp_path)) is None
    both = Settings(s3_access_key="AK", s3_secret_key=SecretStr("SK"))
    credentials = configured_credentials(both)
    assert credentials is not None
    assert (credentials.access_key, credentials.secret_key) == ("AK", "SK")
    with pytest.raises(StackError, match="RAI_S3_ACCESS_KEY and RAI_S3_SECRET_KEY"):
        configured_credentials(Settings(s3_access_key="AK", s3_secret_key=None))


def test_redis_database_number() -> None:
    assert redis_database("redis://127.0.0.1:6379/3") == 3
    assert redis_database("redis://127.0.0.1:6379") == 0


def test_temporal_command_line(tmp_path: Path) -> None:
    argv = temporal_argv(
        Path("/bin/temporal"), root=tmp_path, port=1, ui_port=2, http_port=3, news_flag=True
    )
    assert argv[:3] == ["/bin/temporal", "server", "start-dev"]
    joined = " ".join(argv)
    for part in (
        "--ip 127.0.0.1",
        "--port 1",
        "--ui-port 2",
        "--http-port 3",
        f"--db-filename {tmp_path / 'temporal.db'}",
        "--log-level warn",
        "--ui-disable-news-fetch",
    ):
        assert part in joined
    assert "--headless" not in argv


def test_a_reused_redis_is_not_held_to_the_append_only_rule() -> None:
    assert INFO.environment()["RAI_REDIS_REQUIRE_AOF"] == "true"  # our own runs with AOF
    reused = dataclasses.replace(INFO, redis_require_aof=False)
    assert reused.environment()["RAI_REDIS_REQUIRE_AOF"] == "false"
