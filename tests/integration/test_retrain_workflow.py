"""RetrainingPipeline's logic in Temporal's time-skipping test server, with stand-in activities
registered under the real activity names (the services behind them are tested elsewhere)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from redis.asyncio import Redis
from temporalio import activity
from temporalio.client import WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from adapters.redis_mutex import Lease, TenantMutex
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
    PipelineInput,
    PipelineOutcome,
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
from domain.policies import cooldown_active
from domain.promotion import DEFAULT_CANARY_DWELL, EvaluationInput, shadow_evaluation_workflow_id
from domain.training import TrainedModel
from settings import Settings
from workflows.promotion import ShadowEvaluation
from workflows.retrain import PIPELINE_RETRY, RetrainingPipeline

pytestmark = pytest.mark.integration

LEASE_TOKEN = uuid.uuid4().hex
CANCEL_WAIT = 60  # seconds a training stand-in waits to be cancelled


@pytest.fixture
def env(time_skipping: WorkflowEnvironment) -> WorkflowEnvironment:
    """The run's time-skipping test server (tests/conftest.py)."""
    return time_skipping


@dataclass
class World:
    """What the stand-in activities do and what they saw."""

    lock_free: bool = True
    drift_verdict: str = "DRIFT"
    training_fails: bool = False
    train_waits_for_cancel: bool = False
    promote_refuses: bool = False
    checkpoint_refuses: bool = False
    dead_letter_fails: bool = False
    dead_letter_attempts: int = 0
    renewal: str = "renewed"  # or "lost" (False), or "unreachable" (the step fails)
    cancelled: list[CancelTrainingInput] = field(default_factory=list)
    rollback_at: datetime | None = None
    calls: list[str] = field(default_factory=list)
    train_attempt_times: list[datetime] = field(default_factory=list)
    dead_letters: list[DeadLetterInput] = field(default_factory=list)
    outcomes: list[PipelineResult] = field(default_factory=list)
    checkpoints: list[str] = field(default_factory=list)
    released: list[LeaseInfo] = field(default_factory=list)
    training_started: asyncio.Event = field(default_factory=asyncio.Event)
    checked_at: list[datetime] = field(default_factory=list)

    @activity.defn(name=ActivityName.ACQUIRE_LOCK)
    async def acquire(self, request: LockRequest) -> LockResult:
        self.calls.append("acquire")
        if not self.lock_free:
            return LockResult(lease=None)
        return LockResult(
            lease=LeaseInfo(
                tenant_id=request.tenant_id, token=LEASE_TOKEN, fence=7, holder=request.holder
            )
        )

    @activity.defn(name=ActivityName.RENEW_LOCK)
    async def renew(self, lease: LeaseInfo) -> bool:
        self.calls.append("renew")
        if self.renewal == "unreachable":
            raise RuntimeError("Redis is gone")
        return self.renewal == "renewed"

    @activity.defn(name=ActivityName.RELEASE_LOCK)
    async def release(self, lease: LeaseInfo) -> None:
        self.released.append(lease)

    @activity.defn(name=ActivityName.CHECK_PRECONDITIONS)
    async def preconditions(self, request: PreconditionsInput) -> PreconditionsResult:
        self.calls.append("preconditions")
        self.checked_at.append(request.now)
        if cooldown_active(self.rollback_at, request.now):
            return PreconditionsResult(
                blocked_by=PipelineOutcome.SKIPPED_COOLDOWN, detail="rolled back lately"
            )
        return PreconditionsResult()

    @activity.defn(name=ActivityName.ANALYZE_DRIFT)
    async def drift(self, request: DriftInput) -> DriftOutput:
        self.calls.append("drift")
        return DriftOutput(
            report_id=uuid4(),
            verdict=self.drift_verdict,
            reference_season="2025",
            current_season="2026",
            features={"ndvi": self.drift_verdict},
        )

    @activity.defn(name=ActivityName.SNAPSHOT_DATASET)
    async def snapshot(self, request: SnapshotInput) -> SnapshotOutput:
        self.calls.append("snapshot")
        return SnapshotOutput(dataset_uri="s3://d/s.jsonl", dataset_sha256="a" * 64, rows=10)

    @activity.defn(name=ActivityName.TRAIN_MODEL)
    async def train(self, request: TrainInput) -> TrainedModel:
        self.calls.append("train")
        self.training_started.set()
        self.train_attempt_times.append(activity.info().started_time)
        if self.training_fails:
            raise RuntimeError("the GPU caught fire")
        if self.train_waits_for_cancel:
            # until the workflow cancels us (delivered through the heartbeat), but not forever
            deadline = asyncio.get_running_loop().time() + CANCEL_WAIT
            while asyncio.get_running_loop().time() < deadline:
                activity.heartbeat()
                await asyncio.sleep(0.05)
            raise ApplicationError(
                f"the workflow did not cancel the waiting training within {CANCEL_WAIT} s",
                non_retryable=True,
            )
        return TrainedModel(artifact_uri="s3://r/m.json", artifact_sha256="b" * 64)

    @activity.defn(name=ActivityName.REGISTER_MODEL)
    async def register(self, request: RegisterInput) -> RegisterOutput:
        self.calls.append("register")
        return RegisterOutput(
            model_version_id=UUID(int=1), version=1, artifact_sha256=request.artifact_sha256
        )

    @activity.defn(name=ActivityName.AUDIT_MODEL)
    async def audit(self, request: AuditInput) -> AuditOutput:
        self.calls.append("audit")
        return AuditOutput(passed=True, detail="within bound")

    @activity.defn(name=ActivityName.PROMOTE_TO_SHADOW)
    async def promote(self, request: PromoteInput) -> None:
        self.calls.append("promote")
        if self.promote_refuses:
            raise ApplicationError(
                "signature invalid",
                activity.info().attempt,
                type="GovernanceRefusal",
                non_retryable=True,
            )

    @activity.defn(name=ActivityName.DEAD_LETTER)
    async def dead_letter(self, request: DeadLetterInput) -> DeadLetterOutput:
        if self.dead_letter_fails:
            self.dead_letter_attempts += 1
            raise RuntimeError("the database is down")
        self.dead_letters.append(request)
        return DeadLetterOutput(dead_letter_id=UUID(int=9))

    @activity.defn(name=ActivityName.RECORD_OUTCOME)
    async def record(self, request: OutcomeInput) -> None:
        self.outcomes.append(request.result)

    @activity.defn(name=ActivityName.CHECKPOINT_CHAIN)
    async def checkpoint(self, request: CheckpointInput) -> None:
        # What it checkpoints: the chain as it stands after the outcome was recorded.
        self.checkpoints.append(f"after {len(self.outcomes)} outcome(s)")
        if self.checkpoint_refuses:
            raise ApplicationError(
                "the audit chain is broken, no checkpoint written",
                activity.info().attempt,
                type="GovernanceRefusal",
                non_retryable=True,
            )

    @activity.defn(name=ActivityName.CANCEL_TRAINING)
    async def cancel_training(self, request: CancelTrainingInput) -> None:
        self.cancelled.append(request)

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.cancel_training,
            self.acquire,
            self.renew,
            self.release,
            self.preconditions,
            self.drift,
            self.snapshot,
            self.train,
            self.register,
            self.audit,
            self.promote,
            self.dead_letter,
            self.record,
            self.checkpoint,
        ]


