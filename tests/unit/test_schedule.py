"""The longest-first order of test files (tests/schedule.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.schedule import (
    RECORD,
    file_of,
    longest_files_first,
    main,
    recorded_seconds,
    seconds_per_file,
)

pytestmark = pytest.mark.unit


@dataclass
class Item:
    nodeid: str


def test_files_go_longest_first_and_keep_their_own_order() -> None:
    items = [
        Item("tests/unit/test_a.py::one"),
        Item("tests/unit/test_a.py::two"),
        Item("tests/new/test_unrecorded.py::x"),
        Item("tests/e2e/test_slow.py::first"),
        Item("tests/e2e/test_slow.py::second"),
        Item("tests/integration/test_mid.py::m[1]"),
        Item("tests/other/test_unrecorded_too.py::y"),
    ]
    seconds = {
        "tests/unit/test_a.py": 1.0,
        "tests/e2e/test_slow.py": 60.0,
        "tests/integration/test_mid.py": 20.0,
    }
    longest_files_first(items, seconds)
    assert [item.nodeid for item in items] == [
        "tests/e2e/test_slow.py::first",
        "tests/e2e/test_slow.py::second",
        "tests/integration/test_mid.py::m[1]",
        "tests/unit/test_a.py::one",
        "tests/unit/test_a.py::two",
        "tests/new/test_unrecorded.py::x",  # unrecorded: last, in collection order
        "tests/other/test_unrecorded_too.py::y",
    ]


def test_the_record_is_made_from_a_junit_report(tmp_path: Path) -> None:
    (tmp_path / "tests" / "e2e").mkdir(parents=True)
    (tmp_path / "tests" / "e2e" / "test_api.py").write_text("")
    assert file_of("tests.e2e.test_api", tmp_path) == "tests/e2e/test_api.py"
    assert file_of("tests.e2e.test_api.TestThing", tmp_path) == "tests/e2e/test_api.py"
    assert file_of("tests.e2e.test_gone", tmp_path) is None
    report = tmp_path / "junit.xml"
    report.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="tests.e2e.test_api" name="a" time="1.25"/>'
        '<testcase classname="tests.e2e.test_api.TestThing" name="b" time="2.5"/>'
        '<testcase classname="tests.e2e.test_gone" name="c" time="9"/>'
        "</testsuite></testsuites>"
    )
    assert seconds_per_file(report, tmp_path) == {"tests/e2e/test_api.py": 3.75}


def test_the_committed_record_names_files_that_exist() -> None:
    recorded = recorded_seconds()
    assert recorded, f"{RECORD} is empty or missing"
    root = RECORD.parent.parent
    assert [path for path in recorded if not (root / path).is_file()] == []
    assert recorded_seconds(RECORD.parent / "no-such-record.json") == {}


def test_the_command_writes_the_record_longest_first(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text(
        "<testsuites><testsuite>"
        '<testcase classname="tests.unit.test_schedule" name="a" time="0.5"/>'
        '<testcase classname="tests.conftest" name="b" time="7"/>'
        "</testsuite></testsuites>"
    )
    out = tmp_path / "durations.json"
    assert main([str(report), "--out", str(out)]) == 0
    assert list(json.loads(out.read_text()).items()) == [
        ("tests/conftest.py", 7.0),
        ("tests/unit/test_schedule.py", 0.5),
    ]
    empty = tmp_path / "empty.xml"
    empty.write_text("<testsuites/>")
    assert main([str(empty), "--out", str(out)]) == 1
