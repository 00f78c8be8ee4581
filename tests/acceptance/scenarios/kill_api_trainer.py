"""Scenario 3, kill the API mid-batch and the trainer mid-epoch:

(a) A gateway client (``tests.acceptance.ingest.deliver``: a batch is re-sent after a 5xx or a
    broken connection; events are idempotent by season and field) sends signed batches over
    several connections to ``rai api --workers 2``. Once a third of them is delivered, one of
    the two API worker processes is SIGKILLed while requests are in flight. ``rai api`` stops
    the other worker too when one dies (``api.server.serve_workers``: a half-working API must
    not look healthy), so the battery restarts it on the same port as a process supervisor
    would; the client's retries reach the restarted API. Expected: every batch delivered, the
    database holds each event sent exactly once (rows = distinct fields = events sent).
(b) A pipeline trains with the local job runner; its trainer process (the child of the job's
    wrapper shell, found through ``<state>/jobs/<job>/wrapper.pid``) is SIGKILLed in the
    middle of its training (its simulated GPU time, after the data is read, before the
    artifact is written). Expected: that attempt's job fails (exit status 137), Temporal
    retries the training step, the next attempt's job trains, and the run ends
    SUCCEEDED_SHADOW with one training run (SUCCEEDED) and one model version.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from devstack.net import free_port
from domain.pipeline import ActivityName, PipelineResult
from starter import start_pipeline
from tests.acceptance.ingest import (
    batches,
    deliver,
    gateway_tenant,
    numbered_events,
    start_api,
    stored_counts,
)
from tests.acceptance.report import ScenarioResult
from tests.acceptance.scenarios.faults import (
    activity_attempts,
    count,
    drifted_tenant,
    run_statuses,
    wait_for,
)
from tests.acceptance.stack import Stack
from tests.rai_process import stop_process
from worker import running_workers

NAME = "3-kill-api-and-trainer"
API_EVENTS, API_BATCH, API_CONNECTIONS = 20_000, 100, 6
TRAINER_GPU_SECONDS = 10.0
KILL_LOOK_SECONDS = 10.0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process ``pid`` holds open."""
    inodes: set[int] = set()
    try:
        descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for descriptor in descriptors:
        try:
            target = os.readlink(descriptor)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def requests_in_flight(pid: int, port: int) -> int:
    """How many established TCP connections to ``port`` process ``pid`` is serving: with a
    fresh connection per request (the client's ``force_close``), each is a request the process
    has accepted and not yet finished answering."""
    held = socket_inodes(pid)
    established = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] == "01" and int(fields[9]) in held:
                established += 1
    return established


def api_workers(supervisor: int) -> list[int]:
    """The API worker processes of a ``rai api --workers N`` (its multiprocessing children,
    not the resource tracker)."""
    return [pid for pid in children(supervisor) if "spawn_main" in cmdline(pid)]


async def api_killed_mid_batch(stack: Stack) -> dict[str, Any]:
    async with stack.world("kill-api") as world:
        tenant = await gateway_tenant(world, "kill the api")
        season = "kill-api"
        to_send = batches(numbered_events(tenant, season, API_EVENTS), API_BATCH)
        port = free_port()
        log = world.state / "api.log"
        api, url = await start_api(world.settings, port, log, workers=2)
        workers_before = api_workers(api.pid)
        third = asyncio.Event()
        restarted: list[asyncio.subprocess.Process] = []

        def delivered(n: int) -> None:
            if n >= len(to_send) // 3:
                third.set()

        async def kill_one_worker() -> dict[str, Any]:
            await third.wait()
            # Mid-batch: kill a worker while it holds a request (polled; the first one seen
            # serving one), not whichever worker happens to be idle at the third batch.
            victim, in_flight = workers_before[0], 0
            looking_until = time.monotonic() + KILL_LOOK_SECONDS
            while time.monotonic() < looking_until:
                serving = {pid: requests_in_flight(pid, port) for pid in workers_before}
                victim, in_flight = max(serving.items(), key=lambda item: item[1])
                if in_flight:
                    break
                await asyncio.sleep(0.001)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            code = await asyncio.wait_for(api.wait(), 60)
            down = time.monotonic()
            again, _ = await start_api(world.settings, port, log, workers=2)
            restarted.append(again)
            return {
                "killed worker pid": victim,
                "requests it was serving when killed": in_flight,
                "rai api exit code after the kill": code,
                "rai api stopped after s": round(down - killed, 1),
                "restarted API serving after s": round(time.monotonic() - killed, 1),
            }

        try:
            delivery, kill = await asyncio.gather(
                deliver(url, tenant, to_send, connections=API_CONNECTIONS, on_delivered=delivered),
                kill_one_worker(),
            )
        finally:
            await stop_process(api)
            for process in restarted:
                await stop_process(process)
        stored = await stored_counts(world, tenant.id, season)
    sent = delivery.events
    lost = sent - stored["distinct fields"]
    duplicated = stored["rows"] - stored["distinct fields"]
    taken = delivery.outcomes["ACCEPTED"] + delivery.outcomes["DUPLICATE"]
    passed = (
        len(workers_before) == 2
        and delivery.broken >= 1
        and not delivery.undelivered
        and lost == 0
        and duplicated == 0
        and stored["rows"] == sent
        and taken == sent
    )
    return {
        "part": "API worker SIGKILLed mid-batch",
        "passed": passed,
        "expected": "2 API workers; >= 1 request broken by the kill; every batch delivered;"
        " rows = distinct fields = events sent",
        "observed": {
            "API workers before": len(workers_before),
            **kill,
            **delivery.summary(),
            "stored rows": stored["rows"],
            "stored distinct fields": stored["distinct fields"],
            "lost": lost,
            "duplicated": duplicated,
        },
    }


