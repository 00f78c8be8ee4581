"""Scenario 2, kill the worker at every step (M29): a ``rai worker`` process is SIGKILLed while
the pipeline is in each of its steps, a new one is started, and the run must end
SUCCEEDED_SHADOW with exactly one drift report, one dataset snapshot, one training job, one
training run, one model version, one bias audit, and an audit chain that verifies.

"In the step" is checked, not assumed: the step's activity must still be pending in Temporal
once the killed worker is gone, and the run's history must show it retried (a second attempt)
-- a kill that landed after the step is a failed row, not a pass. Drift analysis, registration,
the bias audit and promotion take from a few to a few hundred milliseconds on the test data, so
a probe that polls Temporal catches them only by luck. To kill the worker inside them every
time, the scenario (as the database administrator) holds what the step's write needs: a
``SHARE`` lock on ``drift_reports``, ``model_versions`` or ``bias_audits`` from the pipeline's
start (nothing else writes them before that step), and for promotion the new model version's
row (``FOR NO KEY UPDATE``) from the bias audit on; it waits until ``pg_stat_activity`` shows
the step's statement waiting for that lock, kills the worker, then releases the lock (the dead
worker's transaction is rolled back when its backend finds the client gone). The snapshot only
reads Postgres before writing S3, and training and the callback wait are seconds long: those
are caught by polling.

Figures per step, all taken from Temporal's history of the run: the attempts of the killed
step, the time from the new worker's start to the step running again (its last attempt's start)
and to the run's end, and the resume cost: the run's wall time minus the undisturbed baseline
run's. A killed activity is retried once Temporal notices its worker is gone: at its heartbeat
timeout (every step has one, ``PipelineInput.step_heartbeat_seconds``; training
``training_heartbeat_seconds``, 3 s here); a run that has not finished ``RESUME_LIMIT`` seconds
after the new worker started is terminated and counted as not resumed.

The counts are read after the run: drift reports, training runs, model versions and bias audits
from Postgres (as the administrator, RLS bypassed), snapshots from the S3 datasets bucket, jobs
from the local job runner's job directories (checked against the job name the training run
records in Postgres), the chain with ``verify_chain``, and the number of pipeline executions and
the outcome from Temporal.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import WorkflowHistory

from db.integrity import verify_chain
from domain.pipeline import ActivityName, PipelineResult, pipeline_workflow_id
from starter import Started, start_pipeline
from tests.acceptance.report import ScenarioResult
from tests.acceptance.stack import Stack, World
from tests.rai_process import start_worker

NAME = "2-kill-worker-every-step"
RESUME_LIMIT = 90.0
# How long a probe waits for its step before the row fails as "not reached".
PROBE_LIMIT = 180.0
STARTED = PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
EXACTLY_ONE = (
    "drift_reports",
    "snapshots",
    "jobs",
    "training_runs",
    "model_versions",
    "bias_audits",
    "pipeline executions",
)


class MissedStep(Exception):
    """The worker was not killed in the step (it came and went, or never came)."""


Probe = Callable[[World, Started, UUID], Awaitable[bool]]
Hold = Callable[[World, Started, UUID], AbstractAsyncContextManager[None]]


async def pending_attempt(started: Started, name: str) -> int | None:
    """The attempt of ``name`` if Temporal has it pending and started, else None."""
    description = await started.handle.describe()
    for pending in description.raw_description.pending_activities:
        if pending.activity_type.name == name and pending.state == STARTED:
            return int(pending.attempt)
    return None


def activity_started(name: str) -> Probe:
    async def probe(world: World, started: Started, tenant: UUID) -> bool:
        return await pending_attempt(started, name) is not None

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


def tenant_job_results(jobs: Path, tenant: UUID) -> list[Path]:
    """The result files of ``tenant``'s jobs in the local runner's ``jobs`` directory (every
    run of the scenario shares it: an earlier run's result is not this run's)."""
    found = []
    for result in jobs.glob("*/result.json"):
        try:
            spec = json.loads((result.parent / "spec.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if spec.get("origin", {}).get("tenant_id") == str(tenant):
            found.append(result)
    return found


async def job_finished_unclaimed(world: World, started: Started, tenant: UUID) -> bool:
    """This run's job wrote its result and called back, the training step has not finished
    yet."""
    return bool(tenant_job_results(world.state / "jobs", tenant)) and await activity_started(
        ActivityName.TRAIN_MODEL
    )(world, started, tenant)


def waits_for_lock(name: str, statement: str) -> Probe:
    """``name`` runs and a backend runs ``statement`` (an ILIKE pattern), waiting for a lock."""

    async def probe(world: World, started: Started, tenant: UUID) -> bool:
        if not await activity_started(name)(world, started, tenant):
            return False
        conn = await world.admin()
        try:
            waiting = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query ILIKE $1",
                statement,
            )
        finally:
            await conn.close()
        return bool(waiting)

    probe.__name__ = f"{name} waiting for a lock"
    return probe


async def wait_for(world: World, started: Started, tenant: UUID, probe: Probe, what: str) -> None:
    deadline = time.monotonic() + PROBE_LIMIT
    while not await probe(world, started, tenant):
        if (await started.handle.describe()).close_time is not None:
            raise MissedStep(f"not killed: the run ended before {what} was seen")
        if time.monotonic() > deadline:
            raise MissedStep(f"not killed: {what} not seen within {PROBE_LIMIT:.0f} s")
        await asyncio.sleep(0.02)


def table_held(table: str) -> Hold:
    """A ``SHARE`` lock on ``rai.<table>`` for the whole hold: reads and foreign-key checks go
    on, every ``INSERT`` into it waits."""

    @asynccontextmanager
    async def hold(world: World, started: Started, tenant: UUID) -> AsyncIterator[None]:
        conn = await world.admin()
        transaction = conn.transaction()
        await transaction.start()
        try:
            await conn.execute(f"LOCK TABLE rai.{table} IN SHARE MODE")
            yield
        finally:
            await transaction.rollback()
            await conn.close()

    return hold


@asynccontextmanager
async def model_row_held(world: World, started: Started, tenant: UUID) -> AsyncIterator[None]:
    """From the bias audit on, hold the tenant's model version row (``FOR NO KEY UPDATE``:
    the audit's foreign key to it still gets its key-share lock, the promotion's
    ``FOR UPDATE`` waits); released on exit, after the kill."""
    await wait_for(
        world, started, tenant, activity_started(ActivityName.AUDIT_MODEL), "the bias audit"
    )
    conn = await world.admin()
    transaction = conn.transaction()
    await transaction.start()
    try:
        held = await conn.fetch(
            "SELECT id FROM rai.model_versions WHERE tenant_id = $1 FOR NO KEY UPDATE", tenant
        )
        if len(held) != 1:
            raise MissedStep(f"not killed: {len(held)} model versions when the audit ran")
        yield
    finally:
        await transaction.rollback()
        await conn.close()


@dataclass(frozen=True)
class Step:
    label: str
    activity: str  # the activity the worker must be killed in
    probe: Probe
    how: str  # the moment of the kill, for the report
    hold: Hold | None = None


STEPS: tuple[Step, ...] = (
    Step(
        "drift analysis",
        ActivityName.ANALYZE_DRIFT,
        waits_for_lock(ActivityName.ANALYZE_DRIFT, "%INSERT INTO drift_reports%"),
        "its INSERT waits for a held SHARE lock on drift_reports",
        hold=table_held("drift_reports"),
    ),
    Step(
        "snapshot",
        ActivityName.SNAPSHOT_DATASET,
        activity_started(ActivityName.SNAPSHOT_DATASET),
        "seen started in Temporal",
    ),
    Step(
        "training (job running)",
        ActivityName.TRAIN_MODEL,
        job_running,
        "the training run RUNNING in Postgres",
    ),
    Step(
        "waiting for the callback",
        ActivityName.TRAIN_MODEL,
        job_finished_unclaimed,
        "the job's result written, the training step still running",
    ),
    Step(
        "registration",
        ActivityName.REGISTER_MODEL,
        waits_for_lock(ActivityName.REGISTER_MODEL, "%INSERT INTO model_versions%"),
        "its INSERT waits for a held SHARE lock on model_versions",
        hold=table_held("model_versions"),
    ),
    Step(
        "bias audit",
        ActivityName.AUDIT_MODEL,
        waits_for_lock(ActivityName.AUDIT_MODEL, "%INSERT INTO bias_audits%"),
        "its INSERT waits for a held SHARE lock on bias_audits",
        hold=table_held("bias_audits"),
    ),
    Step(
        "promotion",
        ActivityName.PROMOTE_TO_SHADOW,
        waits_for_lock(ActivityName.PROMOTE_TO_SHADOW, "%FROM model_versions%FOR UPDATE%"),
        "its SELECT ... FOR UPDATE waits for the held model version row",
        hold=model_row_held,
    ),
)


async def stop(process: asyncio.subprocess.Process | None) -> None:
    if process is not None and process.returncode is None:
        process.kill()
        await process.wait()


def activity_timeline(history: WorkflowHistory, name: str) -> tuple[int, datetime | None]:
    """Attempts of ``name`` and the start of its last attempt, from the run's history (a
    retried activity's started event carries the attempt that completed)."""
    scheduled: set[int] = set()
    attempts, last_start = 0, None
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name == name:
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attributes_ = event.activity_task_started_event_attributes
            if attributes_.scheduled_event_id in scheduled:
                attempts = max(attempts, int(attributes_.attempt))
                last_start = event.event_time.ToDatetime().astimezone()
    return attempts, last_start


