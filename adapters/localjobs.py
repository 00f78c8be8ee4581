"""The embedded job runner: training jobs as detached local processes.

It implements :class:`domain.jobs.JobRunner`, the port every job runner implements: ``launch``
a named job (idempotent by name), ask its ``status``, ``cancel`` it. A job's name is derived
from its training run (:func:`domain.jobs.job_name_for`), so a worker that restarts after a
crash finds the job its predecessor launched instead of starting a second one.

Each job lives in ``<state_dir>/jobs/<name>/``:

``spec.json``     the launch intent: the trainer's command line, what the job is for, and when
                  (no secrets: the environment and the secret environment are recorded by
                  variable name only). Written *before* the process starts, so a launcher that
                  dies mid-launch can cause a job that never ran (reported FAILED, a safe
                  outcome) but never a second copy of one that did.
``process.json``  the wrapper shell's PID and its ``/proc`` start time (``adapters.processes``):
                  a PID alone could be reused, the pair identifies the process.
``wrapper.pid``   the wrapper's own ``$$``, written first thing: if the launcher dies between
                  starting the process and saving ``process.json``, the process is still found
                  (its command line names this directory).
``job.log``       the job's stdout and stderr.
``result.json``   the trainer's ``--result-file``, written atomically by the trainer.
``exit_code``     the trainer's exit status, written (atomically) by the wrapper.
``cancelled``     ``cancel`` was asked before the job had a result.
``queued``        present while the job waits for a slot (below): it is PENDING meanwhile.

``<state_dir>/job-slots/slot-<i>`` are the machine's training slots (``slots``, by default one
per CPU): a job trains only while it holds an ``flock`` on one of them, so the jobs of every
worker sharing the state directory never overload the machine (a hundred tenants drifting at
once queue for the slots instead of starving the worker of CPU until its heartbeats time out),
and ``<state_dir>/jobs/<name>.lock`` serialises ``launch`` and ``cancel`` of one name across
tasks and processes (``flock``; the kernel drops it if its holder dies).

The process tree: ``adapters.processes.spawn_detached`` starts a tiny ``/bin/sh`` wrapper in a new
session, not as our child, so it survives the launcher (the worker). The wrapper runs
``<python> -m trainer … --result-file <dir>/result.json`` as its child, waits for it and writes
its exit status to ``exit_code``. The exit status has to be recorded by a parent because the
launcher is usually no longer the parent (and on this VM PID 1 does not reap orphans, so an
exited process may linger as a zombie: zombies count as not running). The wrapper traps SIGTERM
so that ``cancel`` (SIGTERM to the whole process group, then SIGKILL after a grace period)
reaches the trainer, which turns it into a FAILED result, while the wrapper stays to record the
status. The result file is authoritative: the state is the result's status as soon as the file
exists; a process that ended without one is FAILED, with its exit status or signal and the tail
of its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from adapters.processes import (
    ProcessError,
    ProcessRecord,
    ProcessSlot,
    is_alive,
    process_identity,
    spawn_detached,
    tail,
    terminate,
)
from domain.jobs import (
    RESULT_FILE_OPTION,
    JobHandle,
    JobLaunchError,
    JobRunnerError,
    JobSpec,
    JobState,
    JobStatus,
    is_job_name,
)
from domain.training import TrainingResult, TrainingStatus

SPEC_FILE: Final = "spec.json"
WRAPPER_PID_FILE: Final = "wrapper.pid"
LOG_FILE: Final = "job.log"
RESULT_FILE: Final = "result.json"
EXIT_CODE_FILE: Final = "exit_code"
CANCELLED_FILE: Final = "cancelled"
QUEUED_FILE: Final = "queued"
LOG_TAIL_LINES: Final = 12

_LOCK_POLL_SECONDS = 0.05

# $1: the job directory (also what identifies this process in /proc/<pid>/cmdline); $2 the
# slots directory and $3 how many slots there are; the rest: the trainer's command line.
# First the wrapper takes a slot: an flock on one of the slot files, held on descriptor 9,
# which the trainer inherits (so the slot stays taken while the trainer lives, even if the
# wrapper is killed) and the kernel releases when the last holder exits. While every slot is
# taken it waits, with a "queued" marker in the job directory, and a SIGTERM (``cancel``) ends
# the wait with exit status 143. Then it runs the trainer; "wait" returns early when a trapped
# signal arrives, hence the loop: it ends only once the child has been reaped ("kill -0" fails).
_WRAPPER = """\
dir=$1; slots=$2; count=$3; shift 3
echo $$ >"$dir/wrapper.pid"
record() { echo "$1" >"$dir/exit_code.tmp" && mv -f "$dir/exit_code.tmp" "$dir/exit_code"; }
trap 'rm -f "$dir/queued"; record 143; exit 143' TERM INT HUP
held=
while [ -z "$held" ]; do
    i=0
    while [ "$i" -lt "$count" ]; do
        exec 9>>"$slots/slot-$i"
        if flock -n 9; then held=$i; break; fi
        i=$((i + 1))
    done
    if [ -z "$held" ]; then
        [ -e "$dir/queued" ] || : >"$dir/queued"
        sleep 1 &
        wait $!
    fi
