"""``rai schedule create | apply | list | delete``: per-tenant retraining schedules (M32)."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from cli.common import parse_tenant, temporal
from cli.errors import CommandError
from cli.output import add_json_flag, print_json
from domain.schedules import IntervalError, format_interval, parse_interval
from settings import Settings
from starter import (
    AppliedSchedule,
    ScheduleChange,
    ScheduleSummary,
    apply_retrain_schedule,
    create_retrain_schedule,
    delete_retrain_schedule,
    list_retrain_schedules,
    schedule_ui_link,
)


def register(groups: Any) -> None:
    schedule = groups.add_parser("schedule", help="per-tenant retraining schedules")
    commands = schedule.add_subparsers(dest="schedule_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "create",
        help="run the tenant's RetrainingPipeline every INTERVAL (overlap: skip);"
        " fails if the tenant has a schedule",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--every", required=True, metavar="INTERVAL", help="e.g. 30m, 24h, 7d")
    add_json_flag(p)
    p.set_defaults(handler=run_create)
    p = commands.add_parser(
        "apply",
        help="create the tenant's schedule, or bring an existing one to INTERVAL (idempotent)",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--every", required=True, metavar="INTERVAL", help="e.g. 30m, 24h, 7d")
    add_json_flag(p)
    p.set_defaults(handler=run_apply)
    p = commands.add_parser("list", help="retraining schedules with their next runs")
    p.add_argument("--tenant", type=parse_tenant, help="only this tenant's")
    add_json_flag(p)
    p.set_defaults(handler=run_list)
    p = commands.add_parser(
        "delete", help="delete the tenant's retraining schedule (exit 3 if it has none)"
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    add_json_flag(p)
    p.set_defaults(handler=run_delete)


def _every(text: str) -> timedelta:
    try:
        return parse_interval(text)
    except IntervalError as exc:
        raise CommandError(f"--every: {exc}") from exc


def schedule_json(summary: ScheduleSummary, settings: Settings) -> dict[str, Any]:
    return {
        "schedule_id": summary.schedule_id,
        "tenant_id": summary.tenant_id,
        "intervals": [format_interval(interval) for interval in summary.intervals],
        "overlap": summary.overlap,
        "paused": summary.paused,
        "workflow_id": summary.workflow_id,
        "task_queue": summary.task_queue,
        "next_runs": summary.next_runs,
        "recent_runs": summary.recent_runs,
        "ui_link": schedule_ui_link(settings, summary.tenant_id) if summary.tenant_id else None,
    }


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


def _report(applied: AppliedSchedule, args: argparse.Namespace, settings: Settings) -> int:
    if args.json:
        print_json(
            {"change": applied.change, "schedule": schedule_json(applied.schedule, settings)}
        )
        return 0
    print(f"{applied.change.value} {applied.schedule.schedule_id}")
    print_schedule(applied.schedule)
    print(f"temporal ui {schedule_ui_link(settings, args.tenant)}")
    return 0


def run_create(args: argparse.Namespace, settings: Settings) -> int:
    every = _every(args.every)

    async def create() -> ScheduleSummary:
        async with temporal(settings) as client:
            return await create_retrain_schedule(client, settings, args.tenant, every)

    return _report(AppliedSchedule(ScheduleChange.CREATED, asyncio.run(create())), args, settings)


def run_apply(args: argparse.Namespace, settings: Settings) -> int:
    every = _every(args.every)

    async def apply() -> AppliedSchedule:
        async with temporal(settings) as client:
            return await apply_retrain_schedule(client, settings, args.tenant, every)

    return _report(asyncio.run(apply()), args, settings)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing() -> list[ScheduleSummary]:
        async with temporal(settings) as client:
            return await list_retrain_schedules(client, args.tenant)

    summaries = asyncio.run(listing())
    if args.json:
        print_json({"schedules": [schedule_json(summary, settings) for summary in summaries]})
        return 0
    for summary in summaries:
        print_schedule(summary)
    print(f"{len(summaries)} schedule(s)")
    return 0


def run_delete(args: argparse.Namespace, settings: Settings) -> int:
    async def delete() -> str:
        async with temporal(settings) as client:
            return await delete_retrain_schedule(client, args.tenant)

    deleted = asyncio.run(delete())
    if args.json:
        print_json({"schedule_id": deleted, "deleted": True})
    else:
        print(f"deleted {deleted}")
    return 0
