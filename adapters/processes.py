"""Detached processes and the records that let a later process find them again.

A process that must outlive the one that starts it (a training job of the local job runner, a
server of the dev stack) must not be that process' child: it is launched through ``/bin/sh`` as
a background job in a new session, and the shell exits at once. Its PID and its start time
(field 22 of ``/proc/<pid>/stat``, in clock ticks since boot) are written to ``process.json`` in
its directory. A PID alone is not proof of identity -- PIDs are reused -- so a record only
counts when both still match, and a zombie counts as dead. Stopping signals the process group
(the process may have children): SIGTERM, a grace period, then SIGKILL.

Linux only: identity comes from ``/proc``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

logger = logging.getLogger(__name__)

RECORD_FILE = "process.json"
LOG_TAIL_LINES = 25
_KILL_WAIT_SECONDS = 5.0
_GROUP_POLL_SECONDS = 0.02


class ProcessError(Exception):
    """A process could not be started or stopped; ``str(exc)`` says why in one line.

    ``log_tail`` holds the last lines of the log of a process that failed to start, so a
    caller can show them under the one-line message.
    """

    def __init__(self, message: str, *, log_tail: str | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail


# The background job inherits the new session and process group of the shell; "$!" is its
# PID because a simple command in a background subshell is exec'd, not forked again.
_LAUNCHER = 'log=$1; shift; "$@" </dev/null >>"$log" 2>&1 & echo $!'


class ProcessRecord(BaseModel):
    """What its starter remembers about a detached process (``ports``: those it listens on)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    pid: int
    start_time: int
    argv: tuple[str, ...]
    log: str
    ports: dict[str, int]
    started_at: datetime


def parse_proc_stat(text: str) -> tuple[str, int]:
    """(state, start time) from the text of ``/proc/<pid>/stat``.

    The command name (field 2) is in parentheses and may itself contain spaces or
    parentheses, so fields are counted from the last ``)``.
    """
    fields = text[text.rindex(")") + 1 :].split()
    return fields[0], int(fields[19])


def process_identity(pid: int) -> tuple[str, int] | None:
    """(state, start time) of a live PID, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_proc_stat(text)


def is_alive(pid: int, start_time: int) -> bool:
    """True if ``pid`` is still the process that started at ``start_time`` and has not exited.

    A zombie has exited -- unless only its main thread has: a killed multi-threaded program
    (every Go server) shows a zombie main thread while its other threads are still exiting
    and still hold its sockets.
    """
    identity = process_identity(pid)
    if identity is None or identity[1] != start_time:
        return False
    if identity[0] not in ("Z", "X"):
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except FileNotFoundError:
        return False


def new_record(pid: int, argv: Sequence[str], log: Path, ports: Mapping[str, int]) -> ProcessRecord:
    """A record of ``pid`` as it is now; raises if it has already exited."""
    identity = process_identity(pid)
    if identity is None or identity[0] in ("Z", "X"):
        raise ProcessError(
            f"{Path(argv[0]).name} exited right after it was started (see {log})",
            log_tail=tail(log),
        )
    return ProcessRecord(
        pid=pid,
        start_time=identity[1],
        argv=tuple(argv),
        log=str(log),
        ports=dict(ports),
        started_at=datetime.now(UTC),
    )


class ProcessSlot:
    """The record of the one process a directory stands for, kept in ``<dir>/process.json``."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / RECORD_FILE

    def load(self) -> ProcessRecord | None:
        try:
            return ProcessRecord.model_validate_json(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except ValidationError:
            logger.warning("ignoring unreadable process record %s", self.path)
            return None

    def live(self) -> ProcessRecord | None:
        """The record, if its process is still running."""
        record = self.load()
        if record is not None and is_alive(record.pid, record.start_time):
            return record
        return None

    def save(self, record: ProcessRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(record.model_dump_json(indent=2) + "\n")
        temporary.replace(self.path)

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" when it does not exist)."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 64 * 1024))
            data = log.read()
    except FileNotFoundError:
        return ""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


