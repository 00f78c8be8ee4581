"""Callback test helpers: a recording stand-in for the workflow port, training runs recorded as
the pipeline records them, and callback bodies built as their senders build them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

from domain.pipeline import TrainingOutcome, pipeline_workflow_id
from domain.signing import DocumentKind, Signer
from domain.training import TrainingResult, TrainingStatus, callback_body
from services.callbacks import (
    WorkflowNotRunningError,
    WorkflowUnavailableError,
    drift_callback_document,
)
from services.drift import DriftAnalysisService, DriftReportRecord, Window
from services.pipeline import PipelineService
from tests.integration.services_env import ServicesEnv

ARTIFACT_URI = "s3://reg/models/model.json?versionId=v7"
ARTIFACT_SHA = "ab" * 32
METRICS = {"rmse": 0.25, "n_train": 900}


@dataclass
class RecordingSignaller:
    """The workflow port, recording deliveries; ``gone`` workflows have finished, and while
    ``unavailable`` the workflow service cannot be reached."""

    calls: list[tuple[str, TrainingOutcome]] = field(default_factory=list)
    gone: set[str] = field(default_factory=set)
    unavailable: bool = False

    async def signal_training_finished(self, workflow_id: str, outcome: TrainingOutcome) -> None:
        if self.unavailable:
            raise WorkflowUnavailableError("temporal is down")
        if workflow_id in self.gone:
            raise WorkflowNotRunningError(f"{workflow_id} has completed")
        self.calls.append((workflow_id, outcome))


@dataclass(frozen=True)
class Run:
    tenant_id: UUID
    run_id: UUID
    workflow_id: str
    key: Signer


async def running_run(env: ServicesEnv, tenant: UUID | None = None) -> Run:
    """A RUNNING training run recorded the way the pipeline records it, with a callback key."""
    tenant = tenant or await env.tenant()
    run = Run(tenant, uuid4(), pipeline_workflow_id(tenant), Signer.generate())
    pipeline = PipelineService(env.db, env.store, datasets_bucket=env.settings.s3_datasets_bucket)
    await pipeline.start_training_run(
        tenant,
        run.run_id,
        workflow_id=run.workflow_id,
        fence=1,
        model_name="yield",
        dataset_uri=f"s3://data/snapshots/{tenant}/{run.run_id}.jsonl?versionId=v1",
        dataset_sha256="cd" * 32,
        callback_public_key=run.key.public_key,
    )
    await pipeline.mark_running(tenant, run.run_id, f"train-{run.run_id}")
    return run


def succeeded(metrics: dict[str, Any] | None = None) -> TrainingResult:
    return TrainingResult(
        status=TrainingStatus.SUCCEEDED,
        artifact_uri=ARTIFACT_URI,
        artifact_sha256=ARTIFACT_SHA,
        metrics=metrics if metrics is not None else dict(METRICS),
    )


def training_body(
    run: Run,
    result: TrainingResult | None = None,
    *,
    signer: Signer | None = None,
    tenant: UUID | None = None,
) -> dict[str, Any]:
    """The body exactly as the training job posts it (``domain.training.callback_body``)."""
    posted = callback_body(
        tenant_id=tenant or run.tenant_id,
        training_run_id=run.run_id,
        result=result or succeeded(),
        signer=signer or run.key,
    )
    body: dict[str, Any] = json.loads(posted)
    return body


async def audit_rows(env: ServicesEnv, tenant: UUID, check_type: str) -> list[tuple[str, str]]:
    async with env.db.transaction(tenant) as conn:
        rows = await conn.fetch(
            "SELECT subject_id, outcome FROM integrity_checks WHERE check_type = $1 ORDER BY seq",
            check_type,
        )
    return [(row["subject_id"], row["outcome"]) for row in rows]


async def drift_report(env: ServicesEnv, tenant: UUID) -> DriftReportRecord:
    await env.seed_events(tenant, "2025", 60, seed=1)
    await env.seed_events(tenant, "2026", 60, shift=0.2, seed=2)
    drift = DriftAnalysisService(env.db, env.store, env.platform, bucket=env.registry_bucket)
    return await drift.generate_report(tenant, Window("2025"), Window("2026"))


def drift_body(
    tenant: UUID, report_id: UUID, sha: str, signer: Signer, *, key_id: str | None = None
) -> dict[str, Any]:
    document = drift_callback_document(
        tenant_id=tenant,
        drift_report_id=report_id,
        report_sha256=sha,
        key_id=key_id or signer.key_id,
    )
    return {"document": document, "signature": signer.sign(DocumentKind.CALLBACK, document).hex()}
