"""A model version with its whole provenance, made by the real services the pipeline calls:
drift report, WORM snapshot, fenced training run, registration, bias audit, SHADOW, outcome."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from uuid import UUID, uuid4

from adapters.objectstore import S3Uri
from domain.pipeline import PipelineOutcome, PipelineResult
from domain.signing import Signer
from domain.trust import TrustedKeys
from services.bias import BiasAuditService, Evaluation
from services.checkpoints import CheckpointService
from services.drift import DriftAnalysisService, Window
from services.pipeline import PipelineService
from services.provenance import ProvenanceExporter
from services.registry import ModelRegistryService, RegisterModel
from tests.integration.services_env import ServicesEnv


@dataclass(frozen=True)
class Provenance:
    tenant: UUID
    parent: UUID
    model: UUID
    artifact: bytes
    dataset: bytes
    training_run: UUID


def trusted(env: ServicesEnv) -> TrustedKeys:
    return TrustedKeys.of(env.platform.public_key)


def checkpoint_service(env: ServicesEnv) -> CheckpointService:
    return CheckpointService(
        env.db,
        env.store,
        trusted(env),
        bucket=env.settings.s3_datasets_bucket,
        retention_days=1,
        platform=env.platform,
    )


def exporter(env: ServicesEnv) -> ProvenanceExporter:
    return ProvenanceExporter(
        env.db, env.store, env.platform, trusted(env), checkpoint_service(env)
    )


async def two_trained_versions(env: ServicesEnv) -> Provenance:
    """Two versions of "yield", each from its own snapshot and training run; the second is
    SHADOW and its pipeline run ended with a checkpoint."""
    tenant = await env.tenant()
    await env.seed_events(tenant, "2025", 1100, seed=1)
    await env.seed_events(tenant, "2026", 1100, shift=0.2, seed=2)
    drift = await DriftAnalysisService(
        env.db, env.store, env.platform, bucket=env.registry_bucket
    ).generate_report(tenant, Window("2025"), Window("2026"))
    pipeline = PipelineService(env.db, env.store, datasets_bucket=env.settings.s3_datasets_bucket)
    registry = ModelRegistryService(env.db, env.store, env.platform)
    audits = BiasAuditService(env.db, env.platform)
    made = []
    for fence in (1, 2):
        run = uuid4()
        workflow_id = f"retrain/{tenant}"
        snapshot = await pipeline.snapshot(tenant, run, "2026")
        await pipeline.start_training_run(
            tenant,
            run,
            workflow_id=workflow_id,
            fence=fence,
            model_name="yield",
            dataset_uri=snapshot.dataset_uri,
            dataset_sha256=snapshot.dataset_sha256,
            callback_public_key=Signer.generate().public_key,
        )
        await pipeline.mark_running(tenant, run, f"train-{run}")
        artifact = b'{"format":"rai.ridge/v1","coefficients":"' + secrets.token_hex(64).encode()
        uri, sha = await env.artifact(tenant, artifact)
        await pipeline.finish_run(tenant, run, "SUCCEEDED")
        model = await registry.register_model(
            tenant,
            RegisterModel(
                model_name="yield",
                artifact_uri=uri,
                dataset_uri=snapshot.dataset_uri,
                dataset_sha256=snapshot.dataset_sha256,
                expected_artifact_sha256=sha,
                training_run_id=run,
                drift_report_id=drift.id,
                metrics={
                    "model_format": "rai.ridge/v1",
                    "l2_lambda": 1.0,
                    "n_train": 900,
                    "n_validation": 200,
                },
            ),
        )
        evaluations = [Evaluation(g, 5.0, 5.1) for g in ("north", "south") for _ in range(40)]
        await audits.audit(tenant, model.id, evaluations, group_by="region")
        await registry.promote_to_shadow(tenant, model.id)
        await pipeline.record_outcome(
            workflow_id,
            f"run-{fence}",  # two runs of one workflow id: two outcomes
            PipelineResult(
                tenant_id=tenant,
                outcome=PipelineOutcome.SUCCEEDED_SHADOW,
                drift_report_id=drift.id,
                training_run_id=run,
                model_version_id=model.id,
                artifact_sha256=sha,
            ),
        )
        await checkpoint_service(env).checkpoint(tenant)
        dataset_uri = S3Uri.parse(snapshot.dataset_uri)
        dataset = await env.store.get_bytes(
            dataset_uri.bucket, dataset_uri.key, dataset_uri.version_id
        )
        made.append((model.id, artifact, dataset, run))
    (parent, _, _, _), (model_id, artifact, dataset, run) = made
    return Provenance(tenant, parent, model_id, artifact, dataset, run)