done
rm -f "$dir/queued"
trap ':' TERM INT HUP
"$@" &
child=$!
while :; do
    wait "$child"
    code=$?
    kill -0 "$child" 2>/dev/null || break
done
record "$code"
"""


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    temporary.replace(path)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _read_result(path: Path) -> tuple[TrainingResult | None, str | None]:
    """(the result, None), (None, why it is unusable) or (None, None) when there is none."""
    text = _read_text(path)
    if text is None:
        return None, None
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, f"unreadable result file: {exc}"
    if not isinstance(value, dict) or value.get("status") not in ("SUCCEEDED", "FAILED"):
        return None, "the result file has no SUCCEEDED/FAILED status"
    try:
        return TrainingResult.model_validate(value), None
    except ValidationError as exc:
        return None, f"unusable result file: {exc.errors()[0]['msg']}"


def _read_exit_code(path: Path) -> int | None:
    text = _read_text(path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "no exit status was recorded (the wrapper was killed too)"
    # A POSIX shell reports a child killed by signal N as 128 + N.
    if code > 128:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(code - 128).name}"
    return f"exit code {code}"


def _recover_record(directory: Path) -> ProcessRecord | None:
    """The wrapper's record from ``wrapper.pid``, if that PID is still our wrapper (its command
    line names this job directory) and running."""
    text = _read_text(directory / WRAPPER_PID_FILE)
    if text is None or not text.strip().isdigit():
        return None
    pid = int(text)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    identity = process_identity(pid)
    if str(directory).encode() not in cmdline or identity is None or identity[0] in ("Z", "X"):
        return None
    return ProcessRecord(
        pid=pid,
        start_time=identity[1],
        argv=tuple(arg.decode(errors="replace") for arg in cmdline if arg),
        log=str(directory / LOG_FILE),
        ports={},
        started_at=datetime.now(UTC),
    )


def _load_record(directory: Path) -> ProcessRecord | None:
    return ProcessSlot(directory).load() or _recover_record(directory)


class LocalJobRunner:
    """Jobs as detached processes under ``state_dir`` (see the module docstring).

    ``env`` is the base environment of every job (default: this process' environment); a
    spec's ``env`` is added on top. ``slots`` is how many jobs may train at once under this
    ``state_dir`` (default: the number of CPUs), whichever process launched them; a job
    launched while all are taken is PENDING until one frees, as a pod waits for a node.
    ``stop_grace`` is how long ``cancel`` waits after SIGTERM before SIGKILL; ``lock_timeout``
    how long ``launch``/``cancel`` wait for another launcher holding the same name.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        stop_grace: float = 10.0,
        lock_timeout: float = 30.0,
        slots: int | None = None,
    ) -> None:
        if slots is not None and slots < 1:
            raise ValueError(f"a local job runner needs at least one slot, not {slots}")
        self.jobs_dir = state_dir.resolve() / "jobs"
        self.slots_dir = state_dir.resolve() / "job-slots"
        self.slots = slots if slots is not None else (os.cpu_count() or 1)
        self.python = python
        self._env = dict(env) if env is not None else None
        self._stop_grace = stop_grace
        self._lock_timeout = lock_timeout

    def job_dir(self, name: str) -> Path:
        if not is_job_name(name):
            raise ValueError(f"not a job name: {name!r}")
        return self.jobs_dir / name

    # -- launch ---------------------------------------------------------------------------

    async def launch(self, spec: JobSpec) -> JobHandle:
        """Start the job, or re-attach to it if this name was launched before (running or
        finished): never a second process for one name."""
        directory = self.job_dir(spec.name)
        async with self._locked(spec.name):
            if await asyncio.to_thread((directory / SPEC_FILE).exists):
                record = await asyncio.to_thread(_load_record, directory)
                return JobHandle(
                    spec.name,
                    created=False,
                    pid=record.pid if record else None,
                    started_at=record.started_at if record else None,
                )
            await asyncio.to_thread(self._write_spec, directory, spec)
            trainer = [self.python, *spec.argv, RESULT_FILE_OPTION, str(directory / RESULT_FILE)]
            try:
                await asyncio.to_thread(self.slots_dir.mkdir, parents=True, exist_ok=True)
                record = await spawn_detached(
                    [
                        "/bin/sh",
                        "-c",
                        _WRAPPER,
                        "rai-job",
                        str(directory),
                        str(self.slots_dir),
                        str(self.slots),
                        *trainer,
                    ],
                    log=directory / LOG_FILE,
                    cwd=directory,
                    env={
                        **(self._env if self._env is not None else os.environ),
                        **spec.env,
                        **spec.secret_env,
                    },
                )
            except ProcessError:
                # The wrapper ran and has already exited. It is launched either way (the intent
                # stays: never a second copy); ``status`` says how it ended.
                if await asyncio.to_thread((directory / EXIT_CODE_FILE).exists):
                    return JobHandle(spec.name, created=True)
                raise JobRunnerError(
                    f"job {spec.name} ended right after it started, recording no exit status"
                ) from None
            except OSError as exc:
                # Nothing started: withdraw the intent so that a retry may launch.
                await asyncio.to_thread((directory / SPEC_FILE).unlink, missing_ok=True)
                raise JobLaunchError(f"could not start job {spec.name}: {exc}") from exc
            # The wrapper writes its PID itself, first thing; writing it here too means that once
            # launch returns, a successor can always find the process, whatever the scheduling.
            await asyncio.to_thread(
                _write_atomically, directory / WRAPPER_PID_FILE, f"{record.pid}\n"
            )
            await asyncio.to_thread(ProcessSlot(directory).save, record)
            return JobHandle(spec.name, created=True, pid=record.pid, started_at=record.started_at)

    def _write_spec(self, directory: Path, spec: JobSpec) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "name": spec.name,
            "python": self.python,
            "argv": list(spec.argv),
            "origin": {
                "tenant_id": str(spec.origin.tenant_id),
                "training_run_id": str(spec.origin.training_run_id),
                "attempt": spec.origin.attempt,
                "model_name": spec.origin.model_name,
            },
            "env_names": sorted(spec.env),
            "secret_env_names": sorted(spec.secret_env),
            "launched_at": datetime.now(UTC).isoformat(),
        }
        temporary = directory / f".{SPEC_FILE}.tmp"
        temporary.write_text(json.dumps(document, indent=2) + "\n")
        temporary.replace(directory / SPEC_FILE)

    # -- status ---------------------------------------------------------------------------

    async def status(self, name: str) -> JobStatus:
        return await asyncio.to_thread(self._status, name)

    def _status(self, name: str) -> JobStatus:
        directory = self.job_dir(name)
        if not (directory / SPEC_FILE).exists():
            if self._lock_held(name):
                return JobStatus(name, JobState.PENDING, "being launched")
            return JobStatus(name, JobState.UNKNOWN, f"no job named {name}")
        record = _load_record(directory)
        alive = record is not None and is_alive(record.pid, record.start_time)
        result, problem = _read_result(directory / RESULT_FILE)
        code = _read_exit_code(directory / EXIT_CODE_FILE)

        if result is not None:
            succeeded = result.status is TrainingStatus.SUCCEEDED
            detail = "succeeded" if succeeded else f"failed: {result.error}"
            if alive:
                detail += " (the process is still finishing, e.g. sending its callback)"
            state = JobState.SUCCEEDED if succeeded else JobState.FAILED
            return JobStatus(name, state, detail, result, code)
        if alive and (directory / QUEUED_FILE).exists():
            return JobStatus(
                name, JobState.PENDING, f"waiting for one of the {self.slots} local job slots"
            )
        if alive and record is not None:
            since = record.started_at.isoformat(timespec="seconds")
            return JobStatus(name, JobState.RUNNING, f"running as pid {record.pid} since {since}")
        if record is None and code is None and self._lock_held(name):
            return JobStatus(name, JobState.PENDING, "being launched")

        if (directory / CANCELLED_FILE).exists():
            reason = f"cancelled ({_exit_reason(code)})"
        elif record is None and code is None and not (directory / WRAPPER_PID_FILE).exists():
            reason = "never started: its launcher stopped before starting the process"
        elif problem is not None:
            reason = f"{problem} ({_exit_reason(code)})"
        else:
            reason = f"the process exited without a result: {_exit_reason(code)}"
        log_tail = tail(directory / LOG_FILE, LOG_TAIL_LINES)
        detail = f"{reason}; log tail:\n{log_tail}" if log_tail else reason
        return JobStatus(name, JobState.FAILED, detail, None, code)

    # -- cancel ---------------------------------------------------------------------------

    async def cancel(self, name: str) -> None:
        """Stop the job if it is running (SIGTERM to its process group, SIGKILL after the
        grace period); a job that is unknown or already over is left as it is."""
        directory = self.job_dir(name)
        async with self._locked(name):
            record = await asyncio.to_thread(_load_record, directory)
            if record is None or not is_alive(record.pid, record.start_time):
                return
            await asyncio.to_thread(self._mark_cancelled, directory)
            try:
                await terminate(record, self._stop_grace)
            except ProcessError as exc:
                raise JobRunnerError(f"could not stop job {name}: {exc}") from exc

    @staticmethod
    def _mark_cancelled(directory: Path) -> None:
        if not (directory / RESULT_FILE).exists():
            (directory / CANCELLED_FILE).touch()

    # -- the per-name lock ----------------------------------------------------------------

    def _lock_path(self, name: str) -> Path:
        return self.jobs_dir / f"{name}.lock"

    def _open_lock(self, name: str) -> int:
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        return os.open(self._lock_path(name), os.O_RDWR | os.O_CREAT, 0o600)

    def _lock_held(self, name: str) -> bool:
        """True if some launcher holds ``name``'s lock right now."""
        try:
            descriptor = os.open(self._lock_path(name), os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(descriptor)  # closing also releases the lock if we took it
        return False

    @contextlib.asynccontextmanager
    async def _locked(self, name: str) -> AsyncIterator[None]:
        # Polled with LOCK_NB rather than blocking in a thread: a cancelled waiter then
        # leaves nothing behind that could take the lock after it has gone.
        descriptor = await asyncio.to_thread(self._open_lock, name)
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self._lock_timeout
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if loop.time() >= deadline:
                        raise JobRunnerError(
                            f"job {name} stayed locked by another launcher for "
                            f"{self._lock_timeout:.0f} s"
                        ) from None
                    await asyncio.sleep(_LOCK_POLL_SECONDS)
            yield
        finally:
            os.close(descriptor)
