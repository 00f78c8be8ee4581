"""Composition root for per-tenant retraining schedules (M32): ``rai schedule create | list |
delete``.

One Temporal Schedule per tenant, id ``retrain-schedule/{tenant_id}``, whose action starts
``RetrainingPipeline`` with ``trigger="schedule"`` on the training queue. Temporal names each
scheduled run ``retrain/{tenant_id}-<scheduled time>`` (it appends the time to the action's
workflow id), so a scheduled run and a manual ``rai pipeline start`` (``retrain/{tenant_id}``)
do not collide on the workflow id; what keeps them from running concurrently is the pipeline's
per-tenant Redis lease (the later one ends SKIPPED_LOCKED) and, once a training run exists, the
database's one-active-run index (SKIPPED_ACTIVE_RUN). Between scheduled runs the overlap policy
SKIP does it: a tick while the previous scheduled run still runs starts nothing. A tick missed
while Temporal was down is caught up within one interval; older ones are dropped (the next
regular run covers them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)
from temporalio.service import RPCError, RPCStatusCode

from domain.pipeline import PipelineInput, pipeline_workflow_id
from settings import Settings
from workflows.retrain import RetrainingPipeline

SCHEDULE_ID_PREFIX = "retrain-schedule/"
MINIMUM_INTERVAL = timedelta(minutes=1)
_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_INTERVAL = re.compile(r"(?:\d+[dhms])+")


class IntervalError(ValueError):
    """Text that is not an interval this command accepts."""


class ScheduleExistsError(Exception):
    """The tenant already has a retraining schedule."""


class ScheduleNotFoundError(Exception):
    """The tenant has no retraining schedule."""


def schedule_id(tenant_id: UUID) -> str:
    return f"{SCHEDULE_ID_PREFIX}{tenant_id}"


def parse_interval(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``1h30m``: whole numbers of days, hours, minutes, seconds, at
    least one minute."""
    compact = text.strip().lower()
    if not _INTERVAL.fullmatch(compact):
        raise IntervalError(
            f"not an interval: {text!r} (use a number and a unit d/h/m/s, e.g. 30m, 24h, 7d)"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    interval = timedelta(seconds=seconds)
    if interval < MINIMUM_INTERVAL:
        raise IntervalError(f"interval {text!r} is shorter than the minimum of 1m")
    return interval


def format_interval(interval: timedelta) -> str:
    """The shortest spelling :func:`parse_interval` reads back (``1d``, ``1h30m``)."""
    remaining = int(interval.total_seconds())
    if remaining <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)


def schedule_ui_link(settings: Settings, tenant_id: UUID) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    return f"{base}/namespaces/{settings.temporal_namespace}/schedules/{schedule_id(tenant_id)}"


@dataclass(frozen=True)
class ScheduleSummary:
    schedule_id: str
    tenant_id: UUID | None
    intervals: tuple[timedelta, ...]
    overlap: str
    paused: bool
    workflow_id: str | None
    task_queue: str | None
    next_runs: tuple[datetime, ...]
    recent_runs: tuple[datetime, ...]


async def create_retrain_schedule(
    client: Client, settings: Settings, tenant_id: UUID, every: timedelta
) -> ScheduleSummary:
    """The tenant's schedule; ScheduleExistsError if it has one."""
    try:
        handle = await client.create_schedule(
            schedule_id(tenant_id),
            Schedule(
                action=ScheduleActionStartWorkflow(
                    RetrainingPipeline.run,
                    PipelineInput(
                        tenant_id=tenant_id,
                        trigger="schedule",
                        drift_task_queue=settings.drift_task_queue,
                    ),
                    id=pipeline_workflow_id(tenant_id),
                    task_queue=settings.training_task_queue,
                ),
                spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
                policy=SchedulePolicy(
                    overlap=ScheduleOverlapPolicy.SKIP,
                    catchup_window=max(every, timedelta(minutes=1)),
                ),
            ),
            memo={"tenant_id": str(tenant_id)},
        )
    except ScheduleAlreadyRunningError as exc:
        raise ScheduleExistsError(
            f"tenant {tenant_id} already has a retraining schedule ({schedule_id(tenant_id)});"
            " delete it first"
        ) from exc
    found = await _describe(client, handle.id)
    if found is None:  # deleted between create and describe by someone else
        raise ScheduleNotFoundError(f"schedule {handle.id} vanished right after its creation")
    return found


async def list_retrain_schedules(
    client: Client, tenant_id: UUID | None = None
) -> list[ScheduleSummary]:
    """Every tenant's retraining schedule (or one tenant's), described in full. The listing
    comes from Temporal's visibility store, which may lag a create or delete by a moment."""
    wanted = schedule_id(tenant_id) if tenant_id else None
    ids = [
        listed.id
        async for listed in await client.list_schedules()
        if listed.id.startswith(SCHEDULE_ID_PREFIX) and (wanted is None or listed.id == wanted)
    ]
    summaries = []
    for found_id in sorted(ids):
        summary = await _describe(client, found_id)
        if summary is not None:
            summaries.append(summary)
    return summaries


async def delete_retrain_schedule(client: Client, tenant_id: UUID) -> None:
    """Delete the tenant's schedule (a run it already started keeps running)."""
    try:
        await client.get_schedule_handle(schedule_id(tenant_id)).delete()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ScheduleNotFoundError(
                f"tenant {tenant_id} has no retraining schedule ({schedule_id(tenant_id)})"
            ) from exc
        raise


async def _describe(client: Client, found_id: str) -> ScheduleSummary | None:
    try:
        description = await client.get_schedule_handle(found_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
    schedule = description.schedule
    action = schedule.action
    started = action if isinstance(action, ScheduleActionStartWorkflow) else None
    try:
        tenant: UUID | None = UUID(found_id.removeprefix(SCHEDULE_ID_PREFIX))
    except ValueError:
        tenant = None
    return ScheduleSummary(
        schedule_id=found_id,
        tenant_id=tenant,
        intervals=tuple(spec.every for spec in schedule.spec.intervals),
        overlap=schedule.policy.overlap.name,
        paused=schedule.state.paused,
        workflow_id=started.id if started else None,
        task_queue=started.task_queue if started else None,
        next_runs=tuple(description.info.next_action_times),
        recent_runs=tuple(result.scheduled_at for result in description.info.recent_actions),
    )
