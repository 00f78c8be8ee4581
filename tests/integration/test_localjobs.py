"""LocalJobRunner with the real trainer against the run's S3 server: one process per name,
re-attaching after the launcher "dies", SIGKILL, cancel, jobs that cannot start."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest

from adapters.localjobs import LocalJobRunner
from adapters.objectstore import ObjectStore
from adapters.processes import ProcessSlot, is_alive, parse_proc_stat
from domain.jobs import JobOrigin, JobSpec, JobState, JobStatus, job_name_for
from settings import Settings
from tests.integration.training_support import (
    Snapshot,
    job_spec,
    jsonl,
    put_snapshot,
    stop_leftovers,
    synthetic_events,
    training_args,
    wait_until_exited,
)
from tests.polling import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
async def state_dir(tmp_path: Path) -> AsyncIterator[Path]:
    directory = tmp_path / "state"
    try:
        yield directory
    finally:
        await stop_leftovers(directory / "jobs")


@pytest.fixture
def runner(state_dir: Path) -> LocalJobRunner:
    return LocalJobRunner(state_dir, stop_grace=5.0)


@pytest.fixture
async def snapshot(service_storage: Settings) -> Snapshot:
    async with ObjectStore.from_settings(service_storage) as store:
        return await put_snapshot(store, service_storage, jsonl(synthetic_events(300)))


def _spec(settings: Settings, snapshot: Snapshot, extra_seconds: float = 0.0) -> JobSpec:
    return job_spec(settings, training_args(settings, snapshot), extra_seconds=extra_seconds)


def _live_processes_naming(text: str) -> list[int]:
    """PIDs of running (not zombie) processes with ``text`` as one of their arguments.

    A child the wrapper's shell has forked but not yet exec'd still carries the wrapper's
    arguments; it belongs to that wrapper, so only processes whose parent is not itself
    one of them are listed (the launches, not their moments between fork and exec).
    """
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state = parse_proc_stat(stat)[0]
        parent = int(stat[stat.rindex(")") + 1 :].split()[1])
        if text.encode() in argv and state not in ("Z", "X"):
            found[int(entry.name)] = parent
    return [pid for pid, parent in found.items() if parent not in found]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            found.append(int(entry.name))
    return found


async def _wait_for_log(runner: LocalJobRunner, name: str, text: str) -> None:
    """Until the job's log shows ``text`` (the trainer has reached that step)."""
    log = runner.job_dir(name) / "job.log"

    def read() -> str:
        return log.read_text() if log.exists() else "(no log yet)"

    await wait_until(
        lambda: asyncio.to_thread(read),
        lambda seen: text in seen,
        within=60,
        every=0.1,
        failure=f"the log of job {name} never showed {text!r}",
        shown=lambda seen: seen[-500:],
    )


def test_job_names_are_deterministic_kubernetes_names() -> None:
    run = UUID("0123456789abcdef0123456789abcdef")
    assert job_name_for(run) == "rai-train-0123456789abcdef0123456789abcdef"
    assert job_name_for(run) == job_name_for(UUID(str(run)))
    assert job_name_for(run, attempt=2) == "rai-train-0123456789abcdef0123456789abcdef-a2"
    assert len(job_name_for(run, attempt=99)) <= 63
    with pytest.raises(ValueError, match="from 1"):
        job_name_for(run, attempt=0)


ORIGIN = JobOrigin(tenant_id=uuid4(), training_run_id=uuid4(), attempt=1, model_name="yield")


@pytest.mark.parametrize("name", ["Rai-train", "-x", "x-", "a" * 64, "../etc", "a_b", ""])
def test_a_job_name_must_be_a_kubernetes_name(name: str) -> None:
    with pytest.raises(ValueError, match="job name"):
        JobSpec(name=name, argv=(), origin=ORIGIN)


def test_a_spec_runs_the_trainer_and_the_runner_owns_the_result_file() -> None:
    with pytest.raises(ValueError, match="-m trainer"):
        JobSpec(name="job", argv=("-c", "print('anything')"), origin=ORIGIN)
    with pytest.raises(ValueError, match="--result-file"):
        JobSpec(
            name="job", argv=("-m", "trainer", "--result-file", "elsewhere.json"), origin=ORIGIN
        )
    with pytest.raises(ValueError, match="--result-file"):
        JobSpec(name="job", argv=("-m", "trainer", "--result-file=elsewhere.json"), origin=ORIGIN)


async def test_an_unknown_job(runner: LocalJobRunner) -> None:
    status = await runner.status(job_name_for(uuid4()))
    assert status.state is JobState.UNKNOWN
    assert not status.finished
    await runner.cancel(job_name_for(uuid4()))  # nothing to stop: no error