async def counted(world: World, tenant: UUID) -> dict[str, Any]:
    conn = await world.admin()
    try:
        out: dict[str, Any] = {}
        for table in ("drift_reports", "training_runs", "model_versions", "bias_audits"):
            out[table] = await conn.fetchval(
                f"SELECT count(*) FROM rai.{table} WHERE tenant_id = $1",
                tenant,
            )
        out["model status"] = await conn.fetchval(
            "SELECT string_agg(status, ',') FROM rai.model_versions WHERE tenant_id = $1", tenant
        )
        recorded = await conn.fetchval(
            "SELECT array_agg(job_name) FROM rai.training_runs WHERE tenant_id = $1", tenant
        )
    finally:
        await conn.close()
    keys = await world.env.store.list_keys(world.settings.s3_datasets_bucket, "")
    out["snapshots"] = sum(str(tenant) in k and "checkpoint" not in k for k in keys)
    # The jobs the local job runner launched for the tenant (its job directories), and whether
    # they are the one the tenant's training run names.
    launched = sorted(
        p.parent.name
        for p in (world.state / "jobs").glob("*/spec.json")
        if str(tenant) in p.read_text()
    )
    out["jobs"] = len(launched)
    out["job is the run's"] = launched == sorted(recorded or [])
    client = world.stack.temporal.client
    out["pipeline executions"] = len(
        [e async for e in client.list_workflows(f"WorkflowId = '{pipeline_workflow_id(tenant)}'")]
    )
    out["chain verifies"] = (await verify_chain(world.env.db, tenant)).ok
    return out


