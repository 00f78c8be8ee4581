"""Scenario 2, kill the worker at every step (M29): a ``rai worker`` process is SIGKILLed while
the pipeline is in each of its steps, a new one is started, and the run must end
SUCCEEDED_SHADOW with exactly one drift report, one dataset snapshot, one training job, one
training run, one model version, one bias audit, and an audit chain that verifies.

The resume time is what the kill cost: (new worker started -> run finished) minus what the run
still had to do from that step in an undisturbed baseline run. A killed activity is retried
once Temporal notices its worker is gone: at its heartbeat timeout where it has one, else at its
start-to-close timeout; a run that has not finished ``RESUME_LIMIT`` seconds after the new
worker started is terminated and counted as not resumed.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import UUID

from temporalio.api.enums.v1 import PendingActivityState

from db.integrity import verify_chain
from domain.pipeline import ActivityName, PipelineResult
from starter import Started, start_pipeline
from tests.acceptance.report import ScenarioResult
from tests.acceptance.stack import Stack, World
from tests.environment import rai_environment

NAME = "2-kill-worker-every-step"
RESUME_LIMIT = 90.0
STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


class MissedStep(Exception):
    """The step came and went between two probes: the worker was not killed in it."""


Probe = Callable[[World, Started, UUID], Awaitable[bool]]


def activity_started(name: str) -> Probe:
    async def probe(world: World, started: Started, tenant: UUID) -> bool:
        description = await started.handle.describe()
        return any(
            p.activity_type.name == name
            and p.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            for p in description.raw_description.pending_activities
        )

    probe.__name__ = f"{name} running"
    return probe


async def job_running(world: World, started: Started, tenant: UUID) -> bool:
    conn = await world.admin()
    try:
        status = await conn.fetchval(
            "SELECT status FROM rai.training_runs WHERE tenant_id = $1", tenant
        )
    finally:
        await conn.close()
    return bool(status == "RUNNING")


async def job_finished_unclaimed(world: World, started: Started, tenant: UUID) -> bool:
    """The job wrote its result and called back, the training step has not finished yet."""
    results = list((world.state / "jobs").glob("*/result.json"))
    return bool(results) and await activity_started(ActivityName.TRAIN_MODEL)(
        world, started, tenant
    )


STEPS: tuple[tuple[str, Probe], ...] = (
    ("drift analysis", activity_started(ActivityName.ANALYZE_DRIFT)),
    ("snapshot", activity_started(ActivityName.SNAPSHOT_DATASET)),
    ("training (job running)", job_running),
    ("waiting for the callback", job_finished_unclaimed),
    ("registration", activity_started(ActivityName.REGISTER_MODEL)),
    ("bias audit", activity_started(ActivityName.AUDIT_MODEL)),
    ("promotion", activity_started(ActivityName.PROMOTE_TO_SHADOW)),
)


async def start_worker(world: World, log: Path) -> asyncio.subprocess.Process:
    handle = log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "worker",
            env=rai_environment(world.settings),
            stdout=handle,
            stderr=handle,
        )
    finally:
        handle.close()


async def stop(process: asyncio.subprocess.Process | None) -> None:
    if process is not None and process.returncode is None:
        process.kill()
        await process.wait()


async def counted(world: World, tenant: UUID) -> dict[str, Any]:
    conn = await world.admin()
    try:
        out: dict[str, Any] = {}
        for table in ("drift_reports", "training_runs", "model_versions", "bias_audits"):
            out[table] = await conn.fetchval(
                f"SELECT count(*) FROM rai.{table} WHERE tenant_id = $1",
                tenant,
            )
    finally:
        await conn.close()
    keys = await world.env.store.list_keys(world.settings.s3_datasets_bucket, "")
    out["snapshots"] = sum(str(tenant) in k and "checkpoint" not in k for k in keys)
    out["jobs"] = sum(
        str(tenant) in p.read_text() for p in (world.state / "jobs").glob("*/spec.json")
    )
    out["chain verifies"] = (await verify_chain(world.env.db, tenant)).ok
    return out


async def one_run(world: World, step: str | None, probe: Probe | None) -> dict[str, Any]:
    tenant = await world.env.tenant(f"kill at {step}")
    await world.env.seed_events(tenant, "2025", 1100, seed=1)
    await world.env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    logs = world.state / "logs"
    logs.mkdir(exist_ok=True)
    first = await start_worker(world, logs / f"{tenant}-1.log")
    second = None
    killed_at = restarted_at = None
    try:
        client = world.stack.temporal.client
        began = time.monotonic()
        started = await start_pipeline(client, world.settings, tenant, training_heartbeat_seconds=3)
        if probe is not None:
            while not await probe(world, started, tenant):
                if (await started.handle.describe()).close_time is not None:
                    raise MissedStep(f"not killed: the run ended before {step} was seen")
                await asyncio.sleep(0.02)
            first.send_signal(signal.SIGKILL)
            await first.wait()
            killed_at = time.monotonic()
            second = await start_worker(world, logs / f"{tenant}-2.log")
            restarted_at = time.monotonic()
        try:
            result: PipelineResult = await asyncio.wait_for(
                started.handle.result(), timeout=RESUME_LIMIT + (0 if probe else 300)
            )
            outcome = result.outcome.value
        except TimeoutError:
            await started.handle.terminate("acceptance: not resumed in time")
            outcome = f"not finished {RESUME_LIMIT:.0f} s after the new worker started"
        finished = time.monotonic()
    finally:
        await stop(first)
        await stop(second)
    return {
        "tenant": tenant,
        "outcome": outcome,
        "total": finished - began,
        "after kill": None if killed_at is None else finished - killed_at,
        "after restart": None if restarted_at is None else finished - restarted_at,
        "counts": await counted(world, tenant),
    }


async def run(stack: Stack, options: dict[str, Any]) -> ScenarioResult:
    started = time.monotonic()
    details: list[dict[str, Any]] = []
    async with stack.world("kill") as world:
        world.settings = world.settings.model_copy(update={"training_extra_seconds": 4.0})
        baseline = await one_run(world, None, None)
        for step, probe in STEPS:
            try:
                run_ = await one_run(world, step, probe)
            except MissedStep as missed:  # the step was over before the probe saw it
                details.append({"killed during": step, "passed": False, "outcome": str(missed)})
                continue
            counts = run_["counts"]
            exactly_one = all(
                counts[k] == 1
                for k in (
                    "drift_reports",
                    "snapshots",
                    "jobs",
                    "training_runs",
                    "model_versions",
                    "bias_audits",
                )
            )
            ok = run_["outcome"] == "SUCCEEDED_SHADOW" and exactly_one and counts["chain verifies"]
            details.append(
                {
                    "killed during": step,
                    "passed": ok,
                    "outcome": run_["outcome"],
                    "new worker -> finished s": round(run_["after restart"], 1),
                    "baseline run s": round(baseline["total"], 1),
                    "resume cost s": round(run_["total"] - baseline["total"], 1),
                    **{k: v for k, v in counts.items()},
                }
            )
    survived = sum(bool(d["passed"]) for d in details)
    costs: list[float] = sorted(float(d["resume cost s"]) for d in details if d["passed"])
    return ScenarioResult(
        name=NAME,
        passed=survived == len(STEPS) and baseline["outcome"] == "SUCCEEDED_SHADOW",
        expected={"steps survived": len(STEPS), "baseline": "SUCCEEDED_SHADOW"},
        observed={
            "steps survived": survived,
            "baseline": baseline["outcome"],
            "baseline run s": round(baseline["total"], 1),
            "baseline counts": baseline["counts"],
            "resume cost s (survived steps)": costs,
        },
        seconds=time.monotonic() - started,
        key_figure=f"{survived}/{len(STEPS)} kills survived; resume cost max"
        f" {max(costs) if costs else '-'} s",
        details=details,
    )
