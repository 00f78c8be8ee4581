"""The retraining pipeline end to end (M28): the real Temporal dev server, Postgres, Redis,
SeaweedFS, the real worker and a real training job; the new model verifies."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from uuid import UUID

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from domain.pipeline import PipelineOutcome
from domain.promotion import EvaluationResult, shadow_evaluation_workflow_id
from domain.trust import TrustedKeys
from services.checkpoints import CheckpointService
from services.verify import ProvenanceVerifier
from starter import PipelineAlreadyRunning, start_pipeline
from tests.e2e.support import worker_settings
from tests.integration.services_env import ServicesEnv
from worker import running_workers
from workflows.promotion import ShadowEvaluation

pytestmark = pytest.mark.e2e


async def test_drifted_tenant_ends_with_a_verified_shadow_model(
    temporal: WorkflowEnvironment, services_env: ServicesEnv, db_admin_dsn: str, tmp_path: Path
) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    settings = worker_settings(env, db_admin_dsn, tmp_path, temporal)
    async with running_workers(settings, client=temporal.client):
        started = await start_pipeline(temporal.client, settings, tenant)
        with pytest.raises(PipelineAlreadyRunning):  # Temporal refuses a second start
            await start_pipeline(temporal.client, settings, tenant)
        result = await started.handle.result()
        assert result.model_version_id is not None
        # The pipeline started the version's shadow evaluation, which outlives it: with no
        # champion it waits for an approval or evidence, the version stays SHADOW.
        evaluation = temporal.client.get_workflow_handle(
            shadow_evaluation_workflow_id(result.model_version_id), result_type=EvaluationResult
        )
        assert (await evaluation.describe()).status is WorkflowExecutionStatus.RUNNING
        for _ in range(400):
            if (await evaluation.query(ShadowEvaluation.progress)).awaiting_approval:
                break
            await asyncio.sleep(0.05)
        progress = await evaluation.query(ShadowEvaluation.progress)
        assert progress.awaiting_approval, progress.step
        await evaluation.terminate("test over")
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW, result.detail
    assert result.drift_verdict == "DRIFT"
    assert result.drift_features["ndvi"] == "DRIFT"
    assert result.model_version_id is not None
    checks = await ProvenanceVerifier(
        env.db, env.store, TrustedKeys.of(env.platform.public_key)
    ).verify_model(tenant, result.model_version_id)
    assert all(check.ok for check in checks), checks
    async with env.db.transaction(tenant) as conn:
        status = await conn.fetchval(
            "SELECT status FROM model_versions WHERE id = $1", result.model_version_id
        )
        runs = await conn.fetch("SELECT status, job_name FROM training_runs")
        outcome = await conn.fetchval(
            "SELECT outcome FROM integrity_checks WHERE check_type = 'pipeline.outcome'"
        )
    assert status == "SHADOW"
    assert [r["status"] for r in runs] == ["SUCCEEDED"]
    assert outcome == "SUCCEEDED_SHADOW"
    assert secrets.compare_digest(result.artifact_sha256 or "", checks[1].detail.split()[0])
    await assert_checkpointed_through_outcome(env, tenant)


async def test_training_that_always_fails_is_dead_lettered_after_five_attempts(
    temporal: WorkflowEnvironment, services_env: ServicesEnv, db_admin_dsn: str, tmp_path: Path
) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.15, seed=2)
    # Every job this worker launches refuses its configuration (negative GPU time) and fails.
    settings = worker_settings(env, db_admin_dsn, tmp_path, temporal).model_copy(
        update={"training_extra_seconds": -1.0}
    )
    async with running_workers(settings, client=temporal.client):
        started = await start_pipeline(temporal.client, settings, tenant)
        result = await started.handle.result()
    assert result.outcome is PipelineOutcome.FAILED_DEAD_LETTERED
    jobs = sorted(p.name for p in (tmp_path / "jobs").iterdir() if p.is_dir())
    assert len(jobs) == 5  # one fresh job per attempt
    async with env.db.transaction(tenant) as conn:
        letters = await conn.fetch("SELECT queue, attempts, error FROM dead_letters")
        runs = await conn.fetch("SELECT status FROM training_runs")
    assert [(r["queue"], r["attempts"]) for r in letters] == [("training-queue-failed", 5)]
    assert "training job" in letters[0]["error"]
    assert [r["status"] for r in runs] == ["FAILED"]
    await assert_checkpointed_through_outcome(env, tenant)
    # the tenant lock was released: the next start is not SKIPPED_LOCKED
    healthy = settings.model_copy(update={"training_extra_seconds": 0.0})
    async with running_workers(healthy, client=temporal.client):
        again = await (await start_pipeline(temporal.client, healthy, tenant)).handle.result()
    assert again.outcome is PipelineOutcome.SUCCEEDED_SHADOW


async def assert_checkpointed_through_outcome(env: ServicesEnv, tenant: UUID) -> None:
    """The run ended with a signed checkpoint in the WORM bucket that covers its outcome row
    (issue 12: one at the end of every pipeline run), and the chain holds against it."""
    async with env.db.transaction(tenant) as conn:
        outcome_seq = await conn.fetchval(
            "SELECT max(seq) FROM integrity_checks WHERE check_type = 'pipeline.outcome'"
        )
    assessment = await CheckpointService(
        env.db,
        env.store,
        TrustedKeys.of(env.platform.public_key),
        bucket=env.settings.s3_datasets_bucket,
        retention_days=1,
    ).assess(tenant)
    holding = assessment.newest_holding
    assert assessment.ok, assessment.findings
    assert holding is not None
    assert holding.checkpoint is not None
    assert holding.checkpoint.size >= outcome_seq
