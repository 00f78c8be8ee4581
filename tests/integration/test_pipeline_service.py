"""PipelineService against real Postgres and S3: preconditions, WORM snapshot, fenced runs,
dead letters."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID, uuid4

import asyncpg
import pytest

from adapters.localjobs import LocalJobRunner
from adapters.metrics import Metrics
from adapters.objectstore import ObjectStoreError, S3Uri
from domain.model_status import ModelStatus
from domain.pipeline import DEAD_LETTER_TEXT_LIMIT, PipelineOutcome, PipelineResult, RegisterInput
from services.bias import BiasAuditService, Evaluation
from services.drift import DriftAnalysisService
from services.errors import GovernanceRefusal, NotFoundError
from services.pipeline import (
    DriftCheck,
    PipelineService,
    StaleLeaseError,
    list_dead_letters,
    resolve_dead_letter,
)
from services.registry import ModelRegistryService, RegisterModel
from services.training import JobEnvironment, TrainingConfig, TrainingService
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration


def service(env: ServicesEnv) -> PipelineService:
    return PipelineService(env.db, env.store, datasets_bucket=env.settings.s3_datasets_bucket)


async def start_run(env: ServicesEnv, tenant: UUID, fence: int, run: UUID | None = None) -> UUID:
    run = run or uuid4()
    await service(env).start_training_run(
        tenant,
        run,
        workflow_id="retrain/x",
        fence=fence,
        model_name="yield",
        dataset_uri="s3://d/k",
        dataset_sha256="a" * 64,
        callback_public_key=secrets.token_bytes(32),
    )
    return run


async def test_an_active_run_blocks_and_a_finished_one_does_not(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    now = datetime.now(UTC)
    assert (await service(env).preconditions(tenant, now)).blocked_by is None
    run = await start_run(env, tenant, fence=1)
    assert await start_run(env, tenant, fence=1, run=run) == run  # a retry finds its run
    blocked = await service(env).preconditions(tenant, now)
    assert blocked.blocked_by is PipelineOutcome.SKIPPED_ACTIVE_RUN
    with pytest.raises(GovernanceRefusal, match="active training run"):
        await start_run(env, tenant, fence=2)
    await service(env).mark_running(tenant, run, "rai-train-x")
    await service(env).finish_run(tenant, run, "SUCCEEDED")
    assert (await service(env).preconditions(tenant, now)).blocked_by is None
    with pytest.raises(StaleLeaseError):  # an older lease can no longer record a run
        await start_run(env, tenant, fence=1)
    await start_run(env, tenant, fence=3)
    assert await service(env).newest_fence(tenant) == 3  # what the next lease must exceed


async def test_a_rollback_starts_a_seven_day_cooldown(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    registry = ModelRegistryService(env.db, env.store, env.platform)
    uri, _ = await env.artifact(tenant)
    model = await registry.register_model(
        tenant,
        RegisterModel(
            model_name="yield", artifact_uri=uri, dataset_uri="s3://d/k", dataset_sha256="a" * 64
        ),
    )
    evaluations = [Evaluation(g, 1.0, 1.1) for g in ("a", "b") for _ in range(30)]
    await BiasAuditService(env.db, env.platform).audit(
        tenant, model.id, evaluations, group_by="region"
    )
    await registry.promote_to_shadow(tenant, model.id)
    for status in (ModelStatus.CANARY, ModelStatus.PRODUCTION):
        await registry.transition(tenant, model.id, status, "test")
    rollback = await registry.rollback(tenant, "yield")
    during = await service(env).preconditions(tenant, rollback.at + timedelta(days=6))
    assert during.blocked_by is PipelineOutcome.SKIPPED_COOLDOWN
    after = await service(env).preconditions(tenant, rollback.at + timedelta(days=7, seconds=1))
    assert after.blocked_by is None


async def test_snapshot_is_worm_and_written_once(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2026", 40)
    run = uuid4()
    first = await service(env).snapshot(tenant, run, "2026")
    again = await service(env).snapshot(tenant, run, "2026")
    assert again == first
    assert first.rows == 40
    uri = S3Uri.parse(first.dataset_uri)
    assert uri.version_id is not None
    body = await env.store.get_bytes(uri.bucket, uri.key, uri.version_id)
    assert hashlib.sha256(body).hexdigest() == first.dataset_sha256
    rows = [json.loads(line) for line in body.splitlines()]
    assert set(rows[0]) == {"season_id", "field_id", "features", "outcome"}
    info = await env.store.head(uri.bucket, uri.key, uri.version_id)
    assert info is not None
    assert info.retention is not None
    assert info.retention.mode == "COMPLIANCE"
    with pytest.raises(ObjectStoreError):
        await env.store.delete_version(uri.bucket, uri.key, uri.version_id)
    with pytest.raises(GovernanceRefusal, match="no events with an observed outcome"):
        await service(env).snapshot(tenant, uuid4(), "1999")


async def test_dead_letters_and_outcomes(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    run = await start_run(env, tenant, fence=1)
    letter = await service(env).dead_letter(
        tenant, workflow_id="retrain/x", error="boom", attempts=5, training_run_id=run
    )
    [listed] = await list_dead_letters(env.db, tenant, include_resolved=False)
    assert (listed.id, listed.queue, listed.attempts) == (letter, "training-queue-failed", 5)
    assert (await service(env).preconditions(tenant, datetime.now(UTC))).blocked_by is None
    await resolve_dead_letter(env.db, tenant, letter)
    assert await list_dead_letters(env.db, tenant, include_resolved=False) == []
    assert len(await list_dead_letters(env.db, tenant, include_resolved=True)) == 1
    with pytest.raises(NotFoundError):
        await resolve_dead_letter(env.db, tenant, letter)
    other = await env.tenant("other")
    assert await list_dead_letters(env.db, other, include_resolved=True) == []
    result = PipelineResult(tenant_id=tenant, outcome=PipelineOutcome.NO_DRIFT)
    await service(env).record_outcome("retrain/x", "run-1", result)
    async with env.db.transaction(tenant) as conn:
        outcome = await conn.fetchval(
            "SELECT outcome FROM integrity_checks WHERE check_type = 'pipeline.outcome'"
        )
    assert outcome == "NO_DRIFT"


async def test_a_retried_outcome_is_recorded_and_counted_once(services_env: ServicesEnv) -> None:
    """RECORD_OUTCOME retried after its first attempt committed (or two attempts at once) leaves
    one row in the integrity chain and one increment of rai_pipeline_status_total per run; the
    next run of the same workflow id is another pipeline."""
    env = services_env
    tenant = await env.tenant()
    metrics = Metrics()
    pipeline = PipelineService(env.db, env.store, datasets_bucket="unused", metrics=metrics)
    result = PipelineResult(tenant_id=tenant, outcome=PipelineOutcome.NO_DRIFT)
    assert await pipeline.record_outcome("retrain/x", "run-1", result)
    assert not await pipeline.record_outcome("retrain/x", "run-1", result)  # the retry
    racing = await asyncio.gather(
        *(pipeline.record_outcome("retrain/x", "run-2", result) for _ in range(2))
    )
    assert sorted(racing) == [False, True]
    async with env.db.transaction(tenant) as conn:
        rows = await conn.fetch(
            "SELECT subject_id, outcome, details ->> 'workflow_run_id' AS run"
            " FROM integrity_checks WHERE check_type = 'pipeline.outcome' ORDER BY seq"
        )
    assert [tuple(row) for row in rows] == [
        ("retrain/x", "NO_DRIFT", "run-1"),
        ("retrain/x", "NO_DRIFT", "run-2"),
    ]
    counted = metrics.registry.get_sample_value(
        "rai_pipeline_status_total", {"tenant": str(tenant), "outcome": "NO_DRIFT"}
    )
    assert counted == 2
    # The law holds without the service's own check: a second row for a run is refused.
    async with env.db.transaction(tenant) as conn:
        with pytest.raises(asyncpg.UniqueViolationError, match="one_outcome_per_run"):
            await conn.execute(
                "INSERT INTO integrity_checks (tenant_id, check_type, subject_id, outcome,"
                " details, seq, prev_hash, row_hash) VALUES ($1, 'pipeline.outcome',"
                " 'retrain/x', 'NO_DRIFT', $2, 0, $3, $3)",
                tenant,
                {"workflow_run_id": "run-1"},
                "0" * 64,
            )


async def test_drift_compares_the_seasons_asked_for_or_the_two_newest(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant = await env.tenant()
    assert await service(env).drift_seasons(tenant, None, None) is None
    await env.seed_events(tenant, "2024", 5, seed=1)
    assert await service(env).drift_seasons(tenant, None, None) is None
    await env.seed_events(tenant, "2026", 5, seed=2)
    await env.seed_events(tenant, "2025", 5, seed=3)
    assert await service(env).drift_seasons(tenant, None, None) == ("2025", "2026")
    assert await service(env).drift_seasons(tenant, "2024", "2026") == ("2024", "2026")
    # Half a pair is no pair: the newest two are compared.
    assert await service(env).drift_seasons(tenant, "2024", None) == ("2025", "2026")
    other = await env.tenant("other")
    assert await service(env).drift_seasons(other, None, None) is None


async def test_a_dead_letter_is_written_whatever_the_error_says(services_env: ServicesEnv) -> None:
    """Issue 11, item 5: NUL bytes (refused by Postgres text) and a huge message are sanitised
    and bounded, so a dead letter cannot fail for its content."""
    env = services_env
    tenant = await env.tenant()
    run = await start_run(env, tenant, fence=1)
    error = "bad\x00byte\x07 " + "x" * 100_000
    letter = await service(env).dead_letter(
        tenant, workflow_id="retrain/\x00x", error=error, attempts=5, training_run_id=run
    )
    [listed] = await list_dead_letters(env.db, tenant, include_resolved=False)
    assert listed.id == letter
    assert listed.error.startswith("bad\\x00byte\\x07 xxx")
    assert len(listed.error) == DEAD_LETTER_TEXT_LIMIT
    assert listed.error.endswith("…")
    assert listed.workflow_id == "retrain/\\x00x"
    async with env.db.transaction(tenant) as conn:
        assert (
            await conn.fetchval("SELECT status FROM training_runs WHERE id = $1", run) == "FAILED"
        )


def training(env: ServicesEnv, tmp_path: Path) -> TrainingService:
    return TrainingService(
        runs=service(env),
        registry=ModelRegistryService(env.db, env.store, env.platform),
        jobs=LocalJobRunner(tmp_path),
        platform=env.platform,
        config=TrainingConfig(
            registry_bucket=env.registry_bucket, callback_url=None, environment=JobEnvironment()
        ),
    )


async def run_status(env: ServicesEnv, tenant: UUID, run: UUID) -> str:
    async with env.db.transaction(tenant) as conn:
        status: str = await conn.fetchval("SELECT status FROM training_runs WHERE id = $1", run)
    return status


def registration(tenant: UUID, run: UUID, uri: str, sha: str) -> RegisterInput:
    return RegisterInput(
        tenant_id=tenant,
        training_run_id=run,
        model_name="yield",
        artifact_uri=uri,
        artifact_sha256=sha,
        dataset_uri="s3://d/k",
        dataset_sha256="a" * 64,
        drift_report_id=None,
        metrics={},
    )


async def test_a_run_succeeds_only_with_its_model(
    services_env: ServicesEnv, tmp_path: Path
) -> None:
    """Issue 11, item 6: registration and SUCCEEDED are one transaction. A registration that
    fails leaves the run RUNNING (never SUCCEEDED without a model), and the dead letter fails
    it with the reason; a good one makes both, and a retry finds them."""
    env = services_env
    tenant = await env.tenant()
    await service(env).record_fence(tenant, 1, "retrain/x/r")
    run = await start_run(env, tenant, fence=1)
    await service(env).mark_running(tenant, run, "rai-train-x")
    uri, sha = await env.artifact(tenant)
    with pytest.raises(GovernanceRefusal, match="hashes to"):
        await training(env, tmp_path).register(registration(tenant, run, uri, "0" * 64))
    assert await run_status(env, tenant, run) == "RUNNING"
    async with env.db.transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM model_versions") == 0
    registered = await training(env, tmp_path).register(registration(tenant, run, uri, sha))
    assert await run_status(env, tenant, run) == "SUCCEEDED"
    again = await training(env, tmp_path).register(registration(tenant, run, uri, sha))
    assert again == registered

    failing = await env.tenant("failing")
    await service(env).record_fence(failing, 1, "retrain/y/r")
    doomed = await start_run(env, failing, fence=1)
    await service(env).mark_running(failing, doomed, "rai-train-y")
    missing = f"s3://{env.registry_bucket}/models/{failing}/nothing/model.json"
    with pytest.raises(GovernanceRefusal) as refused:
        await training(env, tmp_path).register(registration(failing, doomed, missing, sha))
    await service(env).dead_letter(
        failing,
        workflow_id="retrain/y",
        error=str(refused.value),
        attempts=1,
        training_run_id=doomed,
    )
    assert await run_status(env, failing, doomed) == "FAILED"
    async with env.db.transaction(failing) as conn:
        reason = await conn.fetchval(
            "SELECT details->>'reason' FROM integrity_checks"
            " WHERE check_type = 'training.finished' AND subject_id = $1",
            str(doomed),
        )
    assert reason == str(refused.value)


async def test_a_retried_drift_step_reuses_the_report_of_its_run(
    services_env: ServicesEnv,
) -> None:
    """Issue 11, item 7: one drift report per pipeline run, keyed so a retry finds it (the
    snapshot and the registration are covered above: a retry finds what it wrote)."""
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 200, seed=1)
    await env.seed_events(tenant, "2026", 200, shift=0.15, seed=2)
    check = DriftCheck(
        service(env),
        DriftAnalysisService(env.db, env.store, env.platform, bucket=env.registry_bucket),
    )
    first = await check.check(tenant, None, None, pipeline_run="retrain/t/run-1")
    retried = await check.check(tenant, None, None, pipeline_run="retrain/t/run-1")
    assert retried == first
    assert first.report_id is not None
    other = await check.check(tenant, None, None, pipeline_run="retrain/t/run-2")
    assert other.report_id != first.report_id
    async with env.db.transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM drift_reports") == 2
        checks = await conn.fetchval(
            "SELECT count(*) FROM integrity_checks WHERE check_type = 'drift.report'"
        )
    assert checks == 2
