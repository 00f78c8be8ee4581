"""Issue 11, item 1 (and the acceptance line): a pipeline cancelled or terminated with the real
``temporal`` CLI leaves nothing behind, and the next ``rai pipeline start --tenant T --wait``
reaches SUCCEEDED_SHADOW; ``rai pipeline start`` exits without a crash report (item 9b)."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path
from uuid import UUID

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from adapters.localjobs import LocalJobRunner
from domain.jobs import JobState
from domain.pipeline import pipeline_workflow_id
from settings import Settings
from starter import start_pipeline
from tests.e2e.support import worker_settings
from tests.environment import rai_environment
from tests.integration.services_env import ServicesEnv
from tests.polling import wait_until
from worker import running_workers

pytestmark = pytest.mark.e2e

TEMPORAL_CLI = Path(sys.executable).parent / "temporal"


async def temporal_cli(settings: Settings, *args: str) -> str:
    """Run the real ``temporal`` CLI against the test's dev server."""
    binary = str(TEMPORAL_CLI) if TEMPORAL_CLI.exists() else shutil.which("temporal")
    assert binary is not None, "the temporal CLI is not installed (make bootstrap)"
    process = await asyncio.create_subprocess_exec(
        binary,
        *args,
        "--address",
        settings.temporal_address,
        "--namespace",
        settings.temporal_namespace,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, (args, out.decode(), err.decode())
    return out.decode()


async def rai_start_and_wait(settings: Settings, tenant: UUID) -> tuple[dict[str, object], str]:
    """``rai pipeline start --tenant T --wait --json`` as a process: its result and stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        "pipeline",
        "start",
        "--tenant",
        str(tenant),
        "--wait",
        "--json",
        env=rai_environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=300)
    assert process.returncode == 0, (out.decode(), err.decode())
    answer: dict[str, object] = json.loads(out)
    return answer, err.decode()


async def runs_of(env: ServicesEnv, tenant: UUID) -> list[dict[str, object]]:
    async with env.db.transaction(tenant) as conn:
        rows = await conn.fetch(
            "SELECT id, status, job_name, workflow_run_id FROM training_runs ORDER BY created_at"
        )
    return [dict(r) for r in rows]


async def reasons(env: ServicesEnv, tenant: UUID) -> list[str]:
    async with env.db.transaction(tenant) as conn:
        rows = await conn.fetch(
            "SELECT outcome, details FROM integrity_checks WHERE check_type = 'training.finished'"
            " ORDER BY seq"
        )
    return [f"{r['outcome']}: {(r['details'] or {}).get('reason', '')}" for r in rows]


async def running_run(env: ServicesEnv, tenant: UUID) -> dict[str, object]:
    runs = await wait_until(
        lambda: runs_of(env, tenant),
        lambda runs: bool(runs) and runs[-1]["status"] == "RUNNING",
        within=240,
        failure="the training job never ran",
        every=0.2,
    )
    return runs[-1]


@pytest.mark.parametrize("way_out", ["cancel", "terminate"])
async def test_a_pipeline_ended_from_the_temporal_cli_leaves_nothing_behind(
    temporal: WorkflowEnvironment,
    services_env: ServicesEnv,
    db_admin_dsn: str,
    tmp_path: Path,
    way_out: str,
) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    base = worker_settings(env, db_admin_dsn, tmp_path, temporal)
    slow = base.model_copy(update={"training_extra_seconds": 600.0})
    jobs = LocalJobRunner(base.state_dir)
    workflow_id = pipeline_workflow_id(tenant)

    async with running_workers(slow, client=temporal.client):
        started = await start_pipeline(temporal.client, slow, tenant)
        stuck = await running_run(env, tenant)
        assert stuck["workflow_run_id"] == started.run_id
        await temporal_cli(slow, "workflow", way_out, "--workflow-id", workflow_id)
        status = (
            WorkflowExecutionStatus.CANCELED
            if way_out == "cancel"
            else WorkflowExecutionStatus.TERMINATED
        )
        await wait_until(
            lambda: started.handle.describe(),
            lambda found: found.status is status,
            within=120,
            failure=f"the pipeline never became {status.name}",
            every=0.2,
            shown=lambda found: found.status,
        )
        if way_out == "cancel":  # the workflow's own cleanup: run CANCELLED, job stopped
            await wait_until(
                lambda: runs_of(env, tenant),
                lambda runs: runs[-1]["status"] == "CANCELLED",
                within=120,
                failure="the cancelled run was not marked CANCELLED",
                every=0.2,
            )
            job = await jobs.status(str(stuck["job_name"]))
            assert job.state is not JobState.RUNNING, job
        else:  # terminated: no workflow code ran, everything is still there
            assert (await runs_of(env, tenant))[-1]["status"] == "RUNNING"

    fast = base.model_copy(update={"training_extra_seconds": 0.0})
    async with running_workers(fast, client=temporal.client):
        answer, stderr = await rai_start_and_wait(fast, tenant)
    result = answer["result"]
    assert isinstance(result, dict)
    assert result["outcome"] == "SUCCEEDED_SHADOW", result
    assert "Fatal Python error" not in stderr, stderr
    runs = await runs_of(env, tenant)
    expected = "CANCELLED" if way_out == "cancel" else "FAILED"
    assert [r["status"] for r in runs] == [expected, "SUCCEEDED"]
    job = await jobs.status(str(stuck["job_name"]))
    assert job.state is not JobState.RUNNING, job
    why = await reasons(env, tenant)
    if way_out == "cancel":
        assert f"CANCELLED: pipeline {workflow_id}/{started.run_id} was cancelled" in why
    else:
        assert any(r.startswith("FAILED: reaped:") and started.run_id in r for r in why), why
