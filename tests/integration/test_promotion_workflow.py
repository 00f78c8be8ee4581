"""ShadowEvaluation's logic in Temporal's time-skipping test server, with stand-in activities
registered under the real activity names (the services behind them are tested against real
Postgres in test_promotion_service.py)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from domain.model_status import ModelStatus
from domain.promotion import (
    FIRST_PRODUCTION_REASON,
    ConcludeInput,
    Conclusion,
    ConclusionStatus,
    EvaluationInput,
    EvaluationOutcome,
    EvaluationProgress,
    EvaluationResult,
    EventCursor,
    PairedOutcomes,
    PairedOutcomesRequest,
    PromotionActivityName,
    shadow_evaluation_workflow_id,
)
from domain.sprt import SprtDecision, sprt
from workflows.promotion import ShadowEvaluation

pytestmark = pytest.mark.integration

CHAMPION = UUID(int=100)
NEW_CHAMPION = UUID(int=200)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
CHECK_INTERVAL = timedelta(hours=1)


@pytest.fixture
def env(time_skipping: WorkflowEnvironment) -> WorkflowEnvironment:
    """The run's time-skipping test server (tests/conftest.py)."""
    return time_skipping


def cursor_at(index: int) -> EventCursor:
    return EventCursor(received_at=EPOCH + timedelta(seconds=index), event_id=UUID(int=index))


@dataclass
class World:
    """The paired-outcome log the stand-in reader serves, and what the workflow asked for.

    ``arrivals[k]`` are the challenger-won flags of the events that arrive just before the
    k-th read; ``champion_changes[k]`` installs a new champion before the k-th read (its
    paired events start from nothing). Event ``i`` has the cursor :func:`cursor_at(i)`."""

    arrivals: list[list[bool]] = field(default_factory=list)
    champion: UUID | None = CHAMPION
    challenger_status: ModelStatus = ModelStatus.SHADOW
    champion_changes: dict[int, UUID] = field(default_factory=dict)
    # Conclusions the stand-in promote returns before it agrees (then DONE).
    promote_script: list[Conclusion] = field(default_factory=list)
    events: list[bool] = field(default_factory=list)
    reads: list[PairedOutcomesRequest] = field(default_factory=list)
    read_times: list[datetime] = field(default_factory=list)
    promoted: list[ConcludeInput] = field(default_factory=list)
    rejected: list[ConcludeInput] = field(default_factory=list)

    @activity.defn(name=PromotionActivityName.READ_PAIRED_OUTCOMES)
    async def read(self, request: PairedOutcomesRequest) -> PairedOutcomes:
        k = len(self.reads)
        self.reads.append(request)
        self.read_times.append(activity.info().started_time)
        if k in self.champion_changes:
            self.champion, self.events = self.champion_changes[k], []
        if k < len(self.arrivals):
            self.events.extend(self.arrivals[k])
        if self.champion is None or self.challenger_status is not ModelStatus.SHADOW:
            return PairedOutcomes(
                challenger_status=self.challenger_status,
                model_name="yield",
                champion_id=self.champion,
            )
        start = 0 if request.after is None else request.after.event_id.int + 1
        batch = self.events[start : start + request.limit]
        return PairedOutcomes(
            challenger_status=self.challenger_status,
            model_name="yield",
            champion_id=self.champion,
            outcomes=batch,
            cursor=cursor_at(start + len(batch) - 1) if batch else request.after,
            more=len(batch) == request.limit,
        )

    @activity.defn(name=PromotionActivityName.PROMOTE_CHALLENGER)
    async def promote(self, request: ConcludeInput) -> Conclusion:
        self.promoted.append(request)
        if self.promote_script:
            conclusion = self.promote_script.pop(0)
            if conclusion.status is ConclusionStatus.CHAMPION_CHANGED:
                self.champion, self.events = conclusion.champion_id, []
            return conclusion
        return Conclusion(
            status=ConclusionStatus.DONE,
            detail=request.reason,
            champion_id=request.champion_id,
            archived_id=request.champion_id,
        )

    @activity.defn(name=PromotionActivityName.REJECT_CHALLENGER)
    async def reject(self, request: ConcludeInput) -> Conclusion:
        self.rejected.append(request)
        return Conclusion(
            status=ConclusionStatus.DONE, detail=request.reason, champion_id=request.champion_id
        )

    def activities(self) -> list[Callable[..., Any]]:
        return [self.read, self.promote, self.reject]


