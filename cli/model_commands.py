"""``rai model list | rollback | evaluate | evaluation | download``: model versions, rollback
with its cooldown (M23), the shadow evaluation (M24), and the artifact at its pinned version."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.objectstore import ObjectStore, ObjectStoreError
from cli import provenance_commands
from cli.common import open_app_database, parse_model_id, parse_tenant
from cli.errors import CommandError
from domain.policies import ROLLBACK_COOLDOWN, cooldown_ends_at
from domain.promotion import (
    DEFAULT_CHECK_INTERVAL,
    EvaluationInput,
    EvaluationProgress,
    EvaluationResult,
    shadow_evaluation_workflow_id,
)
from scheduling import IntervalError, format_interval, parse_interval
from services.errors import GovernanceRefusal
from services.keys import PlatformKeyError, load_platform_signer
from services.promotion import ModelVersionSummary, list_model_versions
from services.registry import ModelRegistryService, Rollback
from settings import Settings
from starter import connect_temporal, workflow_ui_link
from workflows.promotion import ShadowEvaluation


def register(groups: Any) -> None:
    model = groups.add_parser("model", help="model versions: list, rollback, shadow evaluation")
    commands = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    p = commands.add_parser("list", help="a tenant's model versions and their status")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--model", help="only this model name")
    p.set_defaults(handler=run_list)
    p = commands.add_parser(
        "rollback",
        help="PRODUCTION -> ROLLED_BACK, the previous version back to PRODUCTION;"
        " starts the 7-day retraining cooldown",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--reason", default="manual rollback", help="recorded with the move")
    p.set_defaults(handler=run_rollback)
    p = commands.add_parser(
        "evaluate", help="start the SPRT shadow evaluation of a SHADOW model version"
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--model-version", required=True, type=parse_model_id, metavar="ID")
    p.add_argument(
        "--check-every",
        default=format_interval(DEFAULT_CHECK_INTERVAL),
        metavar="INTERVAL",
        help="how often to read new paired outcomes (default: %(default)s)",
    )
    p.set_defaults(handler=run_evaluate)
    p = commands.add_parser("evaluation", help="a shadow evaluation's progress or result")
    p.add_argument("--model-version", required=True, type=parse_model_id, metavar="ID")
    p.set_defaults(handler=run_evaluation)
    provenance_commands.register_download(commands)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing() -> list[ModelVersionSummary]:
        db = await open_app_database(settings)
        try:
            return await list_model_versions(db, args.tenant, args.model)
        finally:
            await db.close()

    versions = asyncio.run(listing())
    for v in versions:
        print(
            f"{v.id}  {v.model_name} v{v.version}  {v.status.value:<11}"
            f"  since {v.status_changed_at:%Y-%m-%d %H:%M:%S %Z}"
        )
    print(f"{len(versions)} model version(s)")
    return 0


def run_rollback(args: argparse.Namespace, settings: Settings) -> int:
    async def rollback() -> Rollback:
        # The registry service is built whole, as the worker builds it; rollback itself only
        # touches the database.
        platform = load_platform_signer(settings)
        db = await open_app_database(settings)
        try:
            async with ObjectStore.from_settings(settings) as store:
                registry = ModelRegistryService(db, store, platform)
                return await registry.rollback(args.tenant, args.model, reason=args.reason)
        finally:
            await db.close()

    try:
        done = asyncio.run(rollback())
    except (GovernanceRefusal, PlatformKeyError) as exc:
        raise CommandError(str(exc)) from exc
    except ObjectStoreError as exc:
        raise CommandError(f'{exc} (is the stack up? eval "$(rai dev env)")') from exc
    print(f"rolled back    {done.rolled_back} (PRODUCTION -> ROLLED_BACK)")
    if done.restored is not None:
        print(f"restored       {done.restored} (ARCHIVED -> PRODUCTION)")
    else:
        print(f"restored       nothing: model {args.model} has no archived version to restore")
    ends = cooldown_ends_at(done.at)
    print(
        f"cooldown       {ROLLBACK_COOLDOWN.days} days: no retraining of this tenant until"
        f" {ends:%Y-%m-%d %H:%M:%S %Z}"
    )
    return 0


@dataclass(frozen=True)
class EvaluationStarted:
    workflow_id: str
    run_id: str
    ui_link: str
    handle: WorkflowHandle[ShadowEvaluation, EvaluationResult]


class EvaluationAlreadyRunning(Exception):
    """Temporal refused the start: the model version's evaluation is running."""


async def start_shadow_evaluation(
    client: Client,
    settings: Settings,
    tenant_id: UUID,
    model_version_id: UUID,
    *,
    check_interval: timedelta = DEFAULT_CHECK_INTERVAL,
) -> EvaluationStarted:
    workflow_id = shadow_evaluation_workflow_id(model_version_id)
    try:
        handle = await client.start_workflow(
            ShadowEvaluation.run,
            EvaluationInput(
                tenant_id=tenant_id,
                model_version_id=model_version_id,
                check_interval=check_interval,
            ),
            id=workflow_id,
            task_queue=settings.training_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        )
    except WorkflowAlreadyStartedError as exc:
        raise EvaluationAlreadyRunning(
            f"shadow evaluation {workflow_id} is already running"
        ) from exc
    run_id = handle.result_run_id or ""
    return EvaluationStarted(
        workflow_id, run_id, workflow_ui_link(settings, workflow_id, run_id), handle
    )


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


def run_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        every = parse_interval(args.check_every)
    except IntervalError as exc:
        raise CommandError(f"--check-every: {exc}") from exc

    async def start() -> EvaluationStarted:
        client = await connect_temporal(settings)
        try:
            return await start_shadow_evaluation(
                client, settings, args.tenant, args.model_version, check_interval=every
            )
        except EvaluationAlreadyRunning as exc:
            raise CommandError(str(exc)) from exc

    try:
        started = asyncio.run(start())
    except RuntimeError as exc:  # temporalio raises RuntimeError when it cannot connect
        raise CommandError(f"cannot reach Temporal at {settings.temporal_address}: {exc}") from exc
    print(f"workflow       {started.workflow_id} (run {started.run_id})")
    print(f"checks         every {format_interval(every)}")
    print(f"temporal ui    {started.ui_link}")
    return 0


def run_evaluation(args: argparse.Namespace, settings: Settings) -> int:
    workflow_id = shadow_evaluation_workflow_id(args.model_version)

    async def status() -> tuple[str, str, EvaluationProgress | None]:
        client = await connect_temporal(settings)
        handle = client.get_workflow_handle_for(ShadowEvaluation.run, workflow_id)
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                raise CommandError(f"no shadow evaluation {workflow_id}") from exc
            raise
        progress = None
        if description.status in (
            WorkflowExecutionStatus.RUNNING,
            WorkflowExecutionStatus.COMPLETED,
        ):
            progress = await handle.query(ShadowEvaluation.progress)
        state = description.status.name if description.status else "UNKNOWN"
        return description.run_id, state, progress

    try:
        run_id, state, progress = asyncio.run(status())
    except RuntimeError as exc:  # temporalio raises RuntimeError when it cannot connect
        raise CommandError(f"cannot reach Temporal at {settings.temporal_address}: {exc}") from exc
    print(f"workflow       {workflow_id} (run {run_id})")
    print(f"state          {state}")
    if progress is not None:
        print_progress(progress)
    print(f"temporal ui    {workflow_ui_link(settings, workflow_id, run_id)}")
    return 0
