"""The RetrainingPipeline's activities: one method per step, over the services.

Built once by the worker with its clients (STYLE: activities are methods of classes that get
their clients in ``__init__``). Every step maps failures with :func:`step_failures`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import activity

from activities.failures import step_failures
from adapters.redis_mutex import Lease, TenantMutex
from db.repository import Database
from domain.jobs import JobOrigin, JobRunner, JobSpec, JobState, job_attempt, job_name_for
from domain.model_status import ModelStatus
from domain.pipeline import (
    ActivityName,
    AuditInput,
    AuditOutput,
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
from domain.signing import Signer
from domain.training import TrainedModel
from services.bias import BiasAuditService
from services.drift import DriftAnalysisService, Window
from services.errors import BiasAuditRequiredError
from services.evaluation import evaluate_model
from services.pipeline import PipelineService
from services.ports import ObjectStorePort
from services.registry import ModelRegistryService, RegisterModel
from services.training import JobEnvironment

AUDIT_GROUP = "region"


@dataclass(frozen=True)
class TrainingConfig:
    """How training jobs are launched: where they write, whom they call back, their env."""

    registry_bucket: str
    callback_url: str | None
    environment: JobEnvironment
    poll_interval: timedelta = timedelta(seconds=2)


class PipelineActivities:
    def __init__(
        self,
        *,
        db: Database,
        store: ObjectStorePort,
        mutex: TenantMutex,
        pipeline: PipelineService,
        drift: DriftAnalysisService,
        registry: ModelRegistryService,
        audits: BiasAuditService,
        jobs: JobRunner,
        platform: Signer,
        training: TrainingConfig,
    ) -> None:
        self._db = db
        self._store = store
        self._mutex = mutex
        self._pipeline = pipeline
        self._drift = drift
        self._registry = registry
        self._audits = audits
        self._jobs = jobs
        self._platform = platform
        self._training = training

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
        ]

    @activity.defn(name=ActivityName.ACQUIRE_LOCK)
    async def acquire_lock(self, request: LockRequest) -> LockResult:
        with step_failures():
            newest = await self._pipeline.newest_fence(request.tenant_id)
            lease = await self._mutex.acquire(request.tenant_id, request.holder, fence_floor=newest)
        if lease is None:
            return LockResult(lease=None)
        return LockResult(
            lease=LeaseInfo(
                tenant_id=lease.tenant_id,
                token=lease.token,
                fence=lease.fence,
                holder=lease.holder,
            )
        )

    def _lease(self, info: LeaseInfo) -> Lease:
        return Lease(
            tenant_id=info.tenant_id,
            token=info.token,
            fence=info.fence,
            holder=info.holder,
            ttl=self._mutex.ttl,
        )

    @activity.defn(name=ActivityName.RENEW_LOCK)
    async def renew_lock(self, lease: LeaseInfo) -> bool:
        with step_failures():
            return await self._mutex.renew(self._lease(lease))

    @activity.defn(name=ActivityName.RELEASE_LOCK)
    async def release_lock(self, lease: LeaseInfo) -> None:
        with step_failures():
            await self._mutex.release(self._lease(lease))

    @activity.defn(name=ActivityName.CHECK_PRECONDITIONS)
    async def check_preconditions(self, request: PreconditionsInput) -> PreconditionsResult:
        with step_failures():
            return await self._pipeline.preconditions(request.tenant_id, request.now)

    @activity.defn(name=ActivityName.ANALYZE_DRIFT)
    async def analyze_drift(self, request: DriftInput) -> DriftOutput:
        with step_failures():
            reference, current = request.reference_season, request.current_season
            if reference is None or current is None:
                seasons = await self._pipeline.latest_seasons(request.tenant_id)
                if len(seasons) < 2:
                    return DriftOutput(
                        report_id=None,
                        verdict="INSUFFICIENT_DATA",
                        reference_season=None,
                        current_season=None,
                        detail="drift needs two seasons of events",
                    )
                current, reference = seasons[0], seasons[1]
            report = await self._drift.generate_report(
                request.tenant_id, Window(reference), Window(current)
            )
            return DriftOutput(
                report_id=report.id,
                verdict=report.result.verdict.value,
                reference_season=reference,
                current_season=current,
                features={f.name: f.verdict.value for f in report.result.features},
                detail=f"season {current} against {reference}",
            )

    @activity.defn(name=ActivityName.SNAPSHOT_DATASET)
    async def snapshot_dataset(self, request: SnapshotInput) -> SnapshotOutput:
        with step_failures():
            return await self._pipeline.snapshot(
                request.tenant_id, request.training_run_id, request.season
            )

    def callback_signer(self, request: TrainInput) -> Signer:
        """The run's callback key: derived from the platform key and the run id, so every
        attempt (and a re-attaching worker) gives the job the same key without storing it."""
        seed = hmac.new(
            bytes.fromhex(self._platform.seed_hex()),
            b"rai-level-d/callback-key/" + request.training_run_id.bytes,
            hashlib.sha256,
        ).digest()
        return Signer(seed)

    @activity.defn(name=ActivityName.TRAIN_MODEL)
    async def train_model(self, request: TrainInput) -> TrainedModel:
        """Launch the run's training job (or re-attach to it by name) and wait for it,
        heartbeating the job name. A retry after a failed job launches a fresh one."""
        with step_failures():
            info = activity.info()
            signer = self.callback_signer(request)
            await self._pipeline.start_training_run(
                request.tenant_id,
                request.training_run_id,
                workflow_id=request.workflow_id,
                fence=request.fence,
                model_name=request.model_name,
                dataset_uri=request.dataset_uri,
                dataset_sha256=request.dataset_sha256,
                callback_public_key=signer.public_key,
            )
            job_name = await self._job_for_attempt(request, info)
            await self._jobs.launch(self._job_spec(request, job_name, signer))
            await self._pipeline.mark_running(request.tenant_id, request.training_run_id, job_name)
            while True:
                activity.heartbeat(job_name)
                status = await self._jobs.status(job_name)
                if status.state is JobState.SUCCEEDED and status.result is not None:
                    result = status.result
                    if not result.artifact_uri or not result.artifact_sha256:
                        raise RuntimeError(f"training job {job_name} reported no artifact")
                    return TrainedModel(
                        artifact_uri=result.artifact_uri,
                        artifact_sha256=result.artifact_sha256,
                        metrics=result.metrics or {},
                    )
                if status.state in (JobState.FAILED, JobState.SUCCEEDED):
                    raise RuntimeError(f"training job {job_name} failed: {status.detail}")
                await asyncio.sleep(self._training.poll_interval.total_seconds())

    async def _job_for_attempt(self, request: TrainInput, info: activity.Info) -> str:
        """The job this attempt waits for: the one an earlier attempt started, unless that
        one failed (then a fresh job, named after the attempt)."""
        base = job_name_for(request.training_run_id)
        earlier = str(info.heartbeat_details[0]) if info.heartbeat_details else base
        status = await self._jobs.status(earlier)
        if status.state is JobState.FAILED:
            return job_name_for(request.training_run_id, attempt=info.attempt)
        return earlier

    def _job_spec(self, request: TrainInput, job_name: str, signer: Signer) -> JobSpec:
        prefix = (
            f"s3://{self._training.registry_bucket}/models/{request.tenant_id}/"
            f"{request.model_name}/{request.training_run_id}/{job_name}/"
        )
        argv = [
            "-m",
            "trainer",
            "--tenant-id",
            str(request.tenant_id),
            "--training-run-id",
            str(request.training_run_id),
            "--model-name",
            request.model_name,
            "--dataset-uri",
            request.dataset_uri,
            "--dataset-sha256",
            request.dataset_sha256,
            "--output-prefix",
            prefix,
        ]
        if self._training.callback_url:
            argv += ["--callback-url", self._training.callback_url]
        environment = self._training.environment.with_callback_key(signer.seed_hex())
        return JobSpec(
            name=job_name,
            argv=tuple(argv),
            origin=JobOrigin(
                tenant_id=request.tenant_id,
                training_run_id=request.training_run_id,
                attempt=job_attempt(job_name),
                model_name=request.model_name,
            ),
            env=environment.env,
            secret_env=environment.secret_env,
        )

    @activity.defn(name=ActivityName.REGISTER_MODEL)
    async def register_model(self, request: RegisterInput) -> RegisterOutput:
        with step_failures():
            await self._pipeline.finish_run(request.tenant_id, request.training_run_id, "SUCCEEDED")
            existing = await self._registry.version_of_training_run(
                request.tenant_id, request.training_run_id
            )
            model = existing or await self._registry.register_model(
                request.tenant_id,
                RegisterModel(
                    model_name=request.model_name,
                    artifact_uri=request.artifact_uri,
                    dataset_uri=request.dataset_uri,
                    dataset_sha256=request.dataset_sha256,
                    expected_artifact_sha256=request.artifact_sha256,
                    training_run_id=request.training_run_id,
                    drift_report_id=request.drift_report_id,
                    metrics=request.metrics,
                ),
            )
            return RegisterOutput(
                model_version_id=model.id,
                version=model.version,
                artifact_sha256=model.artifact_sha256,
            )

    @activity.defn(name=ActivityName.AUDIT_MODEL)
    async def audit_model(self, request: AuditInput) -> AuditOutput:
        with step_failures():
            evaluations = await evaluate_model(
                self._db,
                self._store,
                request.tenant_id,
                request.model_version_id,
                request.season,
                group_by=AUDIT_GROUP,
            )
            audit = await self._audits.audit(
                request.tenant_id, request.model_version_id, evaluations, group_by=AUDIT_GROUP
            )
            ratio = audit.metrics.get("error_ratio")
            return AuditOutput(
                passed=audit.passed,
                detail=f"bias audit {'passed' if audit.passed else 'failed'}:"
                f" worst/best {AUDIT_GROUP} error ratio {ratio}",
            )

    @activity.defn(name=ActivityName.PROMOTE_TO_SHADOW)
    async def promote_to_shadow(self, request: PromoteInput) -> None:
        with step_failures():
            try:
                await self._registry.promote_to_shadow(
                    request.tenant_id, request.model_version_id, reason="retraining pipeline"
                )
            except BiasAuditRequiredError:
                await self._registry.transition(
                    request.tenant_id,
                    request.model_version_id,
                    ModelStatus.REJECTED,
                    "bias audit did not pass",
                )
                raise

    @activity.defn(name=ActivityName.DEAD_LETTER)
    async def dead_letter(self, request: DeadLetterInput) -> DeadLetterOutput:
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
        with step_failures():
            await self._pipeline.record_outcome(request.workflow_id, request.result)