async def test_launching_a_name_twice_starts_one_process(
    runner: LocalJobRunner, state_dir: Path, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot, extra_seconds=3)
    first = await runner.launch(spec)
    again = await runner.launch(spec)
    elsewhere = await LocalJobRunner(state_dir).launch(spec)

    assert first.created
    assert first.pid is not None
    assert not again.created
    assert not elsewhere.created
    assert again.pid == elsewhere.pid == first.pid
    directory = str(runner.job_dir(spec.name))
    assert _live_processes_naming(directory) == [first.pid]
    assert (await runner.status(spec.name)).state is JobState.RUNNING

    status = await wait_until_exited(runner, spec.name)
    assert status.state is JobState.SUCCEEDED, status.detail
    # A finished job is re-attached to as well, never started again.
    after = await runner.launch(spec)
    assert not after.created
    assert _live_processes_naming(directory) == []
    assert (await runner.status(spec.name)).state is JobState.SUCCEEDED


async def test_concurrent_launches_of_one_name_start_one_process(
    state_dir: Path, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot, extra_seconds=2)
    runners = [LocalJobRunner(state_dir) for _ in range(5)]
    handles = await asyncio.gather(*(r.launch(spec) for r in runners))
    assert sum(handle.created for handle in handles) == 1
    assert len({handle.pid for handle in handles}) == 1
    status = await wait_until_exited(runners[0], spec.name)
    assert status.state is JobState.SUCCEEDED, status.detail


async def test_a_new_launcher_reattaches_to_the_running_job(
    state_dir: Path, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot, extra_seconds=3)
    launcher = LocalJobRunner(state_dir)
    launched = await launcher.launch(spec)
    del launcher  # the worker dies; the job is not its child and keeps running

    successor = LocalJobRunner(state_dir)
    assert (await successor.status(spec.name)).state is JobState.RUNNING
    attached = await successor.launch(spec)
    assert not attached.created
    assert attached.pid == launched.pid
    assert attached.started_at == launched.started_at

    status = await wait_until_exited(successor, spec.name)
    assert status.state is JobState.SUCCEEDED, status.detail
    assert status.exit_code == 0


async def test_a_launcher_dying_before_recording_the_process_loses_nothing(
    state_dir: Path, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot, extra_seconds=3)
    launched = await LocalJobRunner(state_dir).launch(spec)
    # As if the launcher died between starting the process and saving its record.
    (LocalJobRunner(state_dir).job_dir(spec.name) / "process.json").unlink()

    successor = LocalJobRunner(state_dir)
    assert (await successor.status(spec.name)).state is JobState.RUNNING
    attached = await successor.launch(spec)
    assert not attached.created
    assert attached.pid == launched.pid
    assert _live_processes_naming(str(successor.job_dir(spec.name))) == [launched.pid]
    await successor.cancel(spec.name)
    assert _live_processes_naming(str(successor.job_dir(spec.name))) == []


async def test_a_launcher_dying_before_starting_the_process_never_starts_two(
    runner: LocalJobRunner, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot)
    # As if the launcher died right after recording its intent to launch.
    runner.job_dir(spec.name).mkdir(parents=True)
    (runner.job_dir(spec.name) / "spec.json").write_text("{}")

    status = await runner.status(spec.name)
    assert status.state is JobState.FAILED
    assert "never started" in status.detail
    assert not (await runner.launch(spec)).created
    assert _live_processes_naming(str(runner.job_dir(spec.name))) == []


async def test_a_trainer_killed_with_sigkill_is_failed(
    runner: LocalJobRunner, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot, extra_seconds=60)
    handle = await runner.launch(spec)
    await _wait_for_log(runner, spec.name, "simulating")
    assert handle.pid is not None
    [trainer] = _children(handle.pid)
    os.kill(trainer, signal.SIGKILL)

    status = await wait_until_exited(runner, spec.name)
    assert status.state is JobState.FAILED
    assert status.exit_code == 128 + signal.SIGKILL
    assert status.result is None
    assert "exited without a result: killed by SIGKILL" in status.detail
    assert "simulating" in status.detail, "the detail carries the log tail"


async def test_a_job_killed_with_its_wrapper_is_failed(
    runner: LocalJobRunner, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot, extra_seconds=60)
    handle = await runner.launch(spec)
    await _wait_for_log(runner, spec.name, "simulating")
    assert handle.pid is not None
    os.killpg(os.getpgid(handle.pid), signal.SIGKILL)

    status = await wait_until_exited(runner, spec.name)
    assert status.state is JobState.FAILED
    assert status.exit_code is None
    assert "no exit status was recorded" in status.detail