async def run_pipeline(
    env: WorkflowEnvironment,
    world: World,
    *,
    signal: TrainingOutcome | None = None,
    lease_renewal_seconds: float = 900.0,
    canary_dwell_seconds: float | None = None,
) -> PipelineResult:
    queue, drift_queue = f"train-{uuid.uuid4()}", f"drift-{uuid.uuid4()}"
    tenant = uuid4()
    async with (
        Worker(
            env.client,
            task_queue=queue,
            # The version's evaluation runs here too, its activities unserved: a child whose
            # first workflow task is never processed holds the time-skipping server's clock
            # (seen here: a later env.sleep timed out even after the child was terminated).
            workflows=[RetrainingPipeline, ShadowEvaluation],
            activities=world.activities(),
        ),
        Worker(env.client, task_queue=drift_queue, activities=[world.drift]),
    ):
        handle: WorkflowHandle[
            RetrainingPipeline, PipelineResult
        ] = await env.client.start_workflow(
            RetrainingPipeline.run,
            PipelineInput(
                tenant_id=tenant,
                drift_task_queue=drift_queue,
                training_heartbeat_seconds=2,
                lease_renewal_seconds=lease_renewal_seconds,
                canary_dwell_seconds=canary_dwell_seconds,
            ),
            id=f"retrain/{tenant}",
            task_queue=queue,
        )
        if signal is not None:
            await world.training_started.wait()
            await handle.signal(RetrainingPipeline.training_finished, signal)
        result = await handle.result()
        progress = await handle.query(RetrainingPipeline.progress)
        assert progress.result == result
        assert progress.step == "finished"
    if result.outcome is PipelineOutcome.SUCCEEDED_SHADOW:
        # The version's shadow evaluation was started as a child that outlives the pipeline.
        assert result.model_version_id is not None
        evaluation = env.client.get_workflow_handle(
            shadow_evaluation_workflow_id(result.model_version_id)
        )
        described = await evaluation.describe()
        assert described.status is WorkflowExecutionStatus.RUNNING
        assert described.parent_id == f"retrain/{tenant}"
        assert described.workflow_type == "ShadowEvaluation"
        started = (await evaluation.fetch_history()).events[0]
        (evaluation_input,) = await env.client.data_converter.decode(
            started.workflow_execution_started_event_attributes.input.payloads, [EvaluationInput]
        )
        assert evaluation_input.canary_dwell == (
            DEFAULT_CANARY_DWELL
            if canary_dwell_seconds is None
            else timedelta(seconds=canary_dwell_seconds)
        )
        await evaluation.terminate("the pipeline test is over")
    return result


