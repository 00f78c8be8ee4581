"""M29 and T-D1-05 on the real stack: a worker killed with SIGKILL mid-training loses nothing
and starts nothing twice; 50 concurrent starts for one tenant train exactly once."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from uuid import UUID

import pytest
from temporalio.testing import WorkflowEnvironment

from domain.pipeline import PipelineInput, PipelineOutcome, PipelineResult
from starter import PipelineAlreadyRunning, Started, start_pipeline
from tests.e2e.support import worker_settings
from tests.integration.services_env import ServicesEnv
from tests.rai_process import start_worker
from worker import running_workers
from workflows.retrain import RetrainingPipeline

pytestmark = pytest.mark.e2e


async def training_runs(env: ServicesEnv, tenant: UUID) -> list[tuple[str, str | None]]:
    async with env.db.transaction(tenant) as conn:
        rows = await conn.fetch("SELECT status, job_name FROM training_runs")
    return [(r["status"], r["job_name"]) for r in rows]


async def test_a_worker_killed_mid_training_loses_nothing(
    temporal: WorkflowEnvironment, services_env: ServicesEnv, db_admin_dsn: str, tmp_path: Path
) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    settings = worker_settings(env, db_admin_dsn, tmp_path, temporal).model_copy(
        update={"training_extra_seconds": 8.0}
    )
    first = await start_worker(settings, tmp_path / "worker-1.log")
    second: asyncio.subprocess.Process | None = None
    try:
        started = await start_pipeline(
            temporal.client, settings, tenant, training_heartbeat_seconds=3
        )
        for _ in range(600):  # until the training job runs
            runs = await training_runs(env, tenant)
            if runs and runs[0][0] == "RUNNING":
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("training never started; see " + str(tmp_path / "worker-1.log"))
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await start_worker(settings, tmp_path / "worker-2.log")
        result: PipelineResult = await asyncio.wait_for(started.handle.result(), timeout=180)
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.terminate()
                await process.wait()
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW, result.detail
    jobs = sorted(p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir())
    assert len(jobs) == 1, jobs  # the new worker re-attached instead of training again
    runs = await training_runs(env, tenant)
    assert runs == [("SUCCEEDED", jobs[0])]
    async with env.db.transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM model_versions") == 1


async def test_fifty_concurrent_starts_train_exactly_once(
    temporal: WorkflowEnvironment, services_env: ServicesEnv, db_admin_dsn: str, tmp_path: Path
) -> None:
    env = services_env
    by_id, by_lock = await env.tenant("by workflow id"), await env.tenant("by lock")
    for tenant in (by_id, by_lock):
        await env.seed_events(tenant, "2025", 1100, seed=1)
        await env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    settings = worker_settings(env, db_admin_dsn, tmp_path, temporal).model_copy(
        update={"training_extra_seconds": 4.0}
    )
    client = temporal.client
    async with running_workers(settings, client=client):
        # Path 1: the deterministic workflow id — Temporal itself refuses 49 of the starts.
        outcomes = await asyncio.gather(
            *(start_pipeline(client, settings, by_id) for _ in range(50)),
            return_exceptions=True,
        )
        winners = [o for o in outcomes if isinstance(o, Started)]
        refused = [o for o in outcomes if isinstance(o, PipelineAlreadyRunning)]
        assert (len(winners), len(refused)) == (1, 49)

        # Path 2: 50 workflows with ids of their own for one tenant — the Redis mutex decides.
        handles = await asyncio.gather(
            *(
                client.start_workflow(
                    RetrainingPipeline.run,
                    PipelineInput(tenant_id=by_lock, drift_task_queue=settings.drift_task_queue),
                    id=f"race/{by_lock}/{i}",
                    task_queue=settings.training_task_queue,
                )
                for i in range(50)
            )
        )
        results = await asyncio.gather(*(h.result() for h in handles))
        first_result = await winners[0].handle.result()
    assert first_result.outcome is PipelineOutcome.SUCCEEDED_SHADOW
    counted = [r.outcome for r in results]
    assert counted.count(PipelineOutcome.SUCCEEDED_SHADOW) == 1, counted
    assert set(counted) <= {PipelineOutcome.SUCCEEDED_SHADOW, PipelineOutcome.SKIPPED_LOCKED}
    for tenant in (by_id, by_lock):
        assert len(await training_runs(env, tenant)) == 1
