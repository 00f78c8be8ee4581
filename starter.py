"""Composition root for starting and inspecting pipelines (``rai pipeline start | status``) and
for approving a challenger's shadow evaluation (``rai model approve``)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote
from uuid import UUID

from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.pipeline import PipelineInput, PipelineProgress, PipelineResult, pipeline_workflow_id
from domain.promotion import APPROVE_UPDATE, Approval, shadow_evaluation_workflow_id
from settings import Settings
from workflows.promotion import ShadowEvaluation
from workflows.retrain import RetrainingPipeline


async def connect_temporal(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


def workflow_ui_link(settings: Settings, workflow_id: str, run_id: str | None) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    link = (
        f"{base}/namespaces/{settings.temporal_namespace}/workflows/{quote(workflow_id, safe='')}"
    )
    return f"{link}/{run_id}/history" if run_id else link


@dataclass(frozen=True)
class Started:
    workflow_id: str
    run_id: str
    ui_link: str
    handle: WorkflowHandle[RetrainingPipeline, PipelineResult]


class PipelineAlreadyRunning(Exception):
    """Temporal refused the start: the tenant's pipeline is running."""


async def start_pipeline(
    client: Client,
    settings: Settings,
    tenant_id: UUID,
    *,
    trigger: str = "manual",
    reference_season: str | None = None,
    current_season: str | None = None,
    training_heartbeat_seconds: float = 60.0,
) -> Started:
    workflow_id = pipeline_workflow_id(tenant_id)
    try:
        handle = await client.start_workflow(
            RetrainingPipeline.run,
            PipelineInput(
                tenant_id=tenant_id,
                trigger=trigger,
                reference_season=reference_season,
                current_season=current_season,
                drift_task_queue=settings.drift_task_queue,
                training_heartbeat_seconds=training_heartbeat_seconds,
            ),
            id=workflow_id,
            task_queue=settings.training_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError as exc:
        raise PipelineAlreadyRunning(f"pipeline {workflow_id} is already running") from exc
    run_id = handle.result_run_id or ""
    return Started(workflow_id, run_id, workflow_ui_link(settings, workflow_id, run_id), handle)


@dataclass(frozen=True)
class PipelineStatus:
    workflow_id: str
    run_id: str
    status: str
    progress: PipelineProgress | None
    ui_link: str


async def pipeline_status(client: Client, settings: Settings, tenant_id: UUID) -> PipelineStatus:
    workflow_id = pipeline_workflow_id(tenant_id)
    handle = client.get_workflow_handle_for(RetrainingPipeline.run, workflow_id)
    description = await handle.describe()
    progress = None
    if description.status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
        progress = await handle.query(RetrainingPipeline.progress)
    status = description.status.name if description.status else "UNKNOWN"
    return PipelineStatus(
        workflow_id,
        description.run_id,
        status,
        progress,
        workflow_ui_link(settings, workflow_id, description.run_id),
    )


class EvaluationNotFound(Exception):
    """No running shadow evaluation for that model version."""


class ApprovalRefused(Exception):
    """The evaluation refused the approval (its validator, or it ended meanwhile)."""


async def approve_model(client: Client, model_version_id: UUID, approval: Approval) -> str:
    """Send ``approval`` to the model version's shadow evaluation (its ``approve`` update) and
    return what the evaluation answers once the version is in CANARY."""
    workflow_id = shadow_evaluation_workflow_id(model_version_id)
    handle = client.get_workflow_handle_for(ShadowEvaluation.run, workflow_id)
    try:
        # By name: the SDK's typing of an async update method with a validator does not match
        # execute_update's overloads.
        answer: str = await handle.execute_update(APPROVE_UPDATE, approval, result_type=str)
        return answer
    except WorkflowUpdateFailedError as exc:
        raise ApprovalRefused(str(exc.cause)) from exc
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise EvaluationNotFound(
                f"no running shadow evaluation {workflow_id} (is model version"
                f" {model_version_id} in SHADOW?)"
            ) from exc
        raise
