"""``rai model list | rollback | approve`` and ``rai evaluation start | status`` through their
argparse handlers, against the test's own database, the run's S3 server and (for the evaluation) the
real Temporal dev server with a worker running ShadowEvaluation on the real activities."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid
from datetime import datetime, timedelta

import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.promotion import PromotionActivities
from cli import evaluation_commands, model_commands, pipeline_commands
from cli.errors import CommandError
from cli.main import build_parser
from domain.model_status import ModelStatus
from domain.pipeline import PipelineInput, pipeline_workflow_id
from domain.promotion import EvaluationInput, EvaluationResult, shadow_evaluation_workflow_id
from services.promotion import enter_canary, promote_challenger
from settings import Settings, app_dsn_for
from tests.integration.promotion_support import Device, history, model_in, paired, statuses
from tests.integration.services_env import ServicesEnv
from tests.polling import wait_until
from workflows.promotion import ShadowEvaluation

pytestmark = pytest.mark.integration


def cli_settings(
    env: ServicesEnv, db_admin_dsn: str, temporal: WorkflowEnvironment | None = None
) -> Settings:
    s3 = env.settings
    assert s3.s3_secret_key is not None
    return Settings(
        database_url=db_admin_dsn,
        app_database_url=app_dsn_for(db_admin_dsn),
        s3_endpoint_url=s3.s3_endpoint_url,
        s3_region=s3.s3_region,
        s3_access_key=s3.s3_access_key,
        s3_secret_key=SecretStr(s3.s3_secret_key.get_secret_value()),
        platform_signing_key=SecretStr(env.platform.seed_hex()),
        temporal_address=(
            temporal.client.service_client.config.target_host if temporal else "127.0.0.1:7233"
        ),
        training_task_queue=f"training-{uuid.uuid4()}",
    )


async def rai(settings: Settings, *argv: str) -> int:
    """Parse ``rai ARGV`` and run its handler off the event loop, as the command would
    (handlers call asyncio.run)."""
    parser = argparse.ArgumentParser(prog="rai")
    groups = parser.add_subparsers(dest="group", required=True)
    model_commands.register(groups)
    evaluation_commands.register(groups)
    pipeline_commands.register(groups)
    args = parser.parse_args(argv)
    code: int = await asyncio.to_thread(args.handler, args, settings)
    return code


async def rai_model(settings: Settings, *argv: str) -> int:
    return await rai(settings, "model", *argv)


async def rai_evaluation(settings: Settings, *argv: str) -> int:
    return await rai(settings, "evaluation", *argv)


async def test_rollback_restores_the_previous_version_and_names_the_cooldown(
    services_env: ServicesEnv, db_admin_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = services_env
    tenant = await env.tenant()
    old = await model_in(env, tenant, ModelStatus.PRODUCTION)
    new = await model_in(env, tenant, ModelStatus.SHADOW)
    await enter_canary(
        env.db, tenant, new, expected_champion_id=old, reason="SPRT ACCEPT", details={}
    )
    await promote_challenger(
        env.db, tenant, new, expected_champion_id=old, reason="canary held", details={}
    )
    settings = cli_settings(env, db_admin_dsn)

    assert await rai_model(settings, "list", "--tenant", str(tenant)) == 0
    listing = capsys.readouterr().out
    assert f"{old}  yield v1  ARCHIVED" in listing
    assert f"{new}  yield v2  PRODUCTION" in listing

    code = await rai_model(
        settings, "rollback", "--tenant", str(tenant), "--model", "yield", "--reason", "bad yields"
    )
    assert code == 0
    out = capsys.readouterr().out
    assert f"rolled back    {new} (PRODUCTION -> ROLLED_BACK)" in out
    assert f"restored       {old} (ARCHIVED -> PRODUCTION)" in out
    found = await statuses(env, tenant)
    assert (found[old], found[new]) == ("PRODUCTION", "ROLLED_BACK")
    async with env.db.transaction(tenant) as conn:
        rolled_at: datetime = await conn.fetchval(
            "SELECT changed_at FROM model_status_history"
            " WHERE to_status = 'ROLLED_BACK' AND reason = 'bad yields'"
        )
    ends = rolled_at + timedelta(days=7)
    assert f"7 days: no retraining of this tenant until {ends:%Y-%m-%d %H:%M:%S %Z}" in out


async def test_rollback_without_a_production_version_is_a_clear_error(
    services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    env = services_env
    tenant = await env.tenant()
    settings = cli_settings(env, db_admin_dsn)
    with pytest.raises(CommandError, match="no PRODUCTION version to roll back"):
        await rai_model(settings, "rollback", "--tenant", str(tenant), "--model", "yield")


@pytest.mark.parametrize(
    ("option", "value", "refusal"),
    [
        ("--check-every", "1x", "--check-every: not an interval: '1x'"),
        ("--canary-dwell", "1x", "--canary-dwell: not an interval: '1x'"),
        ("--canary-dwell", "30s", "--canary-dwell: interval '30s' is shorter than the minimum"),
    ],
)
async def test_evaluation_start_refuses_a_bad_interval_before_calling_temporal(
    services_env: ServicesEnv, db_admin_dsn: str, option: str, value: str, refusal: str
) -> None:
    settings = cli_settings(services_env, db_admin_dsn)
    tenant = await services_env.tenant()
    with pytest.raises(CommandError, match=refusal):
        await rai_evaluation(
            settings,
            "start",
            "--tenant",
            str(tenant),
            "--model-version",
            str(tenant),
            option,
            value,
        )


async def test_evaluation_start_starts_the_shadow_evaluation_and_status_reports_it(
    services_env: ServicesEnv,
    db_admin_dsn: str,
    temporal: WorkflowEnvironment,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = services_env
    tenant = await env.tenant()
    champion = await model_in(env, tenant, ModelStatus.PRODUCTION)
    challenger = await model_in(env, tenant, ModelStatus.SHADOW)
    # Paired events, but younger than the evaluation's settle time (5 min): not counted yet.
    await Device(env, tenant).send(*[paired(5.0, {challenger: 5.0, champion: 6.0})] * 30)
    settings = cli_settings(env, db_admin_dsn, temporal)
    start = ["start", "--tenant", str(tenant), "--model-version", str(challenger)]
    async with Worker(
        temporal.client,
        task_queue=settings.training_task_queue,
        workflows=[ShadowEvaluation],
        activities=PromotionActivities(db=env.db).activities(),
    ):
        assert (
            await rai_evaluation(settings, *start, "--check-every", "2h", "--canary-dwell", "3h")
            == 0
        )
        out = capsys.readouterr().out
        assert f"workflow       shadow/{challenger} (run " in out
        assert "checks         every 2h" in out
        assert "canary dwell   3h" in out
        assert f"/workflows/shadow%2F{challenger}/" in out
        with pytest.raises(CommandError, match=f"shadow/{challenger} is already running"):
            await rai_evaluation(settings, *start)

        handle: WorkflowHandle[ShadowEvaluation, EvaluationResult] = (
            temporal.client.get_workflow_handle(
                shadow_evaluation_workflow_id(challenger), result_type=EvaluationResult
            )
        )
        started = (await handle.fetch_history()).events[0]
        (params,) = await temporal.client.data_converter.decode(
            started.workflow_execution_started_event_attributes.input.payloads, [EvaluationInput]
        )
        assert (params.check_interval, params.canary_dwell) == (
            timedelta(hours=2),
            timedelta(hours=3),
        )
        await wait_until(  # the first check, on the real activities
            lambda: handle.query(ShadowEvaluation.progress),
            lambda progress: progress.checks > 0,
            within=30,
            failure="the shadow evaluation made no check",
        )
        assert await rai_evaluation(settings, "status", "--model-version", str(challenger)) == 0
        out = capsys.readouterr().out
        assert "state          RUNNING" in out
        assert "step           waiting for more paired outcomes" in out
        assert "sprt           CONTINUE: 0/0 wins" in out
        assert f"champion       {champion}" in out
        await handle.terminate("test over")
        with pytest.raises(CommandError, match="no shadow evaluation shadow/"):
            await rai_evaluation(settings, "status", "--model-version", str(champion))
    assert (await statuses(env, tenant))[challenger] == "SHADOW"


async def rai_command(settings: Settings, *argv: str) -> tuple[int, str]:
    """Parse ``rai ARGV`` with the real command tree and run its handler off the event loop:
    the exit code and, when the command fails, the message ``rai`` prints for it."""
    args = build_parser().parse_args(list(argv))
    try:
        code: int = await asyncio.to_thread(args.handler, args, settings)
    except CommandError as exc:
        return exc.exit_code, str(exc)
    return code, ""


async def test_approve_moves_a_challenger_without_champion_to_canary(
    services_env: ServicesEnv,
    db_admin_dsn: str,
    temporal: WorkflowEnvironment,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = services_env
    tenant = await env.tenant()
    challenger = await model_in(env, tenant, ModelStatus.SHADOW)
    settings = cli_settings(env, db_admin_dsn, temporal)
    approve = ["model", "approve", "--model-version", str(challenger), "--json"]
    async with Worker(
        temporal.client,
        task_queue=settings.training_task_queue,
        workflows=[ShadowEvaluation],
        activities=PromotionActivities(db=env.db).activities(),
    ):
        start = ["start", "--tenant", str(tenant), "--model-version", str(challenger)]
        assert await rai_evaluation(settings, *start) == 0
        handle: WorkflowHandle[ShadowEvaluation, EvaluationResult] = (
            temporal.client.get_workflow_handle(
                shadow_evaluation_workflow_id(challenger), result_type=EvaluationResult
            )
        )
        await wait_until(
            lambda: handle.query(ShadowEvaluation.progress),
            lambda progress: progress.awaiting_approval,
            within=30,
            failure="the evaluation of a challenger without champion is not awaiting approval",
        )
        capsys.readouterr()
        # No champion and no evidence: the challenger is still SHADOW, waiting.
        assert (await statuses(env, tenant))[challenger] == "SHADOW"

        blank, refusal = await rai_command(
            settings, *approve, "--reason", "   ", "--approver", "alice"
        )
        assert (blank, capsys.readouterr().out) == (1, "")
        assert refusal.startswith("invalid approval: reason: "), refusal

        code, error = await rai_command(
            settings, *approve, "--reason", "trial plots look right", "--approver", "alice"
        )
        assert (code, error) == (0, "")
        report = json.loads(capsys.readouterr().out)
        assert report == {
            "model_version_id": str(challenger),
            "approved_by": "alice",
            "reason": "trial plots look right",
            "detail": f"model version {challenger} is CANARY:"
            " approved by alice: trial plots look right",
        }
        assert (await statuses(env, tenant))[challenger] == "CANARY"
        [move] = (await history(env, tenant, challenger))[-1:]
        assert (move["to_status"], move["reason"]) == (
            "CANARY",
            "approved by alice: trial plots look right",
        )
        async with env.db.transaction(tenant) as conn:
            details = await conn.fetchval(
                "SELECT details FROM integrity_checks"
                " WHERE check_type = 'shadow_evaluation.decision' AND outcome = 'CANARY'"
            )
        assert (details["approved_by"], details["approval_reason"]) == (
            "alice",
            "trial plots look right",
        )

        again, refusal = await rai_command(
            settings, *approve, "--reason", "twice", "--approver", "bob"
        )
        assert again == 1  # not waiting for an approval any more
        assert "not waiting for an approval" in refusal
        await handle.terminate("test over")

    unknown = ["model", "approve", "--model-version", str(uuid.uuid4()), "--json"]
    code, refusal = await rai_command(settings, *unknown, "--reason", "x")
    assert code == 3
    assert "no running shadow evaluation" in refusal
    unreachable = settings.model_copy(update={"temporal_address": "127.0.0.1:1"})
    code, refusal = await rai_command(unreachable, *approve, "--reason", "x")
    assert code == 4
    assert refusal.startswith("cannot reach Temporal at 127.0.0.1:1: "), refusal


@pytest.mark.parametrize(
    ("value", "refusal"),
    [
        ("1x", "--canary-dwell: not an interval: '1x'"),
        ("30s", "--canary-dwell: interval '30s' is shorter than the minimum"),
    ],
)
async def test_pipeline_start_refuses_a_bad_canary_dwell_before_calling_temporal(
    services_env: ServicesEnv, db_admin_dsn: str, value: str, refusal: str
) -> None:
    settings = cli_settings(services_env, db_admin_dsn)
    tenant = await services_env.tenant()
    with pytest.raises(CommandError, match=refusal):
        await rai(settings, "pipeline", "start", "--tenant", str(tenant), "--canary-dwell", value)


@pytest.mark.parametrize(("argv", "dwell"), [((), None), (("--canary-dwell", "90m"), 5400.0)])
async def test_pipeline_start_passes_its_canary_dwell_to_the_run(
    services_env: ServicesEnv,
    db_admin_dsn: str,
    temporal: WorkflowEnvironment,
    argv: tuple[str, ...],
    dwell: float | None,
) -> None:
    settings = cli_settings(services_env, db_admin_dsn, temporal)
    tenant = await services_env.tenant()
    # No worker serves the queue: the run is only started, and its input read back.
    assert await rai(settings, "pipeline", "start", "--tenant", str(tenant), *argv) == 0
    handle = temporal.client.get_workflow_handle(pipeline_workflow_id(tenant))
    try:
        started = (await handle.fetch_history()).events[0]
        (params,) = await temporal.client.data_converter.decode(
            started.workflow_execution_started_event_attributes.input.payloads, [PipelineInput]
        )
        assert params.canary_dwell_seconds == dwell
    finally:
        await handle.terminate("the CLI test is over")
