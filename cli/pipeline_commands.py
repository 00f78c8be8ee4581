"""``rai pipeline start | status | list``: the tenant's retraining pipeline."""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from cli.common import app_database, object_store, parse_tenant, run_with_temporal, temporal
from cli.errors import CommandError, ServiceUnavailable
from cli.output import add_json_flag, print_json
from domain.pipeline import PipelineOutcome, PipelineResult
from domain.promotion import DEFAULT_CANARY_DWELL
from domain.schedules import IntervalError, format_interval, parse_interval
from settings import Settings
from starter import (
    PipelineStatus,
    WorkflowRun,
    list_pipeline_runs,
    pipeline_status,
    start_pipeline,
)

if TYPE_CHECKING:
    from temporalio.client import Client


def register(groups: Any) -> None:
    pipeline = groups.add_parser("pipeline", help="the retraining pipeline")
    commands = pipeline.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "start",
        help="start RetrainingPipeline for a tenant (with --wait: exit 1 if it dead-letters)",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--wait", action="store_true", help="wait for the outcome and print it")
    p.add_argument("--reference-season", help="default: the second most recent season")
    p.add_argument("--current-season", help="default: the most recent season")
    p.add_argument(
        "--canary-dwell",
        metavar="INTERVAL",
        help="how long the new version stays in CANARY, once approved, before PRODUCTION"
        f" (default: the evaluation's, {format_interval(DEFAULT_CANARY_DWELL)})",
    )
    add_json_flag(p)
    p.set_defaults(handler=run_start)
    p = commands.add_parser(
        "status",
        help="the tenant's latest run, manual or scheduled, with its Temporal link (exit 3 if"
        " none)",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    add_json_flag(p)
    p.set_defaults(handler=run_status)
    p = commands.add_parser("list", help="the tenant's runs, manual and scheduled, newest first")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--limit", type=_positive_int, default=20, help="at most this many (20)")
    add_json_flag(p)
    p.set_defaults(handler=run_list)
    p = commands.add_parser(
        "reap",
        help="fail the QUEUED/RUNNING runs (and cancel their jobs) and break the leases whose"
        " pipeline execution is closed (a terminated or timed-out run)",
    )
    p.add_argument("--tenant", type=parse_tenant, help="default: every tenant (admin login)")
    add_json_flag(p)
    p.set_defaults(handler=run_reap)


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


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
    dwell: timedelta | None = None
    if args.canary_dwell is not None:
        try:
            dwell = parse_interval(args.canary_dwell)
        except IntervalError as exc:
            raise CommandError(f"--canary-dwell: {exc}") from exc

    async def start(client: Client) -> tuple[str, str, str, PipelineResult | None]:
        started = await start_pipeline(
            client,
            settings,
            args.tenant,
            reference_season=args.reference_season,
            current_season=args.current_season,
            canary_dwell=dwell,
        )
        if not args.json:
            print(f"workflow       {started.workflow_id} (run {started.run_id})")
            print(f"temporal ui    {started.ui_link}", flush=True)
        result = await started.handle.result() if args.wait else None
        # Plain data only: the handle holds the client, which must not outlive this call.
        return started.workflow_id, started.run_id, started.ui_link, result

    workflow_id, run_id, ui_link, result = run_with_temporal(settings, start)
    failed = (PipelineOutcome.FAILED_DEAD_LETTERED, PipelineOutcome.FAILED_LEASE_LOST)
    code = 1 if result and result.outcome in failed else 0
    if args.json:
        print_json(
            {
                "workflow_id": workflow_id,
                "run_id": run_id,
                "ui_link": ui_link,
                "result": result,
            }
        )
    elif result is not None:
        print_result(result)
    return code


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def status(client: Client) -> PipelineStatus:
        return await pipeline_status(client, settings, args.tenant)

    found = run_with_temporal(settings, status)
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
        print(f"step           {found.progress.step}")
    elif found.status == "RUNNING":
        print("step           unknown: no worker answered (is `rai worker` running?)")
    if found.result is not None:
        print_result(found.result)
    print(f"temporal ui    {found.ui_link}")
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing(client: Client) -> list[WorkflowRun]:
        return await list_pipeline_runs(client, settings, args.tenant, limit=args.limit)

    runs = run_with_temporal(settings, listing)
    if args.json:
        print_json({"runs": runs})
        return 0
    for run in runs:
        closed = f"  closed {run.closed_at:%Y-%m-%d %H:%M:%S}" if run.closed_at else ""
        print(
            f"{run.workflow_id}  {run.status:<10}  started {run.started_at:%Y-%m-%d %H:%M:%S}"
            f"{closed}\n    {run.ui_link}"
        )
    print(f"{len(runs)} run(s)")
    return 0


def run_reap(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: only this command needs Redis and the job runner.
    from redis.asyncio import Redis

    from adapters.jobrunners import open_job_runner
    from adapters.redis_mutex import MutexUnavailableError, TenantMutex
    from cli.audit_commands import selected_tenants
    from services.pipeline import PipelineService
    from services.reaper import PipelineReaper, Reaped
    from starter import TemporalExecutions

    async def reap() -> list[Reaped]:
        tenants = await selected_tenants(args, settings)
        redis: Redis = Redis.from_url(settings.redis_url)
        try:
            async with (
                app_database(settings) as db,
                object_store(settings) as store,
                open_job_runner(settings) as jobs,
                temporal(settings) as client,
            ):
                reaper = PipelineReaper(
                    db=db,
                    pipeline=PipelineService(
                        db, store, datasets_bucket=settings.s3_datasets_bucket
                    ),
                    jobs=jobs,
                    mutex=TenantMutex(redis, key_prefix=settings.redis_key_prefix),
                    executions=TemporalExecutions(client),
                )
                return [await reaper.reap(tenant) for tenant in tenants]
        except MutexUnavailableError as exc:
            raise ServiceUnavailable(f"Redis at {settings.redis_url}: {exc}") from exc
        finally:
            await redis.aclose()

    reaped = asyncio.run(reap())
    if args.json:
        print_json(
            {
                "tenants": [
                    {
                        "tenant_id": r.tenant_id,
                        "failed_runs": list(r.runs),
                        "lease_broken": r.lease_broken,
                    }
                    for r in reaped
                ]
            }
        )
        return 0
    for r in reaped:
        runs = ", ".join(str(run) for run in r.runs) or "none"
        lease = f"broke the lease of {r.lease_broken}" if r.lease_broken else "no orphan lease"
        print(f"{r.tenant_id}  failed runs: {runs}; {lease}")
    return 0