@dataclass
class Finished:
    result: EvaluationResult
    progress: EvaluationProgress  # queried at the end, while the worker still runs
    handle: WorkflowHandle[ShadowEvaluation, EvaluationResult]
    model_version_id: UUID


async def evaluate(env: WorkflowEnvironment, world: World, **overrides: Any) -> Finished:
    queue = f"promotion-{uuid.uuid4()}"
    challenger = uuid4()
    async with Worker(
        env.client, task_queue=queue, workflows=[ShadowEvaluation], activities=world.activities()
    ):
        handle: WorkflowHandle[
            ShadowEvaluation, EvaluationResult
        ] = await env.client.start_workflow(
            ShadowEvaluation.run,
            EvaluationInput(
                tenant_id=uuid4(),
                model_version_id=challenger,
                check_interval=CHECK_INTERVAL,
                **overrides,
            ),
            id=shadow_evaluation_workflow_id(challenger),
            task_queue=queue,
        )
        result = await handle.result()
        progress = await handle.query(ShadowEvaluation.progress)
    assert progress.result == result
    assert progress.step == "finished"
    return Finished(result, progress, handle, challenger)


def gaps(times: list[datetime]) -> list[timedelta]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


async def test_continue_then_accept_after_more_events(env: WorkflowEnvironment) -> None:
    # 10 wins leave the test undecided; after the timer, 25 more arrive and the 30th decides.
    world = World(arrivals=[[True] * 10, [True] * 25])
    done = await evaluate(env, world)
    result = done.result
    assert result.outcome is EvaluationOutcome.ACCEPTED
    assert (result.sprt.decision, result.sprt.wins, result.sprt.observations) == (
        SprtDecision.ACCEPT,
        30,
        30,
    )
    assert result.sprt == sprt([True] * 35)  # stops at the first crossing, as in one pass
    assert [read.after for read in world.reads] == [None, cursor_at(9)]
    [gap] = gaps(world.read_times)
    assert gap >= CHECK_INTERVAL  # the durable timer, skipped by the test server
    [promoted] = world.promoted
    assert promoted.champion_id == CHAMPION
    assert promoted.model_version_id == done.model_version_id
    assert promoted.workflow_id == f"shadow/{done.model_version_id}"
    assert promoted.sprt == result.sprt
    assert "SPRT ACCEPT: 30/30 wins" in promoted.reason
    assert world.rejected == []
    assert (result.champion_id, result.archived_id) == (CHAMPION, CHAMPION)
    progress = done.progress
    assert (progress.decision, progress.observations, progress.checks) == (
        SprtDecision.ACCEPT,
        30,
        2,
    )
    assert progress.log_likelihood_ratio >= progress.upper_boundary
    # The recorded history replays on the current code: the workflow is deterministic.
    replayer = Replayer(workflows=[ShadowEvaluation], data_converter=pydantic_data_converter)
    await replayer.replay_workflow(await done.handle.fetch_history())


async def test_reject_after_enough_losses(env: WorkflowEnvironment) -> None:
    world = World(arrivals=[[False] * 5, [False] * 20])
    result = (await evaluate(env, world)).result
    assert result.outcome is EvaluationOutcome.REJECTED
    assert (result.sprt.decision, result.sprt.wins, result.sprt.observations) == (
        SprtDecision.REJECT,
        0,
        15,
    )
    [rejected] = world.rejected
    assert rejected.champion_id == CHAMPION
    assert "SPRT REJECT" in rejected.reason
    assert world.promoted == []


