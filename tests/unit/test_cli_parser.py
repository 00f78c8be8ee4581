"""The ``rai`` parser and ``--json`` plumbing, without any outside system."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from uuid import UUID

import pytest
from pydantic import BaseModel

import cli
from cli.errors import CommandError, ExitCode, NotFound, ServiceUnavailable
from cli.main import GROUPS, build_parser, main
from cli.output import to_json

pytestmark = pytest.mark.unit


def test_every_command_module_is_a_group_of_its_own() -> None:
    modules = sorted(f"cli.{path.stem}" for path in Path(cli.__file__).parent.glob("*_commands.py"))
    assert sorted(GROUPS.values()) == modules
    for name, module in GROUPS.items():
        assert module == f"cli.{name}_commands"


def group_names(parser: argparse.ArgumentParser) -> list[str]:
    [groups] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(groups.choices)


def test_a_command_line_loads_only_its_group() -> None:
    assert group_names(build_parser()) == list(GROUPS)
    assert group_names(build_parser(only="tenant")) == ["tenant"]
    assert group_names(build_parser(only="no-such-group")) == list(GROUPS)


def test_exit_codes() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4]
    assert CommandError("x").exit_code == 1
    assert NotFound("x").exit_code == 3
    assert ServiceUnavailable("x").exit_code == 4
    assert CommandError("x", exit_code=ExitCode.NOT_FOUND).exit_code == 3


def test_a_usage_error_with_json_is_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["pipeline", "status", "--tenant", "farm-7", "--json"])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert json.loads(captured.err) == {
        "error": "rai pipeline status: argument --tenant: not a tenant id (UUID): 'farm-7'"
    }


def test_a_usage_error_without_json_is_argparse_s(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["worker", "--queue", "gpu"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: rai worker")
    assert "argument --queue: invalid choice: 'gpu'" in err


class Colour(StrEnum):
    RED = "red"


class Reading(BaseModel):
    at: datetime
    colour: Colour


@dataclass(frozen=True)
class Row:
    id: UUID
    every: timedelta
    file: Path
    tags: frozenset[str]


def test_values_are_spelled_one_way() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    document = {
        "row": Row(UUID(int=1), timedelta(hours=1, minutes=30), Path("a/b"), frozenset("ba")),
        "reading": Reading(at=at, colour=Colour.RED),
        "at": at,
        "colour": Colour.RED,
    }
    assert json.loads(to_json(document)) == {
        "row": {
            "id": "00000000-0000-0000-0000-000000000001",
            "every": "1h30m",
            "file": "a/b",
            "tags": ["a", "b"],
        },
        "reading": {"at": "2026-01-02T03:04:05+00:00", "colour": "red"},
        "at": "2026-01-02T03:04:05+00:00",
        "colour": "red",
    }
