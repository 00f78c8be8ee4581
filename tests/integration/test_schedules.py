"""Per-tenant retraining schedules (M32) on the real Temporal dev server: the functions and the
``rai schedule`` commands."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from cli import schedule_commands
from cli.errors import CommandError
from domain.pipeline import PipelineInput
from domain.schedules import schedule_id
from settings import Settings
from starter import (
    ScheduleChange,
    ScheduleExistsError,
    ScheduleNotFoundError,
    ScheduleSummary,
    apply_retrain_schedule,
    create_retrain_schedule,
    delete_retrain_schedule,
    list_retrain_schedules,
    pipeline_status,
    workflow_ui_link,
)
from tests.polling import wait_until

pytestmark = pytest.mark.integration

VISIBILITY_WAIT = 15.0  # seconds the listing may lag a create or delete


@pytest.fixture
def settings(temporal: WorkflowEnvironment) -> Settings:
    return Settings(
        temporal_address=temporal.client.service_client.config.target_host,
        training_task_queue=f"training-{uuid.uuid4()}",
        drift_task_queue=f"drift-{uuid.uuid4()}",
    )


async def listed(client: Client, tenant: UUID, *, present: bool) -> list[ScheduleSummary]:
    """The tenant's listing once it shows (or no longer shows) the schedule."""
    return await wait_until(
        lambda: list_retrain_schedules(client, tenant),
        lambda found: bool(found) == present,
        within=VISIBILITY_WAIT,
        every=0.2,
        failure=f"the listing of tenant {tenant} {'never showed' if present else 'kept'} "
        "its schedule",
    )


async def test_create_list_delete(temporal: WorkflowEnvironment, settings: Settings) -> None:
    client = temporal.client
    tenant = uuid4()
    created = await create_retrain_schedule(client, settings, tenant, timedelta(hours=24))
    assert created.schedule_id == f"retrain-schedule/{tenant}"
    assert created.intervals == (timedelta(hours=24),)
    assert created.overlap == "SKIP"
    assert created.workflow_id == f"retrain/{tenant}"
    assert created.task_queue == settings.training_task_queue
    assert created.next_runs
    assert not created.paused

    [summary] = await listed(client, tenant, present=True)
    assert (summary.schedule_id, summary.intervals, summary.overlap, summary.tenant_id) == (
        schedule_id(tenant),
        (timedelta(hours=24),),
        "SKIP",
        tenant,
    )
    with pytest.raises(ScheduleExistsError, match="already has a retraining schedule"):
        await create_retrain_schedule(client, settings, tenant, timedelta(hours=1))

    await delete_retrain_schedule(client, tenant)
    assert await listed(client, tenant, present=False) == []
    with pytest.raises(ScheduleNotFoundError, match="has no retraining schedule"):
        await delete_retrain_schedule(client, tenant)


async def test_a_scheduled_run_starts_the_pipeline_with_a_schedule_trigger(
    temporal: WorkflowEnvironment, settings: Settings
) -> None:
    client = temporal.client
    tenant = uuid4()
    await create_retrain_schedule(client, settings, tenant, timedelta(days=7))
    try:
        await client.get_schedule_handle(schedule_id(tenant)).trigger()
        description = await wait_until(
            client.get_schedule_handle(schedule_id(tenant)).describe,
            lambda description: bool(description.info.recent_actions),
            within=VISIBILITY_WAIT,
            every=0.2,
            failure="the trigger started nothing",
            shown=lambda description: f"{description.info.num_actions} actions",
        )
        started = description.info.recent_actions[0].action
        assert isinstance(started, ScheduleActionExecutionStartWorkflow)
        # Temporal appends the scheduled time to the action's id: retrain/{tenant}-<time>.
        assert started.workflow_id.startswith(f"retrain/{tenant}-")
        run = client.get_workflow_handle(started.workflow_id, run_id=started.first_execution_run_id)
        workflow = await run.describe()
        assert (workflow.workflow_type, workflow.task_queue) == (
            "RetrainingPipeline",
            settings.training_task_queue,
        )
        history = await run.fetch_history()
        first = history.events[0]
        assert first.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
        [params] = await pydantic_data_converter.decode(
            first.workflow_execution_started_event_attributes.input.payloads, [PipelineInput]
        )
        assert params == PipelineInput(
            tenant_id=tenant, trigger="schedule", drift_task_queue=settings.drift_task_queue
        )
        # Issue 11, item 9: `rai pipeline status` shows the scheduled run, with its link.
        status = await wait_until(
            lambda: pipeline_status(client, settings, tenant),
            lambda status: status.workflow_id == started.workflow_id,
            within=VISIBILITY_WAIT,
            every=0.2,
            failure="pipeline status never showed the scheduled run",
            shown=lambda status: status.workflow_id,
        )
        assert (status.run_id, status.status) == (started.first_execution_run_id, "RUNNING")
        assert status.ui_link == workflow_ui_link(settings, started.workflow_id, status.run_id)
        await run.terminate("test over: no worker polls this queue")
    finally:
        await delete_retrain_schedule(client, tenant)