async def test_continue_as_new_keeps_the_sprt_state(env: WorkflowEnvironment) -> None:
    pattern = [True, True, False, True, True, True, True, False, True, True]
    world = World(arrivals=[list(pattern) for _ in range(10)])
    done = await evaluate(env, world, checks_per_run=2)
    result = done.result
    expected = sprt([flag for arrival in world.arrivals for flag in arrival])
    assert expected.decision is SprtDecision.ACCEPT
    assert result.outcome is EvaluationOutcome.ACCEPTED
    assert result.sprt == expected  # no outcome lost or counted twice across the runs
    reads = len(world.reads)
    assert reads >= 5  # so at least two continue-as-new happened
    assert [read.after for read in world.reads] == [None] + [
        cursor_at(10 * k + 9) for k in range(reads - 1)
    ]
    description = await done.handle.describe()
    assert description.run_id != done.handle.first_execution_run_id
    progress = done.progress
    assert progress.checks == reads  # the check counter survived too
    assert progress.champion_id == CHAMPION


async def test_no_champion_makes_the_first_production_version(env: WorkflowEnvironment) -> None:
    world = World(champion=None, arrivals=[[True] * 3])
    result = (await evaluate(env, world)).result
    assert result.outcome is EvaluationOutcome.ACCEPTED
    assert result.detail == FIRST_PRODUCTION_REASON
    [promoted] = world.promoted
    assert promoted.champion_id is None
    assert promoted.reason == FIRST_PRODUCTION_REASON
    assert len(world.reads) == 1


async def test_a_new_champion_restarts_the_test(env: WorkflowEnvironment) -> None:
    # Read 0: 10 wins against CHAMPION. Read 1: the champion is now NEW_CHAMPION, so the
    # evaluation restarts; read 2 (at once) starts from the first event paired with it.
    world = World(
        arrivals=[[True] * 10, [True] * 3, [], [True] * 40],
        champion_changes={1: NEW_CHAMPION},
    )
    done = await evaluate(env, world)
    assert done.result.outcome is EvaluationOutcome.ACCEPTED
    assert [read.after for read in world.reads] == [None, cursor_at(9), None, cursor_at(2)]
    assert world.read_times[2] - world.read_times[1] < CHECK_INTERVAL  # no timer: at once
    [promoted] = world.promoted
    assert promoted.champion_id == NEW_CHAMPION
    assert promoted.sprt.observations == 30  # the 10 wins against CHAMPION do not count
    progress = done.progress
    assert progress.restarts == 1


async def test_a_champion_change_at_promotion_restarts_the_test(
    env: WorkflowEnvironment,
) -> None:
    world = World(
        arrivals=[[True] * 30, [True] * 30],
        promote_script=[
            Conclusion(
                status=ConclusionStatus.CHAMPION_CHANGED,
                detail="the PRODUCTION version changed",
                champion_id=NEW_CHAMPION,
            )
        ],
    )
    done = await evaluate(env, world)
    assert done.result.outcome is EvaluationOutcome.ACCEPTED
    assert [p.champion_id for p in world.promoted] == [CHAMPION, NEW_CHAMPION]
    assert world.reads[1].after is None


async def test_a_challenger_moved_elsewhere_is_abandoned(env: WorkflowEnvironment) -> None:
    world = World(challenger_status=ModelStatus.REJECTED)
    result = (await evaluate(env, world)).result
    assert result.outcome is EvaluationOutcome.ABANDONED
    assert "REJECTED, not SHADOW" in result.detail
    assert world.promoted == world.rejected == []


async def test_a_backlog_is_read_without_waiting(env: WorkflowEnvironment) -> None:
    world = World(arrivals=[[True] * 25, [], [], [True] * 10])
    done = await evaluate(env, world, batch_size=10)
    assert done.result.sprt.observations == 30
    assert [read.after for read in world.reads] == [
        None,
        cursor_at(9),
        cursor_at(19),
        cursor_at(24),
    ]
    assert [gap >= CHECK_INTERVAL for gap in gaps(world.read_times)] == [False, False, True]