async def test_cancel_stops_a_training_job(
    runner: LocalJobRunner, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot, extra_seconds=60)
    handle = await runner.launch(spec)
    await _wait_for_log(runner, spec.name, "simulating")
    await runner.cancel(spec.name)

    record = ProcessSlot(runner.job_dir(spec.name)).load()
    assert record is not None
    assert record.pid == handle.pid
    assert not is_alive(record.pid, record.start_time)
    assert _live_processes_naming(str(runner.job_dir(spec.name))) == []
    status = await runner.status(spec.name)
    assert status.state is JobState.FAILED
    # The trainer turned SIGTERM into a FAILED result; the wrapper recorded its exit.
    assert status.result is not None
    assert status.result.error is not None
    assert "terminated by SIGTERM" in status.result.error
    assert status.exit_code == 1

    await runner.cancel(spec.name)  # already over: nothing to do
    assert not (await runner.launch(spec)).created
    assert (await runner.status(spec.name)).state is JobState.FAILED


async def test_cancel_right_after_launch(
    runner: LocalJobRunner, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot, extra_seconds=60)
    await runner.launch(spec)
    await runner.cancel(spec.name)
    status = await wait_until_exited(runner, spec.name, within=20)
    assert status.state is JobState.FAILED
    # Either the trainer was still starting (killed by the signal) or it reported it.
    assert "cancelled" in status.detail or "SIGTERM" in status.detail


async def test_a_trainer_that_cannot_start_is_failed(
    state_dir: Path, service_storage: Settings, snapshot: Snapshot
) -> None:
    runner = LocalJobRunner(state_dir, python="/nonexistent/python3")
    spec = _spec(service_storage, snapshot)
    assert (await runner.launch(spec)).created
    status = await wait_until_exited(runner, spec.name)
    assert status.state is JobState.FAILED
    assert status.exit_code == 127
    assert "exit code 127" in status.detail
    assert "/nonexistent/python3" in status.detail


async def test_a_command_line_the_trainer_refuses_is_failed(
    runner: LocalJobRunner, service_storage: Settings, snapshot: Snapshot
) -> None:
    spec = _spec(service_storage, snapshot)
    broken = dataclasses.replace(spec, argv=("-m", "trainer", "--tenant-id", "x"))
    await runner.launch(broken)
    status = await wait_until_exited(runner, spec.name)
    assert status.state is JobState.FAILED
    assert status.exit_code == 2
    assert "usage: python -m trainer" in status.detail


async def _wait_pending(runner: LocalJobRunner, name: str) -> JobStatus:
    """Until job ``name`` reports that it waits for a slot."""
    return await wait_until(
        lambda: runner.status(name),
        lambda status: status.state is JobState.PENDING,
        within=20,
        every=0.1,
        failure=f"job {name} never reported that it waits for a slot",
    )


async def test_a_job_waits_pending_for_a_free_slot(
    state_dir: Path, service_storage: Settings, snapshot: Snapshot
) -> None:
    runner = LocalJobRunner(state_dir, slots=1, stop_grace=5.0)
    first = _spec(service_storage, snapshot, extra_seconds=4)
    second = _spec(service_storage, snapshot)
    await runner.launch(first)
    await _wait_for_log(runner, first.name, "simulating")
    # Another launcher on the machine (a second worker) shares the one slot.
    assert (await LocalJobRunner(state_dir, slots=1).launch(second)).created

    waiting = await _wait_pending(runner, second.name)
    assert waiting.detail == "waiting for one of the 1 local job slots"
    assert (await runner.status(first.name)).state is JobState.RUNNING
    log = runner.job_dir(second.name) / "job.log"
    assert "started" not in (log.read_text() if log.exists() else "")

    done_first = await wait_until_exited(runner, first.name)
    done_second = await wait_until_exited(runner, second.name)
    assert done_first.state is done_second.state is JobState.SUCCEEDED, done_second.detail
    assert not (runner.job_dir(second.name) / "queued").exists()
    # The second trainer started only after the first had exited.
    first_done = (runner.job_dir(first.name) / "exit_code").stat().st_mtime
    started = [line for line in log.read_text().splitlines() if line.endswith('started"}')]
    assert started, log.read_text()
    second_began = datetime.fromisoformat(json.loads(started[0])["time"]).timestamp()
    assert second_began >= first_done - 0.01  # mtime granularity


async def test_cancelling_a_job_that_waits_for_a_slot_ends_it_at_once(
    state_dir: Path, service_storage: Settings, snapshot: Snapshot
) -> None:
    runner = LocalJobRunner(state_dir, slots=1, stop_grace=30.0)
    busy = _spec(service_storage, snapshot, extra_seconds=60)
    queued = _spec(service_storage, snapshot)
    await runner.launch(busy)
    await runner.launch(queued)
    await _wait_pending(runner, queued.name)
    await runner.cancel(queued.name)
    # 143: the wrapper's own record of SIGTERM ending the wait (a SIGKILL records nothing).
    status = await runner.status(queued.name)
    assert status.state is JobState.FAILED
    assert status.exit_code == 143
    assert status.detail.startswith("cancelled")
    assert _live_processes_naming(str(runner.job_dir(queued.name))) == []
    assert not (runner.job_dir(queued.name) / "result.json").exists()
    await runner.cancel(busy.name)
    assert (await wait_until_exited(runner, busy.name)).state is JobState.FAILED
