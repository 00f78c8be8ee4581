"""ModelRegistryService, BiasAuditService and the pipeline's audit against real Postgres and the
real S3 server."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast
from uuid import UUID

import asyncpg
import pytest

from adapters.objectstore import ObjectInfo
from db.repository import Database
from domain.holdout import HoldoutSplit
from domain.lineage import lineage_hash
from domain.model_status import ModelStatus
from domain.ridge import RidgeModel
from domain.signing import DocumentKind, verify
from services.bias import BiasAuditService, Evaluation
from services.errors import (
    ArtifactHashMismatchError,
    ArtifactMissingError,
    BiasAuditRequiredError,
    GovernanceRefusal,
    IllegalTransitionRefusal,
    NotFoundError,
    SignatureInvalidError,
)
from services.evaluation import ModelAuditService
from services.ports import ObjectStorePort
from services.registry import ModelRegistryService, RegisterModel, model_document
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration

DATASET_SHA = "d" * 64


def evaluations(north_error: float, south_error: float, n: int = 40) -> list[Evaluation]:
    return [Evaluation("north", 5.0, 5.0 + north_error) for _ in range(n)] + [
        Evaluation("south", 5.0, 5.0 - south_error) for _ in range(n)
    ]


def registry(env: ServicesEnv) -> ModelRegistryService:
    return ModelRegistryService(env.db, env.store, env.platform)


def request(uri: str, expected_sha256: str | None = None) -> RegisterModel:
    return RegisterModel(
        model_name="yield",
        artifact_uri=uri,
        dataset_uri="s3://rai-datasets/snapshots/1.jsonl",
        dataset_sha256=DATASET_SHA,
        expected_artifact_sha256=expected_sha256,
        metrics={"rmse": 0.42},
    )


async def model_rows(db: Database, tenant: UUID) -> list[asyncpg.Record]:
    async with db.transaction(tenant) as conn:
        return await conn.fetch("SELECT * FROM model_versions ORDER BY version")


async def test_register_reads_hashes_signs_and_chains(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    uri, sha = await env.artifact(tenant)
    first = await registry(env).register_model(tenant, request(uri, expected_sha256=sha))
    uri2, sha2 = await env.artifact(tenant)
    second = await registry(env).register_model(tenant, request(uri2))
    assert (first.version, second.version) == (1, 2)
    assert first.artifact_sha256 == sha
    assert first.artifact_version_id
    assert first.lineage_hash == lineage_hash(None, sha, DATASET_SHA)
    assert second.parent_version_id == first.id
    assert second.lineage_hash == lineage_hash(first.lineage_hash, sha2, DATASET_SHA)
    rows = await model_rows(env.db, tenant)
    assert [r["status"] for r in rows] == ["REGISTERED", "REGISTERED"]
    for row in rows:
        document = model_document(row).document()
        assert verify(
            env.platform.public_key, DocumentKind.MODEL_VERSION, document, row["signature"]
        )
    async with env.db.transaction(tenant) as conn:
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM integrity_checks WHERE check_type = 'model.registered'"
            )
            == 2
        )


async def test_missing_or_mismatched_artifacts_are_refused(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    with pytest.raises(ArtifactMissingError):
        await registry(env).register_model(
            tenant, request(f"s3://{env.registry_bucket}/models/nothing-here.json")
        )
    uri, _ = await env.artifact(tenant)
    with pytest.raises(ArtifactHashMismatchError):
        await registry(env).register_model(tenant, request(uri, expected_sha256="0" * 64))
    assert await model_rows(env.db, tenant) == []


async def test_promotion_needs_a_passed_signed_audit(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    uri, _ = await env.artifact(tenant)
    model = await registry(env).register_model(tenant, request(uri))
    with pytest.raises(BiasAuditRequiredError, match="no bias audit"):
        await registry(env).promote_to_shadow(tenant, model.id)
    audits = BiasAuditService(env.db, env.platform, max_error_ratio=1.5, min_group_size=30)
    failed = await audits.audit(tenant, model.id, evaluations(0.1, 0.5), group_by="region")
    assert not failed.passed
    assert failed.metrics["error_ratio"] == pytest.approx(5.0)
    with pytest.raises(BiasAuditRequiredError, match="failed"):
        await registry(env).promote_to_shadow(tenant, model.id)
    passed = await audits.audit(tenant, model.id, evaluations(0.1, 0.12), group_by="region")
    assert passed.passed
    await registry(env).promote_to_shadow(tenant, model.id, reason="audit passed")
    rows = await model_rows(env.db, tenant)
    assert rows[0]["status"] == "SHADOW"
    async with env.db.transaction(tenant) as conn:
        reason = await conn.fetchval(
            "SELECT reason FROM model_status_history WHERE to_status = 'SHADOW'"
        )
    assert reason == "audit passed"


@pytest.mark.parametrize(
    "forgery",
    [
        "UPDATE rai.model_versions SET signature = decode(repeat('ab', 64), 'hex')",
        "UPDATE rai.model_versions SET metrics = '{\"rmse\": 0.01}'",
        "UPDATE rai.bias_audits SET metrics = jsonb_set(metrics, '{error_ratio}', '1.0')",
    ],
)
async def test_promotion_reverifies_signatures(
    services_env: ServicesEnv, db_admin_dsn: str, forgery: str
) -> None:
    env = services_env
    tenant = await env.tenant()
    uri, _ = await env.artifact(tenant)
    model = await registry(env).register_model(tenant, request(uri))
    audits = BiasAuditService(env.db, env.platform)
    await audits.audit(tenant, model.id, evaluations(0.1, 0.12), group_by="region")
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        async with conn.transaction():  # a superuser edits behind the triggers' back
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(forgery)
    finally:
        await conn.close()
    with pytest.raises(SignatureInvalidError):
        await registry(env).promote_to_shadow(tenant, model.id)
    assert (await model_rows(env.db, tenant))[0]["status"] == "REGISTERED"


async def test_other_tenants_cannot_touch_a_model(services_env: ServicesEnv) -> None:
    env = services_env
    tenant, intruder = await env.tenant("a"), await env.tenant("b")
    uri, _ = await env.artifact(tenant)
    model = await registry(env).register_model(tenant, request(uri))
    with pytest.raises(NotFoundError):
        await registry(env).promote_to_shadow(intruder, model.id)
    with pytest.raises(NotFoundError):
        await registry(env).transition(intruder, model.id, ModelStatus.REJECTED, "x")
    with pytest.raises(NotFoundError):
        await BiasAuditService(env.db, env.platform).audit(
            intruder, model.id, evaluations(0.1, 0.1), group_by="region"
        )
    assert await model_rows(env.db, intruder) == []


async def test_promotion_rollback_and_cooldown_clock(services_env: ServicesEnv) -> None:
    env = services_env
    tenant = await env.tenant()
    service = registry(env)
    audits = BiasAuditService(env.db, env.platform)
    ids = []
    for _ in range(2):
        uri, _ = await env.artifact(tenant)
        model = await service.register_model(tenant, request(uri))
        await audits.audit(tenant, model.id, evaluations(0.1, 0.1), group_by="region")
        await service.promote_to_shadow(tenant, model.id)
        await service.transition(tenant, model.id, ModelStatus.CANARY, "canary")
        ids.append(model.id)
    await service.transition(tenant, ids[0], ModelStatus.PRODUCTION, "first")
    with pytest.raises(IllegalTransitionRefusal):  # one PRODUCTION per model
        await service.transition(tenant, ids[1], ModelStatus.PRODUCTION, "second")
    await service.transition(tenant, ids[0], ModelStatus.ARCHIVED, "replaced")
    await service.transition(tenant, ids[1], ModelStatus.PRODUCTION, "second")
    with pytest.raises(IllegalTransitionRefusal):
        await service.transition(tenant, ids[1], ModelStatus.REGISTERED, "back")
    assert await service.last_rollback_at(tenant) is None
    rollback = await service.rollback(tenant, "yield", reason="bad canary metrics")
    assert (rollback.rolled_back, rollback.restored) == (ids[1], ids[0])
    statuses = [r["status"] for r in await model_rows(env.db, tenant)]
    assert statuses == ["PRODUCTION", "ROLLED_BACK"]
    assert await service.last_rollback_at(tenant) == rollback.at
    with pytest.raises(NotFoundError):
        await service.rollback(tenant, "moisture")


async def test_the_pipelines_promotion_rejects_a_model_without_a_passed_audit(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant = await env.tenant()
    audits = BiasAuditService(env.db, env.platform, max_error_ratio=1.5, min_group_size=30)
    uri, _ = await env.artifact(tenant)
    unaudited = await registry(env).register_model(tenant, request(uri))
    with pytest.raises(BiasAuditRequiredError, match="no bias audit"):
        await registry(env).promote_to_shadow_or_reject(tenant, unaudited.id)
    uri, _ = await env.artifact(tenant)
    unfair = await registry(env).register_model(tenant, request(uri))
    await audits.audit(tenant, unfair.id, evaluations(0.1, 0.5), group_by="region")
    with pytest.raises(BiasAuditRequiredError, match="failed"):
        await registry(env).promote_to_shadow_or_reject(tenant, unfair.id)
    uri, _ = await env.artifact(tenant)
    fair = await registry(env).register_model(tenant, request(uri))
    await audits.audit(tenant, fair.id, evaluations(0.1, 0.12), group_by="region")
    await registry(env).promote_to_shadow_or_reject(tenant, fair.id, reason="pipeline")

    statuses = [row["status"] for row in await model_rows(env.db, tenant)]
    assert statuses == ["REJECTED", "REJECTED", "SHADOW"]
    async with env.db.transaction(tenant) as conn:
        reasons = await conn.fetch(
            "SELECT model_version_id, reason FROM model_status_history"
            " WHERE to_status IN ('REJECTED', 'SHADOW') ORDER BY changed_at"
        )
    assert {(row["model_version_id"], row["reason"]) for row in reasons} == {
        (unaudited.id, "bias audit did not pass"),
        (unfair.id, "bias audit did not pass"),
        (fair.id, "pipeline"),
    }


async def test_the_pipelines_audit_evaluates_the_model_on_its_holdout(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant = await env.tenant()
    await env.seed_events(tenant, "2026", 200)
    mean_model = RidgeModel(features=(), intercept=5.0, l2_lambda=1.0)
    uri, _ = await env.artifact(tenant, mean_model.to_bytes())
    trained_with = replace(request(uri), metrics={"holdout_fraction": 0.25})
    model = await registry(env).register_model(tenant, trained_with)
    # the worker's configured fraction differs: the model's own split wins
    auditor = ModelAuditService(
        env.db, env.store, BiasAuditService(env.db, env.platform), holdout_fraction=0.5
    )

    outcome = await auditor.audit_model(tenant, model.id, "2026")

    held_out = [i for i in range(200) if HoldoutSplit(0.25).is_holdout(f"field-{i:05d}")]
    assert 20 < len(held_out) < 80
    async with env.db.transaction(tenant) as conn:
        [audit] = await conn.fetch("SELECT passed, metrics FROM bias_audits")
    assert outcome.passed is audit["passed"]
    verdict = "passed" if audit["passed"] else "failed"
    ratio = audit["metrics"]["error_ratio"]
    assert outcome.detail.startswith(
        f"bias audit {verdict}: worst/best region error ratio {ratio}"
        f" on {len(held_out)} held-out events"
    )
    assert audit["metrics"]["group_by"] == "region"
    assert audit["metrics"]["split"] == {
        "rule": "sha256(field_id)[:8] big-endian mod 10000 < round(fraction * 10000)",
        "fraction": 0.25,
        "side": "holdout",
        "fraction_source": "model metrics",
        "season": "2026",
        "rows_evaluated": len(held_out),
        "rows_excluded_as_trained_on": 200 - len(held_out),
    }
    groups = audit["metrics"]["groups"]
    assert groups["north"]["n"] == sum(1 for i in held_out if i % 2 == 0)
    assert groups["south"]["n"] == sum(1 for i in held_out if i % 2 == 1)

    uri, _ = await env.artifact(tenant, b"not a model")
    unreadable = await registry(env).register_model(tenant, request(uri))
    with pytest.raises(GovernanceRefusal, match="cannot be loaded"):
        await auditor.audit_model(tenant, unreadable.id, "2026")
    with pytest.raises(GovernanceRefusal, match="no held-out labelled events"):
        await auditor.audit_model(tenant, model.id, "2031")


async def test_groups_too_small_to_judge_are_reported_not_passed_over(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    tenant = await env.tenant()
    uri, _ = await env.artifact(tenant)
    model = await registry(env).register_model(tenant, request(uri))
    audits = BiasAuditService(env.db, env.platform, max_error_ratio=1.5, min_group_size=30)
    few_in_east = [*evaluations(0.1, 0.1), *(Evaluation("east", 5.0, 9.0) for _ in range(3))]

    result = await audits.audit(tenant, model.id, few_in_east, group_by="region")

    assert result.passed  # north and south are judged and within bound ...
    assert result.metrics["judged_groups"] == ["north", "south"]
    assert result.metrics["insufficient_groups"] == {"east": 3}  # ... east is named, not hidden
    assert "1 group(s) under 30 events not judged" in result.metrics["verdict"]
    async with env.db.transaction(tenant) as conn:
        details = await conn.fetchval(
            "SELECT details FROM integrity_checks WHERE check_type = 'model.bias_audit'"
        )
    assert details["insufficient_groups"] == {"east": 3}


class LaggingStore:
    """The real S3 store, but its first ``misses`` HEADs of a key answer "not there", as a store
    with read-after-write lag does right after the trainer wrote the artifact."""

    def __init__(self, store: ObjectStorePort, misses: int) -> None:
        self._store = store
        self.misses = misses
        self.heads = 0

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo | None:
        self.heads += 1
        if self.heads <= self.misses:
            return None
        return await self._store.head(bucket, key, version_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_an_artifact_that_shows_up_late_is_registered(services_env: ServicesEnv) -> None:
    """Issue 11, item 8: a HEAD 404 right after the write is retried within the step's budget;
    an artifact that never shows up is refused after the last look."""
    env = services_env
    tenant = await env.tenant()
    uri, sha = await env.artifact(tenant)
    lagging = LaggingStore(env.store, misses=2)
    service = ModelRegistryService(
        env.db, cast(ObjectStorePort, lagging), env.platform, artifact_lookups=(0.0, 0.1, 0.1)
    )
    model = await service.register_model(tenant, request(uri, expected_sha256=sha))
    assert (model.artifact_sha256, lagging.heads) == (sha, 3)
    never = LaggingStore(env.store, misses=99)
    service = ModelRegistryService(
        env.db, cast(ObjectStorePort, never), env.platform, artifact_lookups=(0.0, 0.1, 0.1)
    )
    with pytest.raises(ArtifactMissingError, match="looked 3 times"):
        await service.register_model(tenant, request(uri, expected_sha256=sha))
    assert never.heads == 3
