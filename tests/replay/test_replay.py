"""The determinism guard: histories recorded from real runs (scripts/record_histories.py) replay
on the current workflow code. A change that would break running workflows (a new command
without ``workflow.patched``, a reordered step) fails here, in ``make test``, not in production.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from domain.pipeline import PipelineInput, PipelineOutcome, PipelineResult
from workflows.promotion import ShadowEvaluation
from workflows.retrain import RetrainingPipeline

pytestmark = pytest.mark.unit

HISTORIES = Path(__file__).parent / "histories"
SCENARIOS = (
    "pipeline_success",
    "pipeline_dead_letter",
    "pipeline_cancelled",
    "evaluation_cancelled",
    "evaluation_approved",
)


def load(scenario: str) -> WorkflowHistory:
    document = json.loads((HISTORIES / f"{scenario}.json").read_text(encoding="utf-8"))
    return WorkflowHistory.from_json(document["workflow_id"], document["history"])


def test_every_scenario_is_recorded() -> None:
    assert sorted(path.stem for path in HISTORIES.glob("*.json")) == sorted(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
async def test_the_recorded_history_replays(scenario: str) -> None:
    history = load(scenario)
    assert len(history.events) > 5
    replayer = Replayer(
        workflows=[RetrainingPipeline, ShadowEvaluation], data_converter=pydantic_data_converter
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None


@workflow.defn(name="RetrainingPipeline")
class PipelineThatWaitsFirst:
    """What a careless edit looks like: a timer before the first step, no ``patched``."""

    @workflow.run
    async def run(self, params: PipelineInput) -> PipelineResult:
        await workflow.sleep(timedelta(seconds=1))
        return PipelineResult(tenant_id=params.tenant_id, outcome=PipelineOutcome.NO_DRIFT)


async def test_a_changed_workflow_fails_the_replay() -> None:
    replayer = Replayer(
        workflows=[PipelineThatWaitsFirst],
        data_converter=pydantic_data_converter,
        workflow_runner=UnsandboxedWorkflowRunner(),
    )
    with pytest.raises(NondeterminismError):
        await replayer.replay_workflow(load("pipeline_success"))


@pytest.mark.parametrize(
    "scenario", ["pipeline_success", "pipeline_dead_letter", "pipeline_cancelled"]
)
def test_every_pipeline_step_has_a_heartbeat_timeout(scenario: str) -> None:
    """A worker killed in any step is noticed at the step's heartbeat timeout (seconds), not at
    its start-to-close timeout (minutes to hours): every activity the recorded pipeline runs
    scheduled has one (issue 13, scenario 2)."""
    scheduled = [
        event.activity_task_scheduled_event_attributes
        for event in load(scenario).events
        if event.HasField("activity_task_scheduled_event_attributes")
    ]
    assert scheduled
    without = sorted(
        {
            a.activity_type.name
            for a in scheduled
            if a.heartbeat_timeout.ToTimedelta() <= timedelta(0)
        }
    )
    assert without == []
    assert max(a.heartbeat_timeout.ToTimedelta() for a in scheduled) <= timedelta(seconds=10)