async def one_run(world: World, step: Step | None) -> dict[str, Any]:
    tenant = await world.env.tenant(f"kill at {step.label if step else 'nothing'}")
    await world.env.seed_events(tenant, "2025", 1100, seed=1)
    await world.env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    logs = world.state / "logs"
    logs.mkdir(exist_ok=True)
    first = await start_worker(world.settings, logs / f"{tenant}-1.log")
    second = None
    restarted_wall: datetime | None = None
    restarted_at = None
    try:
        client = world.stack.temporal.client
        began = time.monotonic()
        started = await start_pipeline(client, world.settings, tenant, training_heartbeat_seconds=3)
        if step is not None:
            try:
                async with step.hold(world, started, tenant) if step.hold else _nothing():
                    await wait_for(world, started, tenant, step.probe, step.label)
                    first.send_signal(signal.SIGKILL)
                    await first.wait()
                    if await pending_attempt(started, step.activity) is None:
                        raise MissedStep(
                            f"not killed: {step.activity} was over when the kill landed"
                        )
            except MissedStep:
                if (await started.handle.describe()).close_time is None:
                    await started.handle.terminate("acceptance: the kill missed its step")
                raise
            second = await start_worker(world.settings, logs / f"{tenant}-2.log")
            restarted_at = time.monotonic()
            restarted_wall = datetime.now().astimezone()
        try:
            result: PipelineResult = await asyncio.wait_for(
                started.handle.result(), timeout=RESUME_LIMIT + (0 if step else 300)
            )
            outcome = result.outcome.value
        except TimeoutError:
            await started.handle.terminate("acceptance: not resumed in time")
            outcome = f"not finished {RESUME_LIMIT:.0f} s after the new worker started"
        finished = time.monotonic()
    finally:
        await stop(first)
        await stop(second)
    run: dict[str, Any] = {
        "tenant": tenant,
        "outcome": outcome,
        "total": finished - began,
        "after restart": None if restarted_at is None else finished - restarted_at,
        "counts": await counted(world, tenant),
    }
    if step is not None and restarted_wall is not None:
        history = await started.handle.fetch_history()
        attempts, last_start = activity_timeline(history, step.activity)
        run["attempts"] = attempts
        run["step again"] = (
            None if last_start is None else (last_start - restarted_wall).total_seconds()
        )
    return run