async def test_the_pipeline_gives_its_canary_dwell_to_the_evaluation_it_starts(
    env: WorkflowEnvironment,
) -> None:
    result = await run_pipeline(env, World(), canary_dwell_seconds=90.0)
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW


async def test_happy_path_ends_in_shadow(env: WorkflowEnvironment) -> None:
    world = World()
    result = await run_pipeline(env, world)
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW
    assert result.model_version_id == UUID(int=1)
    assert world.calls == [
        "acquire",
        "preconditions",
        "drift",
        "snapshot",
        "train",
        "register",
        "audit",
        "promote",
    ]
    assert len(world.released) == 1
    assert world.outcomes == [result]
    assert world.checkpoints == ["after 1 outcome(s)"]


async def test_training_that_always_fails_is_dead_lettered_after_five_attempts(
    env: WorkflowEnvironment,
) -> None:
    world = World(training_fails=True)
    result = await run_pipeline(env, world)
    assert result.outcome is PipelineOutcome.FAILED_DEAD_LETTERED
    assert world.calls.count("train") == 5
    gaps = [
        (later - earlier).total_seconds()
        for earlier, later in zip(
            world.train_attempt_times, world.train_attempt_times[1:], strict=False
        )
    ]
    assert [round(gap) for gap in gaps] == [1, 2, 4, 8]  # exponential backoff from 1 s
    [letter] = world.dead_letters
    assert letter.attempts == 5
    assert "the GPU caught fire" in letter.error
    assert letter.training_run_id == result.training_run_id is not None
    assert len(world.released) == 1
    assert result.dead_letter_id == UUID(int=9)


def test_backoff_is_capped_at_thirty_seconds() -> None:
    delays, delay = [], PIPELINE_RETRY.initial_interval.total_seconds()
    assert PIPELINE_RETRY.maximum_interval is not None
    for _ in range(8):
        delays.append(min(delay, PIPELINE_RETRY.maximum_interval.total_seconds()))
        delay *= PIPELINE_RETRY.backoff_coefficient
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert PIPELINE_RETRY.maximum_attempts == 5


async def test_a_governance_refusal_is_not_retried(env: WorkflowEnvironment) -> None:
    world = World(promote_refuses=True)
    result = await run_pipeline(env, world)
    assert result.outcome is PipelineOutcome.FAILED_DEAD_LETTERED
    assert world.calls.count("promote") == 1
    assert world.dead_letters[0].attempts == 1


async def test_a_held_lock_skips_the_run(env: WorkflowEnvironment) -> None:
    world = World(lock_free=False)
    result = await run_pipeline(env, world)
    assert result.outcome is PipelineOutcome.SKIPPED_LOCKED
    assert world.calls == ["acquire"]
    assert world.released == []
    assert world.outcomes == [result]
    assert world.checkpoints == ["after 1 outcome(s)"]  # every run ends with a checkpoint


async def test_a_refused_checkpoint_leaves_the_recorded_outcome(env: WorkflowEnvironment) -> None:
    world = World(checkpoint_refuses=True)
    result = await run_pipeline(env, world)  # also: progress says "finished"
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW
    assert world.outcomes == [result]
    assert world.checkpoints == ["after 1 outcome(s)"]  # refused for good: not retried
    assert world.dead_letters == []


@pytest.mark.parametrize(
    ("verdict", "outcome"),
    [
        ("NO_DRIFT", PipelineOutcome.NO_DRIFT),
        ("INSUFFICIENT_DATA", PipelineOutcome.INSUFFICIENT_DATA),
    ],
)
async def test_no_drift_stops_before_training(
    env: WorkflowEnvironment, verdict: str, outcome: PipelineOutcome
) -> None:
    world = World(drift_verdict=verdict)
    result = await run_pipeline(env, world)
    assert result.outcome is outcome
    assert "snapshot" not in world.calls
    assert len(world.released) == 1


