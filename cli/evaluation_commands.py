"""``rai evaluation start | status``: the SPRT shadow evaluation of a SHADOW model version
(M24), run by the ``ShadowEvaluation`` workflow."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from cli.common import app_database, parse_model_id, parse_tenant, temporal
from cli.errors import CommandError, NotFound
from cli.output import add_json_flag, print_json
from domain.promotion import DEFAULT_CANARY_DWELL, DEFAULT_CHECK_INTERVAL, EvaluationProgress
from domain.schedules import IntervalError, format_interval, parse_interval
from services.promotion import list_model_versions
from settings import Settings
from starter import (
    EvaluationStarted,
    EvaluationStatus,
    shadow_evaluation_status,
    start_shadow_evaluation,
)


def register(groups: Any) -> None:
    evaluation = groups.add_parser(
        "evaluation", help="shadow evaluation of a SHADOW model version (SPRT)"
    )
    commands = evaluation.add_subparsers(
        dest="evaluation_command", required=True, metavar="COMMAND"
    )
    p = commands.add_parser(
        "start",
        help="start the shadow evaluation of a model version (exit 3 if the tenant has no such"
        " version)",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--model-version", required=True, type=parse_model_id, metavar="ID")
    p.add_argument(
        "--check-every",
        default=format_interval(DEFAULT_CHECK_INTERVAL),
        metavar="INTERVAL",
        help="how often to read new paired outcomes (default: %(default)s)",
    )
    p.add_argument(
        "--canary-dwell",
        default=format_interval(DEFAULT_CANARY_DWELL),
        metavar="INTERVAL",
        help="how long the version stays in CANARY, under its own SPRT, before PRODUCTION"
        " (default: %(default)s)",
    )
    add_json_flag(p)
    p.set_defaults(handler=run_start)
    p = commands.add_parser(
        "status", help="a shadow evaluation's progress or result (exit 3 if there is none)"
    )
    p.add_argument("--model-version", required=True, type=parse_model_id, metavar="ID")
    add_json_flag(p)
    p.set_defaults(handler=run_status)


def print_progress(progress: EvaluationProgress) -> None:
    print(f"step           {progress.step}")
    print(
        f"sprt           {progress.decision.value}: {progress.wins}/{progress.observations} wins,"
        f" llr {progress.log_likelihood_ratio:.4f}"
        f" in ({progress.lower_boundary:.4f}, {progress.upper_boundary:.4f})"
    )
    print(f"champion       {progress.champion_id or 'none'}")
    print(f"checks         {progress.checks} (restarts {progress.restarts})")
    if progress.result is not None:
        print(f"outcome        {progress.result.outcome.value}")
        print(f"detail         {progress.result.detail}")


def run_start(args: argparse.Namespace, settings: Settings) -> int:
    try:
        every: timedelta = parse_interval(args.check_every)
    except IntervalError as exc:
        raise CommandError(f"--check-every: {exc}") from exc
    try:
        dwell: timedelta = parse_interval(args.canary_dwell)
    except IntervalError as exc:
        raise CommandError(f"--canary-dwell: {exc}") from exc

    async def start() -> EvaluationStarted:
        async with app_database(settings) as db:
            versions = await list_model_versions(db, args.tenant)
        if all(version.id != args.model_version for version in versions):
            raise NotFound(f"tenant {args.tenant} has no model version {args.model_version}")
        async with temporal(settings) as client:
            return await start_shadow_evaluation(
                client,
                settings,
                args.tenant,
                args.model_version,
                check_interval=every,
                canary_dwell=dwell,
            )

    started = asyncio.run(start())
    if args.json:
        print_json(
            {
                "workflow_id": started.workflow_id,
                "run_id": started.run_id,
                "check_every": format_interval(every),
                "canary_dwell": format_interval(dwell),
                "ui_link": started.ui_link,
            }
        )
        return 0
    print(f"workflow       {started.workflow_id} (run {started.run_id})")
    print(f"checks         every {format_interval(every)}")
    print(f"canary dwell   {format_interval(dwell)}")
    print(f"temporal ui    {started.ui_link}")
    return 0


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def status() -> EvaluationStatus:
        async with temporal(settings) as client:
            return await shadow_evaluation_status(client, settings, args.model_version)

    found = asyncio.run(status())
    if args.json:
        print_json(
            {
                "workflow_id": found.workflow_id,
                "run_id": found.run_id,
                "state": found.status,
                "progress": found.progress,
                "result": found.result,
                "ui_link": found.ui_link,
            }
        )
        return 0
    print(f"workflow       {found.workflow_id} (run {found.run_id})")
    print(f"state          {found.status}")
    if found.progress is not None:
        print_progress(found.progress)
    elif found.result is not None:
        print(f"outcome        {found.result.outcome.value}")
        print(f"detail         {found.result.detail}")
    elif found.status == "RUNNING":
        print("step           unknown: no worker answered (is `rai worker` running?)")
    print(f"temporal ui    {found.ui_link}")
    return 0