async def test_apply_creates_then_changes_only_what_differs(
    temporal: WorkflowEnvironment, settings: Settings
) -> None:
    client = temporal.client
    tenant = uuid4()
    first = await apply_retrain_schedule(client, settings, tenant, timedelta(hours=24))
    try:
        assert first.change is ScheduleChange.CREATED
        assert first.schedule.intervals == (timedelta(hours=24),)
        same = await apply_retrain_schedule(client, settings, tenant, timedelta(hours=24))
        assert same.change is ScheduleChange.UNCHANGED
        assert same.schedule.intervals == (timedelta(hours=24),)

        await client.get_schedule_handle(schedule_id(tenant)).pause(note="operator")
        faster = await apply_retrain_schedule(client, settings, tenant, timedelta(hours=6))
        assert faster.change is ScheduleChange.UPDATED
        assert (faster.schedule.intervals, faster.schedule.paused) == (
            (timedelta(hours=6),),
            True,  # an operator's pause survives a re-apply
        )
        moved = settings.model_copy(update={"training_task_queue": f"training-{uuid.uuid4()}"})
        requeued = await apply_retrain_schedule(client, moved, tenant, timedelta(hours=6))
        assert requeued.change is ScheduleChange.UPDATED
        assert requeued.schedule.task_queue == moved.training_task_queue
        assert (
            await apply_retrain_schedule(client, moved, tenant, timedelta(hours=6))
        ).change is ScheduleChange.UNCHANGED
        description = await client.get_schedule_handle(schedule_id(tenant)).describe()
        assert description.schedule.policy.catchup_window == timedelta(hours=6)
    finally:
        await delete_retrain_schedule(client, tenant)


async def rai_schedule(settings: Settings, *argv: str) -> int:
    """Parse ``rai schedule ARGV`` and run its handler off the event loop, as the command
    would (handlers call asyncio.run)."""
    parser = argparse.ArgumentParser(prog="rai")
    schedule_commands.register(parser.add_subparsers(dest="group", required=True))
    args = parser.parse_args(["schedule", *argv])
    code: int = await asyncio.to_thread(args.handler, args, settings)
    return code


async def test_the_schedule_commands(
    temporal: WorkflowEnvironment, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    tenant = uuid4()
    assert await rai_schedule(settings, "create", "--tenant", str(tenant), "--every", "24h") == 0
    out = capsys.readouterr().out
    assert f"created retrain-schedule/{tenant}" in out
    assert f"retrain-schedule/{tenant}  every 1d  overlap SKIP" in out
    assert "    next   " in out
    assert f"/schedules/retrain-schedule/{tenant}" in out

    await listed(temporal.client, tenant, present=True)
    assert await rai_schedule(settings, "list", "--tenant", str(tenant)) == 0
    out = capsys.readouterr().out
    assert f"retrain-schedule/{tenant}  every 1d  overlap SKIP" in out
    assert f"starts retrain/{tenant} on {settings.training_task_queue}" in out
    assert out.rstrip().endswith("1 schedule(s)")

    with pytest.raises(CommandError, match="already has a retraining schedule"):
        await rai_schedule(settings, "create", "--tenant", str(tenant), "--every", "1h")
    assert await rai_schedule(settings, "apply", "--tenant", str(tenant), "--every", "1h") == 0
    out = capsys.readouterr().out
    assert f"updated retrain-schedule/{tenant}" in out
    assert f"retrain-schedule/{tenant}  every 1h  overlap SKIP" in out
    assert await rai_schedule(settings, "delete", "--tenant", str(tenant)) == 0
    assert capsys.readouterr().out == f"deleted retrain-schedule/{tenant}\n"
    with pytest.raises(CommandError, match="has no retraining schedule"):
        await rai_schedule(settings, "delete", "--tenant", str(tenant))


@pytest.mark.parametrize("every", ["24x", "soon", "30s"])
async def test_a_bad_interval_is_a_one_line_error(settings: Settings, every: str) -> None:
    with pytest.raises(CommandError) as refused:
        await rai_schedule(settings, "create", "--tenant", str(uuid4()), "--every", every)
    message = str(refused.value)
    assert message.startswith("--every: ")
    assert "\n" not in message