async def test_cooldown_expires_after_seven_days(env: WorkflowEnvironment) -> None:
    """The workflow hands preconditions its own clock (workflow.now(), which time-skipping
    moves); the exact 7-day boundary is the domain policy's, tested in tests/unit."""
    world = World(drift_verdict="NO_DRIFT", rollback_at=await env.get_current_time())
    first = await run_pipeline(env, world)
    assert first.outcome is PipelineOutcome.SKIPPED_COOLDOWN
    await env.sleep(timedelta(days=8))
    assert (await run_pipeline(env, world)).outcome is PipelineOutcome.NO_DRIFT
    assert world.rollback_at is not None
    assert world.checked_at[-1] - world.rollback_at >= timedelta(days=8)


async def test_a_verified_callback_short_cuts_polling(env: WorkflowEnvironment) -> None:
    world = World(train_waits_for_cancel=True)
    callback = TrainingOutcome(
        status="SUCCEEDED", artifact_uri="s3://r/from-callback.json", artifact_sha256="c" * 64
    )
    result = await run_pipeline(env, world, signal=callback)
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW
    assert result.artifact_sha256 == "c" * 64


@dataclass
class LostGrant(World):
    """The lock step against the real Redis mutex, whose first answer is lost: Redis granted
    the lease, then the worker died before the activity completed (issue 11, item 2)."""

    mutex: TenantMutex | None = None
    granted: list[Lease] = field(default_factory=list)

    @activity.defn(name=ActivityName.ACQUIRE_LOCK)
    async def acquire(self, request: LockRequest) -> LockResult:
        assert self.mutex is not None
        self.calls.append("acquire")
        lease = await self.mutex.acquire(request.tenant_id, request.holder)
        if lease is None:
            return LockResult(lease=None)
        self.granted.append(lease)
        if activity.info().attempt == 1:
            raise RuntimeError("the worker died before the activity completed")
        return LockResult(
            lease=LeaseInfo(
                tenant_id=lease.tenant_id, token=lease.token, fence=lease.fence, holder=lease.holder
            )
        )


async def test_a_retried_lock_acquire_gets_its_own_lease_back(env: WorkflowEnvironment) -> None:
    redis = Redis.from_url(Settings().redis_url)
    prefix = f"rai-test:{uuid4()}:"
    try:
        world = LostGrant(mutex=TenantMutex(redis, key_prefix=prefix))
        result = await run_pipeline(env, world)
    finally:
        stale = [key async for key in redis.scan_iter(match=f"{prefix}*")]
        if stale:
            await redis.delete(*stale)
        await redis.aclose()
    assert result.outcome is PipelineOutcome.SUCCEEDED_SHADOW, result.detail
    first, retried = world.granted
    assert (retried.token, retried.fence) == (first.token, first.fence)
    assert world.calls[:3] == ["acquire", "acquire", "preconditions"]
    assert [lease.fence for lease in world.released] == [first.fence]


@pytest.mark.parametrize("renewal", ["lost", "unreachable"])
async def test_a_lost_lease_stops_the_run(env: WorkflowEnvironment, renewal: str) -> None:
    """Issue 11, item 3: the lease cannot be renewed while training runs; the pipeline stops
    before its next write (no registration), cancels the training run and says why."""
    world = World(train_waits_for_cancel=True, renewal=renewal)
    result = await run_pipeline(env, world, lease_renewal_seconds=5)
    assert result.outcome is PipelineOutcome.FAILED_LEASE_LOST, result
    assert (
        "could not be renewed" in result.detail
        if renewal == "unreachable"
        else ("was lost" in result.detail)
    )
    assert "register" not in world.calls
    assert [c.training_run_id for c in world.cancelled] == [result.training_run_id]
    assert world.outcomes == [result]
    assert len(world.released) == 1
    assert world.dead_letters == []


async def test_a_dead_letter_that_cannot_be_written_does_not_hang_the_run(
    env: WorkflowEnvironment,
) -> None:
    """Issue 11, item 5: the dead-letter step retries a bounded number of times; the run then
    ends FAILED_DEAD_LETTERED saying so, and the lease is released."""
    world = World(training_fails=True, dead_letter_fails=True)
    result = await run_pipeline(env, world)
    assert result.outcome is PipelineOutcome.FAILED_DEAD_LETTERED
    assert result.dead_letter_id is None
    assert "the dead letter could not be written" in result.detail
    assert "the GPU caught fire" in result.detail
    assert world.dead_letter_attempts == 10
    assert len(world.released) == 1
    assert world.outcomes == [result]
