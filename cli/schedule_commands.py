"""``rai schedule create | list | delete``: per-tenant retraining schedules (M32)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio.client import Client

from cli.common import parse_tenant
from cli.errors import CommandError
from scheduling import (
    IntervalError,
    ScheduleExistsError,
    ScheduleNotFoundError,
    ScheduleSummary,
    create_retrain_schedule,
    delete_retrain_schedule,
    format_interval,
    list_retrain_schedules,
    parse_interval,
    schedule_id,
    schedule_ui_link,
)
from settings import Settings
from starter import connect_temporal

T = TypeVar("T")
NEXT_RUNS_SHOWN = 3


def register(groups: Any) -> None:
    schedule = groups.add_parser("schedule", help="per-tenant retraining schedules")
    commands = schedule.add_subparsers(dest="schedule_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "create", help="run the tenant's RetrainingPipeline every INTERVAL (overlap: skip)"
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--every", required=True, metavar="INTERVAL", help="e.g. 30m, 24h, 7d")
    p.set_defaults(handler=run_create)
    p = commands.add_parser("list", help="retraining schedules with their next runs")
    p.add_argument("--tenant", type=parse_tenant, help="only this tenant's")
    p.set_defaults(handler=run_list)
    p = commands.add_parser("delete", help="delete the tenant's retraining schedule")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.set_defaults(handler=run_delete)


def with_temporal(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    async def connected() -> T:
        try:
            client = await connect_temporal(settings)
        except RuntimeError as exc:  # temporalio raises RuntimeError when it cannot connect
            raise CommandError(
                f"cannot reach Temporal at {settings.temporal_address}: {exc}"
            ) from exc
        return await work(client)

    return asyncio.run(connected())


def print_schedule(summary: ScheduleSummary) -> None:
    every = ", ".join(format_interval(interval) for interval in summary.intervals) or "-"
    state = "  PAUSED" if summary.paused else ""
    print(f"{summary.schedule_id}  every {every}  overlap {summary.overlap}{state}")
    print(f"    starts {summary.workflow_id} on {summary.task_queue}")
    if summary.next_runs:
        runs = ", ".join(f"{run:%Y-%m-%d %H:%M:%S %Z}" for run in summary.next_runs)
        print(f"    next   {runs}")
    if summary.recent_runs:
        print(f"    last   {summary.recent_runs[-1]:%Y-%m-%d %H:%M:%S %Z}")


def run_create(args: argparse.Namespace, settings: Settings) -> int:
    try:
        every = parse_interval(args.every)
    except IntervalError as exc:
        raise CommandError(f"--every: {exc}") from exc

    async def create(client: Client) -> ScheduleSummary:
        try:
            return await create_retrain_schedule(client, settings, args.tenant, every)
        except ScheduleExistsError as exc:
            raise CommandError(str(exc)) from exc

    summary = with_temporal(settings, create)
    print(f"created {schedule_id(args.tenant)}")
    print_schedule(summary)
    print(f"temporal ui {schedule_ui_link(settings, args.tenant)}")
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing(client: Client) -> list[ScheduleSummary]:
        return await list_retrain_schedules(client, args.tenant)

    summaries = with_temporal(settings, listing)
    for summary in summaries:
        print_schedule(summary)
    print(f"{len(summaries)} schedule(s)")
    return 0


def run_delete(args: argparse.Namespace, settings: Settings) -> int:
    async def delete(client: Client) -> None:
        try:
            await delete_retrain_schedule(client, args.tenant)
        except ScheduleNotFoundError as exc:
            raise CommandError(str(exc)) from exc

    with_temporal(settings, delete)
    print(f"deleted {schedule_id(args.tenant)}")
    return 0
