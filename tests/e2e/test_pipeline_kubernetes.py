"""The retraining pipeline with ``RAI_JOB_RUNNER=kubernetes``: the real Temporal dev server,
Postgres, Redis, SeaweedFS and worker, against the in-test Kubernetes API server whose kubelet
runs each Job's container (the real trainer) as a local process with the Job's environment and
Secrets. End to end to SUCCEEDED_SHADOW, and the chaos case: the worker is SIGKILLed while the
Job runs, another worker (another state directory, so nothing local to find) adopts the Job by
name: one Job, one training run, one model version."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from temporalio.testing import WorkflowEnvironment

from adapters.k8sjobs import TRAINING_JOB_SELECTOR, secret_name_for
from domain.pipeline import PipelineOutcome, PipelineResult
from domain.training import TrainingResult
from settings import Settings
from starter import start_pipeline
from tests.e2e.support import worker_settings
from tests.integration.services_env import ServicesEnv
from tests.k8s_fake import FakeKubernetes
from tests.rai_process import start_worker
from worker import running_workers

pytestmark = pytest.mark.e2e

NAMESPACE = "rai-training-jobs"
IMAGE = "registry.example/rai-trainer:1.0"
JOBS_PATH = f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs"


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[FakeKubernetes]:
    async with FakeKubernetes(tmp_path / "cluster", kubelet=True, kill_grace=5) as fake:
        yield fake
    assert fake.rejected == [], fake.rejected


def on_kubernetes(settings: Settings, cluster: FakeKubernetes, state: Path) -> Settings:
    state.mkdir(parents=True, exist_ok=True)
    return settings.model_copy(
        update={
            "job_runner": "kubernetes",
            "kubeconfig": cluster.kubeconfig(state / "kubeconfig"),
            "trainer_image": IMAGE,
            "state_dir": state,
        }
    )


async def training_runs(env: ServicesEnv, tenant: UUID) -> list[tuple[str, str | None]]:
    async with env.db.transaction(tenant) as conn:
        rows = await conn.fetch("SELECT status, job_name FROM training_runs")
    return [(r["status"], r["job_name"]) for r in rows]


async def seeded_tenant(env: ServicesEnv) -> UUID:
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    return tenant


def the_terminated_trainer(cluster: FakeKubernetes, job: str) -> dict[str, Any]:
    (pod,) = cluster.pods_of(NAMESPACE, job)
    (container,) = pod["status"]["containerStatuses"]
    return dict(container["state"]["terminated"])


async def test_the_pipeline_trains_on_kubernetes_to_a_shadow_model(
    temporal: WorkflowEnvironment,
    services_env: ServicesEnv,
    db_admin_dsn: str,
    tmp_path: Path,
    cluster: FakeKubernetes,
) -> None:
    env = services_env
    tenant = await seeded_tenant(env)
    settings = on_kubernetes(
        worker_settings(env, db_admin_dsn, tmp_path, temporal), cluster, tmp_path / "worker"
    )
    async with running_workers(settings, client=temporal.client):
        started = await start_pipeline(temporal.client, settings, tenant)
        try:
            result: PipelineResult = await asyncio.wait_for(started.handle.result(), 300)
        except TimeoutError:
            pytest.fail(f"the pipeline did not finish within 300 s; jobs: {cluster_jobs(cluster)}")
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW, result.detail

    jobs = cluster.list_objects("jobs", NAMESPACE, TRAINING_JOB_SELECTOR)
    assert [job["metadata"]["name"] for job in jobs] == [
        name for _, name in await training_runs(env, tenant)
    ]
    (job,) = jobs
    name = job["metadata"]["name"]
    labels = job["metadata"]["labels"]
    assert labels["rai-level-d.io/tenant"] == str(tenant)
    assert labels["rai-level-d.io/training-run"] == str(result.training_run_id)
    assert labels["rai-level-d.io/attempt"] == "1"
    assert [c["type"] for c in job["status"]["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    # The model the registry holds is the one the trainer reported in its termination message.
    terminated = the_terminated_trainer(cluster, name)
    assert terminated["exitCode"] == 0
    reported = TrainingResult.model_validate_json(terminated["message"])
    assert reported.artifact_sha256 == result.artifact_sha256
    # The S3 credentials and the callback key reached the trainer only through the Secret.
    secret = cluster.get("secrets", NAMESPACE, secret_name_for(name))
    assert secret is not None
    assert set(secret["data"]) == {
        "RAI_CALLBACK_SIGNING_KEY",
        "RAI_S3_ACCESS_KEY",
        "RAI_S3_SECRET_KEY",
    }
    assert settings.s3_secret_key is not None
    assert settings.s3_secret_key.get_secret_value() not in json.dumps(job)
    assert await training_runs(env, tenant) == [("SUCCEEDED", name)]
    assert cluster.jobs_created == 1


def cluster_jobs(cluster: FakeKubernetes) -> list[tuple[str, Any]]:
    return [
        (job["metadata"]["name"], job.get("status", {}).get("conditions"))
        for job in cluster.list_objects("jobs", NAMESPACE)
    ]


async def test_a_worker_killed_while_its_job_runs_is_replaced_without_a_second_job(
    temporal: WorkflowEnvironment,
    services_env: ServicesEnv,
    db_admin_dsn: str,
    tmp_path: Path,
    cluster: FakeKubernetes,
) -> None:
    env = services_env
    tenant = await seeded_tenant(env)
    base = worker_settings(env, db_admin_dsn, tmp_path, temporal).model_copy(
        update={"training_extra_seconds": 8.0}
    )
    first_settings = on_kubernetes(base, cluster, tmp_path / "host-1")
    second_settings = on_kubernetes(base, cluster, tmp_path / "host-2")
    first = await start_worker(first_settings, tmp_path / "worker-1.log")
    second: asyncio.subprocess.Process | None = None
    try:
        started = await start_pipeline(
            temporal.client, first_settings, tenant, training_heartbeat_seconds=3
        )
        job_name: str | None = None
        for _ in range(1800):  # until the Job's trainer runs
            runs = await training_runs(env, tenant)
            if runs and runs[0][0] == "RUNNING" and runs[0][1]:
                job_name = runs[0][1]
                pods = cluster.pods_of(NAMESPACE, job_name)
                if pods and pods[0]["status"].get("phase") == "Running":
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(
                f"the training Job never ran within 180 s; runs {await training_runs(env, tenant)},"
                f" jobs {cluster_jobs(cluster)}; see {tmp_path / 'worker-1.log'}"
            )
        first.send_signal(signal.SIGKILL)
        await first.wait()
        second = await start_worker(second_settings, tmp_path / "worker-2.log")
        try:
            result: PipelineResult = await asyncio.wait_for(started.handle.result(), 300)
        except TimeoutError:
            pytest.fail(
                f"no outcome within 300 s after the kill; jobs {cluster_jobs(cluster)};"
                f" see {tmp_path / 'worker-2.log'}"
            )
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.terminate()
                await process.wait()
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW, result.detail
    assert cluster.jobs_created == 1, cluster_jobs(cluster)
    # The second worker did try to launch it: the API answered 409 and it adopted the Job.
    creates = [r for r in cluster.requests if r[:2] == ("POST", f"{JOBS_PATH}")]
    assert len(creates) == 2, creates
    assert [job["metadata"]["name"] for job in cluster.list_objects("jobs", NAMESPACE)] == [
        job_name
    ]
    assert len(cluster.pods_of(NAMESPACE, str(job_name))) == 1
    assert the_terminated_trainer(cluster, str(job_name))["exitCode"] == 0
    assert await training_runs(env, tenant) == [("SUCCEEDED", job_name)]
    async with env.db.transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM model_versions") == 1
    # Neither worker kept anything of the job locally: Kubernetes was the only record.
    for host in ("host-1", "host-2"):
        assert not (tmp_path / host / "jobs").exists()


async def test_why_a_job_failed_reaches_the_dead_letter(
    temporal: WorkflowEnvironment,
    services_env: ServicesEnv,
    db_admin_dsn: str,
    tmp_path: Path,
    cluster: FakeKubernetes,
) -> None:
    env = services_env
    tenant = await seeded_tenant(env)
    # Every Job's trainer refuses its configuration (negative GPU time) and exits 1.
    settings = on_kubernetes(
        worker_settings(env, db_admin_dsn, tmp_path, temporal), cluster, tmp_path / "worker"
    ).model_copy(update={"training_extra_seconds": -1.0})
    async with running_workers(settings, client=temporal.client):
        started = await start_pipeline(temporal.client, settings, tenant)
        try:
            result: PipelineResult = await asyncio.wait_for(started.handle.result(), 300)
        except TimeoutError:
            pytest.fail(f"the pipeline did not finish within 300 s; jobs: {cluster_jobs(cluster)}")
    assert result.outcome is PipelineOutcome.FAILED_DEAD_LETTERED
    names = sorted(job["metadata"]["name"] for job in cluster.list_objects("jobs", NAMESPACE))
    assert len(names) == 5, names  # one fresh Job per attempt
    assert {name.rsplit("-", 1)[-1] for name in names} >= {"a2", "a3", "a4", "a5"}
    async with env.db.transaction(tenant) as conn:
        letters = await conn.fetch("SELECT attempts, error FROM dead_letters")
    assert [letter["attempts"] for letter in letters] == [5]
    error = letters[0]["error"]
    assert "BackoffLimitExceeded: Job has reached the specified backoff limit" in error, error
    assert "RAI_TRAINING_EXTRA_SECONDS" in error, error  # the trainer's own words
