"""The order pytest-xdist hands out test files: longest first.

``make test`` runs ``pytest -n N --dist loadfile --no-loadscope-reorder``: each worker takes a
whole file and the next one when it is done, in collection order. Collected alphabetically,
the slow end-to-end files (a worker killed at each step, the CLI against the whole stack)
came last and one of them was still running long after the other workers had finished. Here
the files are collected longest first (longest-processing-time scheduling), by the seconds
each took in a recent run, ``tests/file_durations.json``. Order only: every test still runs,
and a file missing from the record (a new one) comes after the recorded ones, in the order
pytest collected it. Refresh the record with ``python -m tests.schedule JUNIT_XML`` after a
``pytest --junitxml JUNIT_XML`` run.
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path
from typing import Protocol, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORD = Path(__file__).resolve().parent / "file_durations.json"


class _Test(Protocol):
    @property
    def nodeid(self) -> str: ...


_T = TypeVar("_T", bound=_Test)


def recorded_seconds(record: Path = RECORD) -> dict[str, float]:
    """File (relative path, as in a node id) -> seconds; empty if there is no record."""
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    return {str(path): float(seconds) for path, seconds in data.items()}


def longest_files_first(items: list[_T], seconds: dict[str, float]) -> None:
    """Sort ``items`` in place: by their file's recorded seconds, longest first; a file's own
    tests keep their order, and files with equal (or no) records keep collection order."""
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::", 1)[0], 0.0))


def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    longest_files_first(items, recorded_seconds())


def file_of(classname: str, root: Path = ROOT) -> str | None:
    """The test file of a JUnit ``classname`` (``tests.e2e.test_api`` or, for a test class,
    ``tests.e2e.test_api.TestThing``)."""
    parts = classname.split(".")
    for end in range(len(parts), 0, -1):
        candidate = Path(*parts[:end]).with_suffix(".py")
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def seconds_per_file(junit_xml: Path, root: Path = ROOT) -> dict[str, float]:
    """Each file's total test time (set-up, call and tear-down) in a JUnit XML report."""
    totals: dict[str, float] = defaultdict(float)
    # The report is the one pytest just wrote on this machine, not outside input.
    for case in ET.parse(junit_xml).iter("testcase"):  # noqa: S314
        path = file_of(case.get("classname", ""), root)
        if path is not None:
            totals[path] += float(case.get("time", "0"))
    return dict(totals)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.schedule",
        description="Record each test file's seconds from a pytest JUnit XML report, for the"
        " longest-first order of `make test`.",
    )
    parser.add_argument("junit_xml", type=Path)
    parser.add_argument("--out", type=Path, default=RECORD)
    args = parser.parse_args(argv)
    totals = seconds_per_file(args.junit_xml)
    if not totals:
        print(f"no test cases of files under {ROOT} in {args.junit_xml}", file=sys.stderr)
        return 1
    ordered = dict(sorted(((p, round(s, 1)) for p, s in totals.items()), key=lambda x: -x[1]))
    args.out.write_text(json.dumps(ordered, indent=1) + "\n", encoding="utf-8")
    print(f"{len(ordered)} files, {sum(ordered.values()):.0f} s, written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
