"""``rai worker``, ``rai pipeline start | status`` and ``rai dlq list | resolve``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from uuid import UUID

from temporalio.service import RPCError

from cli.common import open_app_database, parse_tenant, uuid_argument
from cli.errors import CommandError
from domain.pipeline import PipelineOutcome, PipelineResult
from services.errors import NotFoundError
from services.pipeline import list_dead_letters, resolve_dead_letter
from settings import Settings
from starter import PipelineAlreadyRunning, connect_temporal, pipeline_status, start_pipeline


def register(groups: Any) -> None:
    p = groups.add_parser("worker", help="run the Temporal worker (both task queues)")
    p.set_defaults(handler=run_worker_command)

    pipeline = groups.add_parser("pipeline", help="the retraining pipeline")
    commands = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    p = commands.add_parser("start", help="start RetrainingPipeline for a tenant")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    p.add_argument("--reference-season", help="default: the second most recent season")
    p.add_argument("--current-season", help="default: the most recent season")
    p.set_defaults(handler=run_start)
    p = commands.add_parser("status", help="the tenant's latest pipeline run")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.set_defaults(handler=run_status)

    dlq = groups.add_parser("dlq", help="the dead-letter store (training-queue-failed)")
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    p = commands.add_parser("list", help="unresolved dead letters of a tenant")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--all", action="store_true", help="include resolved ones")
    p.set_defaults(handler=run_dlq_list)
    p = commands.add_parser("resolve", help="mark a dead letter resolved")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("id", type=uuid_argument("dead letter id"), metavar="ID")
    p.set_defaults(handler=run_dlq_resolve)


def run_worker_command(args: argparse.Namespace, settings: Settings) -> int:
    from worker import run_worker  # the worker's imports are heavy; only this command needs them

    asyncio.run(run_worker(settings))
    return 0


def print_result(result: PipelineResult) -> None:
    print(f"outcome        {result.outcome.value}")
    if result.detail:
        print(f"detail         {result.detail}")
    if result.drift_verdict:
        print(f"drift          {result.drift_verdict} (report {result.drift_report_id})")
        for name, verdict in sorted(result.drift_features.items()):
            print(f"  {name:<12} {verdict}")
    for label, value in (
        ("training run", result.training_run_id),
        ("model version", result.model_version_id),
        ("artifact sha256", result.artifact_sha256),
        ("dead letter", result.dead_letter_id),
    ):
        if value is not None:
            print(f"{label:<14} {value}")
    if result.outcome is PipelineOutcome.SUCCEEDED_SHADOW:
        print("status         SHADOW")


def run_start(args: argparse.Namespace, settings: Settings) -> int:
    async def start() -> int:
        client = await connect_temporal(settings)
        try:
            started = await start_pipeline(
                client,
                settings,
                args.tenant,
                reference_season=args.reference_season,
                current_season=args.current_season,
            )
        except PipelineAlreadyRunning as exc:
            raise CommandError(str(exc)) from exc
        print(f"workflow       {started.workflow_id} (run {started.run_id})")
        print(f"temporal ui    {started.ui_link}")
        if not args.wait:
            return 0
        result = await started.handle.result()
        print_result(result)
        return 1 if result.outcome is PipelineOutcome.FAILED_DEAD_LETTERED else 0

    try:
        return asyncio.run(start())
    except RuntimeError as exc:  # temporalio raises RuntimeError when it cannot connect
        raise CommandError(f"cannot reach Temporal at {settings.temporal_address}: {exc}") from exc


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def status() -> int:
        client = await connect_temporal(settings)
        try:
            found = await pipeline_status(client, settings, args.tenant)
        except RPCError as exc:
            raise CommandError(f"no pipeline run for tenant {args.tenant}: {exc}") from exc
        print(f"workflow       {found.workflow_id} (run {found.run_id})")
        print(f"state          {found.status}")
        if found.progress is not None:
            print(f"step           {found.progress.step}")
            if found.progress.result is not None:
                print_result(found.progress.result)
        print(f"temporal ui    {found.ui_link}")
        return 0

    return asyncio.run(status())


def run_dlq_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing() -> int:
        db = await open_app_database(settings)
        try:
            letters = await list_dead_letters(db, args.tenant, include_resolved=args.all)
        finally:
            await db.close()
        for letter in letters:
            state = (
                f"resolved {letter.resolved_at:%Y-%m-%d %H:%M}" if letter.resolved_at else "open"
            )
            print(
                f"{letter.id}  {letter.queue}  {letter.workflow_id}  attempts={letter.attempts}"
                f"  {letter.created_at:%Y-%m-%d %H:%M}  {state}\n    {letter.error}"
            )
        print(f"{len(letters)} dead letter(s)")
        return 0

    return asyncio.run(listing())


def run_dlq_resolve(args: argparse.Namespace, settings: Settings) -> int:
    async def resolve() -> None:
        db = await open_app_database(settings)
        try:
            await resolve_dead_letter(db, args.tenant, args.id)
        finally:
            await db.close()

    try:
        asyncio.run(resolve())
    except NotFoundError as exc:
        raise CommandError(str(exc)) from exc
    resolved: UUID = args.id
    print(f"resolved {resolved}")
    return 0