@asynccontextmanager
async def _nothing() -> AsyncIterator[None]:
    yield


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


async def run(stack: Stack, options: dict[str, Any]) -> ScenarioResult:
    started = time.monotonic()
    details: list[dict[str, Any]] = []
    async with stack.world("kill") as world:
        world.settings = world.settings.model_copy(
            # every `rai worker` of the scenario on a free metrics port of its own
            update={"training_extra_seconds": 4.0, "worker_metrics_port": 0}
        )
        baseline = await one_run(world, None)
        for step in STEPS:
            try:
                run_ = await one_run(world, step)
            except MissedStep as missed:
                details.append(
                    {
                        "killed during": step.label,
                        "passed": False,
                        "killed when": step.how,
                        "outcome": str(missed),
                    }
                )
                continue
            counts = run_["counts"]
            exactly_one = all(counts[k] == 1 for k in EXACTLY_ONE)
            ok = (
                run_["outcome"] == "SUCCEEDED_SHADOW"
                and exactly_one
                and counts["job is the run's"]
                and counts["model status"] == "SHADOW"
                and counts["chain verifies"]
                and run_["attempts"] >= 2
            )
            details.append(
                {
                    "killed during": step.label,
                    "passed": ok,
                    "killed when": step.how,
                    "outcome": run_["outcome"],
                    "attempts of the step": run_["attempts"],
                    "new worker -> step again s": _round(run_["step again"]),
                    "new worker -> finished s": _round(run_["after restart"]),
                    "run s": _round(run_["total"]),
                    "resume cost s": _round(run_["total"] - baseline["total"]),
                    **counts,
                }
            )
    survived = sum(bool(d["passed"]) for d in details)
    costs: list[float] = sorted(float(d["resume cost s"]) for d in details if d["passed"])
    baseline_ok = (
        baseline["outcome"] == "SUCCEEDED_SHADOW"
        and all(baseline["counts"][k] == 1 for k in EXACTLY_ONE)
        and baseline["counts"]["job is the run's"]
        and baseline["counts"]["chain verifies"]
    )
    return ScenarioResult(
        name=NAME,
        passed=survived == len(STEPS) and baseline_ok,
        expected={
            "steps survived": len(STEPS),
            "baseline": "SUCCEEDED_SHADOW",
            "per step": "SUCCEEDED_SHADOW, the step retried (attempts >= 2), exactly one of"
            f" {', '.join(EXACTLY_ONE)}, the job the one the run names, the version in"
            f" SHADOW, chain verifies, within {RESUME_LIMIT:.0f} s of the new worker",
        },
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