async def spawn_detached(
    argv: Sequence[str],
    *,
    log: Path,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    ports: Mapping[str, int] | None = None,
) -> ProcessRecord:
    """Start ``argv`` in a new session, not as our child, output appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    logger.info("starting %s (log %s)", " ".join(argv), log)
    launcher = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        _LAUNCHER,
        "rai-launcher",
        str(log),
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=True,
    )
    out, err = await launcher.communicate()
    if launcher.returncode != 0 or not out.strip().isdigit():
        raise ProcessError(f"could not launch {argv[0]}: {err.decode(errors='replace').strip()}")
    return new_record(int(out), argv, log, ports or {})


async def wait_for_exit(pid: int, start_time: int) -> None:
    """Return once the process has exited (bound it with ``asyncio.timeout``).

    The process is not our child, so there is no ``waitpid``; a pidfd (Linux 5.3) becomes
    readable once the process it refers to has exited, all of its threads included.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        # Checked after opening: the pidfd now pins this very process, not a PID reuser.
        identity = process_identity(pid)
        if identity is None or identity[1] != start_time:
            return
        exited = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(pidfd, exited.set)
        try:
            await exited.wait()
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)


async def exited_within(seconds: float, pid: int, start_time: int) -> bool:
    """True if the process is gone within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            await wait_for_exit(pid, start_time)
    except TimeoutError:
        return False
    return True


@dataclass(frozen=True)
class LiveProcess:
    """A process of ``/proc`` that has not exited (zombies excluded)."""

    pid: int
    name: str
    group: int
    session: int


def live_processes() -> Iterator[LiveProcess]:
    """Every process now running on this machine, read from ``/proc``."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat_file.read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        name_end = text.rindex(")")
        fields = text[name_end + 1 :].split()
        if fields[0] not in ("Z", "X"):
            name = text[text.index("(") + 1 : name_end]
            yield LiveProcess(int(stat_file.parent.name), name, int(fields[2]), int(fields[3]))


def _group_alive(group: int) -> bool:
    """True while a process (not a zombie) is left in process group ``group``."""
    try:
        os.killpg(group, 0)  # cheap: no such group at all once every member is reaped
    except ProcessLookupError:
        return False
    return any(process.group == group for process in live_processes())


async def _group_empty_within(seconds: float, group: int) -> bool:
    """True once no live process is left in ``group``, polled for at most ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(seconds, 0.0)
    while _group_alive(group):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_GROUP_POLL_SECONDS)
    return True


def freeze_start_up_heap() -> int:
    """Move every object start-up made (modules, an app, its routes and schemas, a pool) out
    of the cyclic collector's reach; returns how many objects that is.

    They live as long as the process, yet a full collection walks all of them: in ``rai api``
    on this 2-core machine about 135,000 objects, 60-85 ms during which the event loop answers
    no request -- the slowest of ``rai bench ingest``'s batches. Afterwards a full collection
    walks only what was allocated since (about 1,300 objects, under 1 ms). Garbage is still
    freed: by reference counting, and cycles made after this call by the collector as before.
    Call it once a long-lived process has finished starting."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def _signal_group(pid: int, group: int | None, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        if group is None:
            os.kill(pid, sig)
        else:
            os.killpg(group, sig)


async def terminate(record: ProcessRecord, grace: float) -> None:
    """SIGTERM the record's process group, wait ``grace`` seconds, then SIGKILL it.

    Done means the whole group is gone, not only its leader: a child that ignores SIGTERM
    (or that SIGKILL has not finished yet) would otherwise outlive the stop.
    """
    if not is_alive(record.pid, record.start_time):
        return
    try:
        group: int | None = os.getpgid(record.pid)
    except ProcessLookupError:
        return
    if group == os.getpgrp():
        # Never signal our own group: that would take this very process down with it.
        group = None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    logger.info("stopping pid %d (SIGTERM, %.1f s grace)", record.pid, grace)
    _signal_group(record.pid, group, signal.SIGTERM)
    if await exited_within(grace, record.pid, record.start_time) and (
        group is None or await _group_empty_within(deadline - loop.time(), group)
    ):
        return
    logger.info("pid %d or its group ignored SIGTERM; sending SIGKILL", record.pid)
    if is_alive(record.pid, record.start_time) or group is not None:
        _signal_group(record.pid, group, signal.SIGKILL)
    deadline = loop.time() + _KILL_WAIT_SECONDS
    if not await exited_within(_KILL_WAIT_SECONDS, record.pid, record.start_time) or (
        group is not None and not await _group_empty_within(deadline - loop.time(), group)
    ):
        raise ProcessError(f"pid {record.pid} ({record.argv[0]}) survived SIGKILL")
