from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.processes import (
    ProcessRecord,
    ProcessSlot,
    is_alive,
    parse_proc_stat,
    process_identity,
    tail,
)

pytestmark = pytest.mark.unit


def _record(pid: int, start_time: int) -> ProcessRecord:
    return ProcessRecord(
        pid=pid,
        start_time=start_time,
        argv=("sleep", "1"),
        log="/dev/null",
        ports={"port": 1234},
        started_at=datetime(2024, 1, 1, tzinfo=UTC),
    )


def _nonexistent_pid() -> int:
    return int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def test_proc_stat_is_parsed_after_the_last_parenthesis() -> None:
    fields = " ".join(str(n) for n in range(4, 52))
    text = f"4242 (a (weird) name) S {fields}\n"
    # Field 22 (start time) is the 19th after the state; fields here start at field 4.
    assert parse_proc_stat(text) == ("S", 22)


def test_a_process_is_alive_only_with_its_own_start_time() -> None:
    identity = process_identity(os.getpid())
    assert identity is not None
    assert is_alive(os.getpid(), identity[1])
    assert not is_alive(os.getpid(), identity[1] + 1)
    assert not is_alive(_nonexistent_pid(), identity[1])


def test_slot_round_trip_and_liveness(tmp_path: Path) -> None:
    slot = ProcessSlot(tmp_path / "part")
    assert slot.load() is None
    identity = process_identity(os.getpid())
    assert identity is not None

    slot.save(_record(os.getpid(), identity[1]))
    assert slot.load() == _record(os.getpid(), identity[1])
    assert slot.live() == _record(os.getpid(), identity[1])

    slot.save(_record(os.getpid(), identity[1] + 1))  # the PID was reused by someone else
    assert slot.load() is not None
    assert slot.live() is None

    slot.clear()
    assert slot.load() is None
    slot.clear()


def test_an_unreadable_record_counts_as_none(tmp_path: Path) -> None:
    slot = ProcessSlot(tmp_path)
    slot.path.write_text('{"pid": "not a number"}')
    assert slot.load() is None


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {n}\n" for n in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    assert tail(tmp_path / "missing.log") == ""