def job_directories(state: Path) -> list[Path]:
    jobs = state / "jobs"
    return sorted(p for p in jobs.iterdir() if p.is_dir()) if jobs.exists() else []


def trainer_of(job: Path) -> int | None:
    """The trainer process of a running local job: the wrapper shell's child."""
    try:
        wrapper = int((job / "wrapper.pid").read_text())
    except (OSError, ValueError):
        return None
    for pid in children(wrapper):
        if "-m trainer" in cmdline(pid):
            return pid
    return None


def exit_code(job: Path) -> str:
    try:
        return (job / "exit_code").read_text().strip()
    except OSError:
        return "none"


async def trainer_killed_mid_epoch(stack: Stack) -> dict[str, Any]:
    async with stack.world("kill-trainer") as world:
        tenant: UUID = await drifted_tenant(world, "kill the trainer")
        settings = world.settings.model_copy(update={"training_extra_seconds": TRAINER_GPU_SECONDS})
        client = stack.temporal.client
        victim: dict[str, Any] = {}
        async with running_workers(settings, client=client):
            began = time.monotonic()
            started = await start_pipeline(client, settings, tenant)

            async def trainer_training() -> bool:
                for job in job_directories(settings.state_dir):
                    log = job / "job.log"
                    training = log.exists() and "simulating" in log.read_text(errors="replace")
                    pid = trainer_of(job) if training else None
                    if pid is not None:
                        victim.update(job=job.name, pid=pid)
                        return True
                return False

            await wait_for(trainer_training, within=300, interval=0.05)
            os.kill(victim["pid"], signal.SIGKILL)
            killed = time.monotonic()
            result: PipelineResult = await asyncio.wait_for(started.handle.result(), 300)
            finished = time.monotonic()
            training = await activity_attempts(started.handle, ActivityName.TRAIN_MODEL)
        jobs = {job.name: exit_code(job) for job in job_directories(settings.state_dir)}
        statuses = await run_statuses(world, tenant)
        versions = await count(world, "model_versions", tenant)
    killed_job = victim["job"]
    others = [code for name, code in jobs.items() if name != killed_job]
    passed = (
        result.outcome.value == "SUCCEEDED_SHADOW"
        and jobs.get(killed_job) == str(128 + signal.SIGKILL)
        and others == ["0"]
        and training["retried attempts"] >= 1
        and statuses == ["SUCCEEDED"]
        and versions == 1
    )
    return {
        "part": "trainer SIGKILLed mid-epoch",
        "passed": passed,
        "expected": "the killed attempt's job exits 137; the next attempt's job exits 0;"
        " SUCCEEDED_SHADOW, 1 training run SUCCEEDED, 1 model version",
        "observed": {
            "outcome": result.outcome.value,
            "killed job": killed_job,
            "jobs (exit status)": jobs,
            "training step": training,
            "training runs": statuses,
            "model versions": versions,
            "kill -> run finished s": round(finished - killed, 1),
            "run s": round(finished - began, 1),
        },
    }


async def run(stack: Stack, options: dict[str, Any]) -> ScenarioResult:
    started = time.monotonic()
    details = []
    for part in (api_killed_mid_batch, trainer_killed_mid_epoch):
        began = time.monotonic()
        try:
            row = await part(stack)
        except Exception as exc:  # one part's crash fails that part, the other still runs
            row = {
                "part": part.__name__,
                "passed": False,
                "expected": "",
                "observed": f"{type(exc).__name__}: {exc}",
            }
        details.append({**row, "seconds": round(time.monotonic() - began, 1)})
    api, trainer = details
    api_seen: dict[str, Any] = api["observed"] if isinstance(api["observed"], dict) else {}
    trainer_seen: dict[str, Any] = (
        trainer["observed"] if isinstance(trainer["observed"], dict) else {}
    )
    key = (
        f"API kill: lost {api_seen.get('lost')}, duplicated {api_seen.get('duplicated')};"
        f" trainer kill: {trainer_seen.get('outcome')},"
        f" {trainer_seen.get('model versions')} model version"
    )
    return ScenarioResult(
        name=NAME,
        passed=all(d["passed"] for d in details),
        expected={
            "API kill: lost": 0,
            "API kill: duplicated": 0,
            "API kill: undelivered batches": 0,
            "trainer kill: outcome": "SUCCEEDED_SHADOW",
            "trainer kill: training runs": ["SUCCEEDED"],
            "trainer kill: model versions": 1,
        },
        observed={
            "API kill: lost": api_seen.get("lost"),
            "API kill: duplicated": api_seen.get("duplicated"),
            "API kill: undelivered batches": api_seen.get("undelivered batches"),
            "API kill: requests broken by the kill": api_seen.get("broken connections"),
            "API kill: connections refused while down": api_seen.get("refused connections"),
            "trainer kill: outcome": trainer_seen.get("outcome"),
            "trainer kill: training runs": trainer_seen.get("training runs"),
            "trainer kill: model versions": trainer_seen.get("model versions"),
            "trainer kill: jobs (exit status)": trainer_seen.get("jobs (exit status)"),
        },
        seconds=time.monotonic() - started,
        key_figure=key,
        details=details,
    )
