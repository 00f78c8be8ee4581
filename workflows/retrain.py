"""RetrainingPipeline(tenant): drift -> guard -> snapshot -> train -> register -> audit -> shadow
-> start of the version's ShadowEvaluation (a detached child, ``workflows/promotion.py``).

Workflow id ``retrain/{tenant_id}`` (Temporal refuses a second start while one runs); a Redis
lease per tenant, renewed while the pipeline holds it and carrying a fencing token, is the
second guard. Every activity runs with the pipeline retry policy (5 attempts, 1 s doubling to
30 s); governance refusals are non-retryable. When a step gives up, the pipeline writes a dead
letter (queue ``training-queue-failed``), releases the lease and ends FAILED_DEAD_LETTERED.
Every step has a heartbeat timeout (``step_heartbeat_seconds``, training its own), short ones
included, so a worker killed in any step is noticed in seconds and the step retried elsewhere.
The outcome is the workflow's result, answered by the ``progress`` query, and recorded in the
tenant's audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from uuid import UUID

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    RetryState,
    WorkflowAlreadyStartedError,
)
from temporalio.workflow import ActivityCancellationType

with workflow.unsafe.imports_passed_through():
    from domain.pipeline import (
        TRAINING_FINISHED_SIGNAL,
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
        PipelineInput,
        PipelineOutcome,
        PipelineProgress,
        PipelineResult,
        PreconditionsInput,
        PreconditionsResult,
        PromoteInput,
        RegisterInput,
        RegisterOutput,
        SnapshotInput,
        SnapshotOutput,
        TrainingOutcome,
        TrainInput,
    )
    from domain.promotion import (
        SHADOW_EVALUATION_WORKFLOW,
        EvaluationInput,
        shadow_evaluation_workflow_id,
    )
    from domain.training import TrainedModel

MAX_ATTEMPTS = 5
# Histories recorded before the pipeline started the shadow evaluation replay without it.
START_EVALUATION_PATCH = "start-shadow-evaluation"
# Histories recorded before every run ended with a signed checkpoint of the audit chain.
CHECKPOINT_PATCH = "checkpoint-audit-chain"
# Histories recorded before a cancelled pipeline cancelled its training run and job.
CANCEL_CLEANUP_PATCH = "cancel-training-on-cancel"
# Histories recorded before a lost lease stopped the pipeline and the long steps heartbeated.
LEASE_GUARD_PATCH = "stop-on-lost-lease-and-heartbeat-steps"
# Histories recorded before the dead letter had a bounded number of attempts.
BOUNDED_DEAD_LETTER_PATCH = "bounded-dead-letter"
# Histories recorded before the short steps (lock, preconditions, promotion, dead letter,
# outcome, checkpoint, cancel) heartbeated: a worker killed in one of them was noticed only at
# the step's 2-minute start-to-close timeout.
SHORT_STEP_HEARTBEAT_PATCH = "heartbeat-short-steps"
PIPELINE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=MAX_ATTEMPTS,
    non_retryable_error_types=["GovernanceRefusal"],
)
# Bookkeeping that must happen even after a failure (release, dead letter, outcome) keeps
# trying far longer than a pipeline step.
BOOKKEEPING_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=0,
)
# The dead letter retries a bounded number of times (its content is sanitised, so only an
# outage can fail it); the lease is released whatever happens.
DEAD_LETTER_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
)
SHORT_STEP = timedelta(minutes=2)
TRAINING_TIMEOUT = timedelta(hours=12)


def attempts_made(error: ActivityError) -> int:
    """How many attempts the failed step made: activities put theirs in the failure details;
    failures without details (a crash) are counted from the retry state."""
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.details:
        first = cause.details[0]
        if isinstance(first, int):
            return first
    return MAX_ATTEMPTS if error.retry_state == RetryState.MAXIMUM_ATTEMPTS_REACHED else 1


def failure_message(error: ActivityError) -> str:
    cause = error.cause
    message = str(cause) if cause is not None else str(error)
    kind = cause.type if isinstance(cause, ApplicationError) and cause.type else "error"
    return f"{kind}: {message}"


class LeaseLost(Exception):
    """The pipeline's tenant lease is gone: stop before the next write."""


