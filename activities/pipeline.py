"""The RetrainingPipeline's activities: one method per step, each over one service method.

Built once by the worker with its services (STYLE: activities are methods of classes that get
their clients in ``__init__``). An activity unpacks its input, calls the service, heartbeats
while it runs (every step, short ones included: the pipeline gives each a heartbeat timeout, so
a worker killed in any of them costs seconds), and maps failures with :func:`step_failures`; the
decisions are the services'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.failures import step_failures
from activities.heartbeats import heartbeating
from domain.pipeline import (
    ActivityName,
    AuditInput,
    AuditOutput,
    CancelTrainingInput,
    CheckpointInput,
    DeadLetterInput,
    DeadLetterOutput,
    DriftInput,
    DriftOutput,
    LeaseInfo,
    LockRequest,
    LockResult,
    OutcomeInput,
    PreconditionsInput,
    PreconditionsResult,
    PromoteInput,
    RegisterInput,
    RegisterOutput,
    SnapshotInput,
    SnapshotOutput,
    TrainInput,
)
from domain.training import TrainedModel
from services.checkpoints import CheckpointService
from services.evaluation import ModelAuditService
from services.leases import TenantLeases
from services.pipeline import DriftCheck, PipelineService
from services.registry import ModelRegistryService
from services.training import TrainingService


class PipelineActivities:
    def __init__(
        self,
        *,
        leases: TenantLeases,
        pipeline: PipelineService,
        drift: DriftCheck,
        training: TrainingService,
        audits: ModelAuditService,
        registry: ModelRegistryService,
        checkpoints: CheckpointService,
    ) -> None:
        self._leases = leases
        self._pipeline = pipeline
        self._drift = drift
        self._training = training
        self._audits = audits
        self._registry = registry
        self._checkpoints = checkpoints

    def training_activities(self) -> list[Callable[..., Any]]:
        """Everything on ``training-queue`` (drift analysis has a queue of its own)."""
        return [
            self.acquire_lock,
            self.renew_lock,
            self.release_lock,
            self.check_preconditions,
            self.snapshot_dataset,
            self.train_model,
            self.register_model,
            self.audit_model,
            self.promote_to_shadow,
            self.dead_letter,
            self.record_outcome,
            self.checkpoint_chain,
            self.cancel_training,
        ]

    @activity.defn(name=ActivityName.ACQUIRE_LOCK)
    async def acquire_lock(self, request: LockRequest) -> LockResult:
        async with heartbeating():
            with step_failures():
                lease = await self._leases.acquire(request.tenant_id, request.holder)
                return LockResult(lease=lease)

    @activity.defn(name=ActivityName.RENEW_LOCK)
    async def renew_lock(self, lease: LeaseInfo) -> bool:
        async with heartbeating():
            with step_failures():
                return await self._leases.renew(lease)

    @activity.defn(name=ActivityName.RELEASE_LOCK)
    async def release_lock(self, lease: LeaseInfo) -> None:
        async with heartbeating():
            with step_failures():
                await self._leases.release(lease)

    @activity.defn(name=ActivityName.CHECK_PRECONDITIONS)
    async def check_preconditions(self, request: PreconditionsInput) -> PreconditionsResult:
        async with heartbeating():
            with step_failures():
                return await self._pipeline.preconditions(request.tenant_id, request.now)

    @activity.defn(name=ActivityName.ANALYZE_DRIFT)
    async def analyze_drift(self, request: DriftInput) -> DriftOutput:
        async with heartbeating():
            with step_failures():
                info = activity.info()
                return await self._drift.check(
                    request.tenant_id,
                    request.reference_season,
                    request.current_season,
                    pipeline_run=f"{info.workflow_id}/{info.workflow_run_id}",
                )

    @activity.defn(name=ActivityName.SNAPSHOT_DATASET)
    async def snapshot_dataset(self, request: SnapshotInput) -> SnapshotOutput:
        async with heartbeating():
            with step_failures():
                return await self._pipeline.snapshot(
                    request.tenant_id, request.training_run_id, request.season
                )

    @activity.defn(name=ActivityName.TRAIN_MODEL)
    async def train_model(self, request: TrainInput) -> TrainedModel:
        """Launch the run's training job (or re-attach to it) and wait for it, heartbeating
        the job's name: a retry resumes with the job its predecessor was waiting for."""
        with step_failures():
            info = activity.info()
            resumed = str(info.heartbeat_details[0]) if info.heartbeat_details else None
            return await self._training.train(
                request,
                attempt=info.attempt,
                resumed_job=resumed,
                heartbeat=activity.heartbeat,
                workflow_run_id=info.workflow_run_id,
            )

    @activity.defn(name=ActivityName.CANCEL_TRAINING)
    async def cancel_training(self, request: CancelTrainingInput) -> None:
        async with heartbeating():
            with step_failures():
                await self._training.cancel(
                    request.tenant_id, request.training_run_id, reason=request.reason
                )

    @activity.defn(name=ActivityName.REGISTER_MODEL)
    async def register_model(self, request: RegisterInput) -> RegisterOutput:
        async with heartbeating():
            with step_failures():
                return await self._training.register(request)

    @activity.defn(name=ActivityName.AUDIT_MODEL)
    async def audit_model(self, request: AuditInput) -> AuditOutput:
        async with heartbeating():
            with step_failures():
                return await self._audits.audit_model(
                    request.tenant_id, request.model_version_id, request.season
                )

    @activity.defn(name=ActivityName.PROMOTE_TO_SHADOW)
    async def promote_to_shadow(self, request: PromoteInput) -> None:
        async with heartbeating():
            with step_failures():
                await self._registry.promote_to_shadow_or_reject(
                    request.tenant_id, request.model_version_id, reason="retraining pipeline"
                )

    @activity.defn(name=ActivityName.DEAD_LETTER)
    async def dead_letter(self, request: DeadLetterInput) -> DeadLetterOutput:
        async with heartbeating():
            with step_failures():
                letter = await self._pipeline.dead_letter(
                    request.tenant_id,
                    workflow_id=request.workflow_id,
                    error=request.error,
                    attempts=request.attempts,
                    training_run_id=request.training_run_id,
                )
        return DeadLetterOutput(dead_letter_id=letter)

    @activity.defn(name=ActivityName.RECORD_OUTCOME)
    async def record_outcome(self, request: OutcomeInput) -> None:
        async with heartbeating():
            with step_failures():
                run_id = activity.info().workflow_run_id
                if run_id is None:  # the outcome is recorded once per workflow run
                    raise ValueError("record_pipeline_outcome runs only inside a workflow run")
                await self._pipeline.record_outcome(request.workflow_id, run_id, request.result)

    @activity.defn(name=ActivityName.CHECKPOINT_CHAIN)
    async def checkpoint_chain(self, request: CheckpointInput) -> None:
        async with heartbeating():
            with step_failures():
                await self._checkpoints.checkpoint(request.tenant_id)