@workflow.defn(name="RetrainingPipeline")
class RetrainingPipeline:
    def __init__(self) -> None:
        self._step = "starting"
        self._result: PipelineResult | None = None
        self._callback: TrainingOutcome | None = None
        # The run being trained, once training has begun: callbacks are matched against it,
        # and a dead letter names it.
        self._training_run_id: UUID | None = None
        self._training: workflow.ActivityHandle[TrainedModel] | None = None
        # Set (by the renewal task) once the tenant lease is lost; the pipeline then stops
        # before its next write. Only for executions that began with LEASE_GUARD_PATCH.
        self._guarded = False
        self._lease_lost: str | None = None
        self._step_heartbeat: timedelta | None = None
        # The same heartbeat timeout for the short steps (SHORT_STEP_HEARTBEAT_PATCH).
        self._short_heartbeat: timedelta | None = None

    @workflow.query(name="progress")
    def progress(self) -> PipelineProgress:
        return PipelineProgress(step=self._step, result=self._result)

    @workflow.signal(name=TRAINING_FINISHED_SIGNAL)
    def training_finished(self, outcome: TrainingOutcome) -> None:
        """The training job's verified completion callback (the API's CallbackHandler). A
        success is kept once received; a failure report is only informative (the training
        step's retries decide), so it never hides a later success of a retried job."""
        if self._callback is None or self._callback.status != "SUCCEEDED":
            self._callback = outcome

    @workflow.run
    async def run(self, params: PipelineInput) -> PipelineResult:
        info = workflow.info()
        self._guarded = workflow.patched(LEASE_GUARD_PATCH)
        if self._guarded:
            self._step_heartbeat = timedelta(seconds=params.step_heartbeat_seconds)
        if workflow.patched(SHORT_STEP_HEARTBEAT_PATCH):
            self._short_heartbeat = timedelta(seconds=params.step_heartbeat_seconds)
        self._step = "acquiring the tenant lock"
        lock = await workflow.execute_activity(
            ActivityName.ACQUIRE_LOCK,
            LockRequest(tenant_id=params.tenant_id, holder=f"{info.workflow_id}/{info.run_id}"),
            result_type=LockResult,
            start_to_close_timeout=SHORT_STEP,
            heartbeat_timeout=self._short_heartbeat,
            retry_policy=PIPELINE_RETRY,
        )
        if lock.lease is None:
            return await self._finish(
                PipelineResult(
                    tenant_id=params.tenant_id,
                    outcome=PipelineOutcome.SKIPPED_LOCKED,
                    detail="another pipeline holds the tenant lock",
                )
            )
        lease = lock.lease
        renewal = asyncio.create_task(
            self._keep_lease(lease, timedelta(seconds=params.lease_renewal_seconds))
        )
        try:
            result = await self._pipeline(params, lease)
        except LeaseLost as lost:
            await self._cancel_training(params.tenant_id, reason=str(lost))
            result = PipelineResult(
                tenant_id=params.tenant_id,
                outcome=PipelineOutcome.FAILED_LEASE_LOST,
                detail=str(lost),
                training_run_id=self._training_run_id,
            )
        except ActivityError as error:
            result = await self._dead_letter(params, error)
        except asyncio.CancelledError:
            # Cancelled from Temporal (UI, CLI): the cleanup below still runs activities.
            if workflow.patched(CANCEL_CLEANUP_PATCH):
                await self._cancel_training(
                    params.tenant_id,
                    reason=f"pipeline {info.workflow_id}/{info.run_id} was cancelled",
                )
            raise
        finally:
            renewal.cancel()
            self._step = "releasing the tenant lock"
            await workflow.execute_activity(
                ActivityName.RELEASE_LOCK,
                lease,
                start_to_close_timeout=SHORT_STEP,
                heartbeat_timeout=self._short_heartbeat,
                retry_policy=BOOKKEEPING_RETRY,
            )
        return await self._finish(result)

    async def _pipeline(self, params: PipelineInput, lease: LeaseInfo) -> PipelineResult:
        tenant = params.tenant_id
        self._step = "checking preconditions"
        pre = await workflow.execute_activity(
            ActivityName.CHECK_PRECONDITIONS,
            PreconditionsInput(tenant_id=tenant, now=workflow.now()),
            result_type=PreconditionsResult,
            start_to_close_timeout=SHORT_STEP,
            heartbeat_timeout=self._short_heartbeat,
            retry_policy=PIPELINE_RETRY,
        )
        if pre.blocked_by is not None:
            return PipelineResult(tenant_id=tenant, outcome=pre.blocked_by, detail=pre.detail)

        self._step = "analysing drift"
        drift = await workflow.execute_activity(
            ActivityName.ANALYZE_DRIFT,
            DriftInput(
                tenant_id=tenant,
                reference_season=params.reference_season,
                current_season=params.current_season,
            ),
            result_type=DriftOutput,
            task_queue=params.drift_task_queue,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=self._step_heartbeat,
            retry_policy=PIPELINE_RETRY,
        )
        found = {
            "drift_report_id": drift.report_id,
            "drift_verdict": drift.verdict,
            "drift_features": drift.features,
        }
        if drift.verdict != "DRIFT" or drift.current_season is None:
            outcome = (
                PipelineOutcome.NO_DRIFT
                if drift.verdict == "NO_DRIFT"
                else PipelineOutcome.INSUFFICIENT_DATA
            )
            return PipelineResult(tenant_id=tenant, outcome=outcome, detail=drift.detail, **found)

        run_id = workflow.uuid4()
        self._check_lease()
        self._step = "snapshotting the training data"
        snapshot = await workflow.execute_activity(
            ActivityName.SNAPSHOT_DATASET,
            SnapshotInput(tenant_id=tenant, training_run_id=run_id, season=drift.current_season),
            result_type=SnapshotOutput,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=self._step_heartbeat,
            retry_policy=PIPELINE_RETRY,
        )
        train = TrainInput(
            tenant_id=tenant,
            training_run_id=run_id,
            workflow_id=workflow.info().workflow_id,
            fence=lease.fence,
            model_name=params.model_name,
            dataset_uri=snapshot.dataset_uri,
            dataset_sha256=snapshot.dataset_sha256,
        )
        self._training_run_id = run_id
        self._check_lease()
        self._step = "training"
        training = await self._train(
            train, heartbeat_timeout=timedelta(seconds=params.training_heartbeat_seconds)
        )

        self._check_lease()
        self._step = "registering the model"
        registered = await workflow.execute_activity(
            ActivityName.REGISTER_MODEL,
            RegisterInput(
                tenant_id=tenant,
                training_run_id=run_id,
                model_name=params.model_name,
                artifact_uri=training.artifact_uri,
                artifact_sha256=training.artifact_sha256,
                dataset_uri=snapshot.dataset_uri,
                dataset_sha256=snapshot.dataset_sha256,
                drift_report_id=drift.report_id,
                metrics=training.metrics,
            ),
            result_type=RegisterOutput,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=self._step_heartbeat,
            retry_policy=PIPELINE_RETRY,
        )
        self._check_lease()
        self._step = "auditing for bias"
        audit = await workflow.execute_activity(
            ActivityName.AUDIT_MODEL,
            AuditInput(
                tenant_id=tenant,
                model_version_id=registered.model_version_id,
                season=drift.current_season,
            ),
            result_type=AuditOutput,
            start_to_close_timeout=timedelta(minutes=30),
            heartbeat_timeout=self._step_heartbeat,
            retry_policy=PIPELINE_RETRY,
        )
        self._check_lease()
        self._step = "promoting to shadow"
        await workflow.execute_activity(
            ActivityName.PROMOTE_TO_SHADOW,
            PromoteInput(tenant_id=tenant, model_version_id=registered.model_version_id),
            start_to_close_timeout=SHORT_STEP,
            heartbeat_timeout=self._short_heartbeat,
            retry_policy=PIPELINE_RETRY,
        )
        if workflow.patched(START_EVALUATION_PATCH):
            self._check_lease()
            await self._start_evaluation(
                tenant, registered.model_version_id, params.canary_dwell_seconds
            )
        return PipelineResult(
            tenant_id=tenant,
            outcome=PipelineOutcome.SUCCEEDED_SHADOW,
            detail=audit.detail,
            training_run_id=run_id,
            model_version_id=registered.model_version_id,
            artifact_sha256=registered.artifact_sha256,
            **found,
        )

    async def _dead_letter(self, params: PipelineInput, error: ActivityError) -> PipelineResult:
        """Write the dead letter of a step that gave up. Bounded (BOUNDED_DEAD_LETTER_PATCH):
        a dead letter that cannot be written either still ends the run FAILED_DEAD_LETTERED,
        without a letter id and saying why."""
        info = workflow.info()
        self._step = "dead-lettering"
        bounded = workflow.patched(BOUNDED_DEAD_LETTER_PATCH)
        detail = failure_message(error)
        try:
            letter = await workflow.execute_activity(
                ActivityName.DEAD_LETTER,
                DeadLetterInput(
                    tenant_id=params.tenant_id,
                    workflow_id=info.workflow_id,
                    error=detail,
                    attempts=attempts_made(error),
                    training_run_id=self._training_run_id,
                ),
                result_type=DeadLetterOutput,
                start_to_close_timeout=SHORT_STEP,
                heartbeat_timeout=self._short_heartbeat,
                retry_policy=DEAD_LETTER_RETRY if bounded else BOOKKEEPING_RETRY,
            )
        except ActivityError as unwritten:
            if not bounded:
                raise
            return PipelineResult(
                tenant_id=params.tenant_id,
                outcome=PipelineOutcome.FAILED_DEAD_LETTERED,
                detail=f"{detail}; the dead letter could not be written:"
                f" {failure_message(unwritten)}",
                training_run_id=self._training_run_id,
            )
        return PipelineResult(
            tenant_id=params.tenant_id,
            outcome=PipelineOutcome.FAILED_DEAD_LETTERED,
            detail=detail,
            training_run_id=self._training_run_id,
            dead_letter_id=letter.dead_letter_id,
        )

    async def _cancel_training(self, tenant: UUID, *, reason: str) -> None:
        """The pipeline is being cancelled: stop the training step (and wait until it has),
        then cancel the run's job and mark the run CANCELLED, so nothing keeps the tenant
        blocked. Nothing to do before training began."""
        if self._training_run_id is None:
            return
        self._step = "cancelling the training run"
        training = self._training
        if training is not None and not training.done():
            training.cancel()
            with contextlib.suppress(ActivityError, asyncio.CancelledError):
                await training  # it ends cancelled; the cleanup below is what matters
        await workflow.execute_activity(
            ActivityName.CANCEL_TRAINING,
            CancelTrainingInput(
                tenant_id=tenant,
                training_run_id=self._training_run_id,
                reason=reason,
            ),
            start_to_close_timeout=SHORT_STEP,
            heartbeat_timeout=self._short_heartbeat,
            retry_policy=BOOKKEEPING_RETRY,
        )

    async def _start_evaluation(
        self, tenant: UUID, model_version_id: UUID, canary_dwell_seconds: float | None
    ) -> None:
        """Start the version's ShadowEvaluation as a detached child: it outlives this run
        (ParentClosePolicy.ABANDON), and its deterministic id makes a second start a no-op;
        the evaluation's canary dwell is the run's when given (older runs have none)."""
        self._step = "starting the shadow evaluation"
        evaluation = EvaluationInput(tenant_id=tenant, model_version_id=model_version_id)
        if canary_dwell_seconds is not None:
            dwell = timedelta(seconds=canary_dwell_seconds)
            evaluation = evaluation.model_copy(update={"canary_dwell": dwell})
        try:
            await workflow.start_child_workflow(
                SHADOW_EVALUATION_WORKFLOW,
                evaluation,
                id=shadow_evaluation_workflow_id(model_version_id),
                parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            )
        except WorkflowAlreadyStartedError:
            workflow.logger.info("the shadow evaluation of %s is already running", model_version_id)

    async def _train(self, train: TrainInput, *, heartbeat_timeout: timedelta) -> TrainedModel:
        """Run the training step; a verified SUCCEEDED callback short-cuts its polling."""
        handle = workflow.start_activity(
            ActivityName.TRAIN_MODEL,
            train,
            result_type=TrainedModel,
            start_to_close_timeout=TRAINING_TIMEOUT,
            heartbeat_timeout=heartbeat_timeout,
            retry_policy=PIPELINE_RETRY,
            # On a callback short-cut, wait until the polling step has really stopped.
            cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        )
        self._training = handle
        await workflow.wait_condition(
            lambda: handle.done() or self._called_back() is not None or self._lease_lost is not None
        )
        if handle.done():
            trained: TrainedModel = handle.result()
            return trained
        if self._lease_lost is not None and self._called_back() is None:
            raise LeaseLost(self._lease_lost)  # the cleanup cancels the training step
        handle.cancel()
        try:
            await handle
        except ActivityError as error:
            if not isinstance(error.cause, CancelledError):
                raise
        called_back = self._called_back()
        if called_back is None:  # unreachable: the wait above ended on the callback
            raise ApplicationError("training callback vanished", non_retryable=True)
        return called_back

    def _called_back(self) -> TrainedModel | None:
        callback = self._callback
        if callback is None or self._training_run_id is None:
            return None
        if callback.training_run_id not in (None, self._training_run_id):
            return None  # a late callback of an earlier run of this workflow id
        return callback.trained()

    def _check_lease(self) -> None:
        """Stop before the next write once the lease is lost (LEASE_GUARD_PATCH)."""
        if self._lease_lost is not None:
            raise LeaseLost(self._lease_lost)

    async def _keep_lease(self, lease: LeaseInfo, every: timedelta) -> None:
        while True:
            await workflow.sleep(every)
            try:
                renewed = await workflow.execute_activity(
                    ActivityName.RENEW_LOCK,
                    lease,
                    result_type=bool,
                    start_to_close_timeout=SHORT_STEP,
                    heartbeat_timeout=self._short_heartbeat,
                    retry_policy=PIPELINE_RETRY,
                )
            except ActivityError as error:
                if not self._guarded:
                    raise
                self._lease_lost = (
                    f"the tenant lease (fence {lease.fence}) could not be renewed:"
                    f" {failure_message(error)}"
                )
                workflow.logger.warning("%s", self._lease_lost)
                return
            if not renewed:
                # The fencing token keeps a lost lease from writing; say so in the history.
                workflow.logger.warning("tenant lock lease %s was lost", lease.fence)
                if self._guarded:
                    self._lease_lost = (
                        f"the tenant lease (fence {lease.fence}) was lost: it expired or"
                        " another holder took it"
                    )
                return

    async def _finish(self, result: PipelineResult) -> PipelineResult:
        self._step = "recording the outcome"
        await workflow.execute_activity(
            ActivityName.RECORD_OUTCOME,
            OutcomeInput(workflow_id=workflow.info().workflow_id, result=result),
            start_to_close_timeout=SHORT_STEP,
            heartbeat_timeout=self._short_heartbeat,
            retry_policy=BOOKKEEPING_RETRY,
        )
        if workflow.patched(CHECKPOINT_PATCH):
            await self._checkpoint(result.tenant_id)
        self._step = "finished"
        self._result = result
        return result

    async def _checkpoint(self, tenant: UUID) -> None:
        """Sign the audit chain's head, outcome row included, into the WORM bucket. The outcome
        is already recorded, so a checkpoint that cannot be written (a broken chain is refused
        for good; S3 down past the bounded retries) is logged and leaves the result as it is:
        the missing checkpoint is what ``rai db verify-chain`` and ``rai audit checkpoint``
        then report and repair."""
        self._step = "checkpointing the audit chain"
        try:
            await workflow.execute_activity(
                ActivityName.CHECKPOINT_CHAIN,
                CheckpointInput(tenant_id=tenant),
                start_to_close_timeout=SHORT_STEP,
                heartbeat_timeout=self._short_heartbeat,
                retry_policy=PIPELINE_RETRY,
            )
        except ActivityError as error:
            workflow.logger.warning(
                "no audit-chain checkpoint for tenant %s: %s", tenant, failure_message(error)
            )
