"""CallbackHandler against the real Postgres, with a recording stand-in for Temporal: signature,
tenant scope, duplicates, finished runs and workflows, drift confirmations."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest

from domain.pipeline import TrainingOutcome
from domain.signing import Signer
from domain.training import TrainingResult
from services.callbacks import (
    CallbackHandler,
    CallbackOutcome,
    CallbackSignatureError,
    DriftReportMismatchError,
    MalformedCallbackError,
    UnknownDriftReportError,
    UnknownTrainingRunError,
    WorkflowUnavailableError,
)
from services.keys import register_key, revoke_key
from services.pipeline import PipelineService
from tests.integration.callback_support import (
    ARTIFACT_SHA,
    ARTIFACT_URI,
    METRICS,
    RecordingSignaller,
    Run,
    audit_rows,
    drift_body,
    drift_report,
    running_run,
    training_body,
)
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration


@pytest.fixture
def signaller() -> RecordingSignaller:
    return RecordingSignaller()


@pytest.fixture
def handler(services_env: ServicesEnv, signaller: RecordingSignaller) -> CallbackHandler:
    return CallbackHandler(services_env.db, signaller)


# -- training callbacks ---------------------------------------------------------------------


async def test_a_valid_callback_signals_the_runs_workflow_once(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    result = await handler.handle_training(training_body(run))
    assert result.outcome is CallbackOutcome.ACCEPTED
    assert result.signalled
    assert (result.tenant_id, result.subject_id) == (run.tenant_id, run.run_id)
    assert signaller.calls == [
        (
            run.workflow_id,
            TrainingOutcome(
                training_run_id=run.run_id,
                status="SUCCEEDED",
                artifact_uri=ARTIFACT_URI,
                artifact_sha256=ARTIFACT_SHA,
                metrics=METRICS,
            ),
        )
    ]
    assert await audit_rows(services_env, run.tenant_id, "training.callback") == [
        (str(run.run_id), "ACCEPTED")
    ]


async def test_a_failed_job_is_signalled_with_its_error(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    result = await handler.handle_training(
        training_body(run, TrainingResult.failed("dataset SHA-256 mismatch"))
    )
    assert result.signalled
    ((_, outcome),) = signaller.calls
    assert outcome.status == "FAILED"
    assert outcome.error == "dataset SHA-256 mismatch"
    assert outcome.trained() is None


async def test_a_duplicate_is_harmless(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    body = training_body(run)
    first = await handler.handle_training(body)
    again = await handler.handle_training(body)
    assert (first.outcome, again.outcome) == (CallbackOutcome.ACCEPTED, CallbackOutcome.DUPLICATE)
    # Signalled again: the workflow keeps the first outcome, and a repeat heals a lost delivery.
    assert [call[1] for call in signaller.calls] == [signaller.calls[0][1]] * 2
    assert [
        outcome for _, outcome in await audit_rows(services_env, run.tenant_id, "training.callback")
    ] == ["ACCEPTED", "DUPLICATE"]


async def test_concurrent_copies_are_accepted_exactly_once(
    services_env: ServicesEnv, handler: CallbackHandler
) -> None:
    run = await running_run(services_env)
    body = training_body(run)
    results = await asyncio.gather(*(handler.handle_training(body) for _ in range(6)))
    outcomes = sorted(result.outcome for result in results)
    assert outcomes == [CallbackOutcome.ACCEPTED] + [CallbackOutcome.DUPLICATE] * 5


async def test_a_callback_signed_by_another_key_is_refused_and_writes_nothing(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    with pytest.raises(CallbackSignatureError, match="does not verify"):
        await handler.handle_training(training_body(run, signer=Signer.generate()))
    assert signaller.calls == []
    assert await audit_rows(services_env, run.tenant_id, "training.callback") == []


def _tamper_artifact(document: dict[str, Any]) -> None:
    document["artifact_sha256"] = "ef" * 32


def _tamper_metrics(document: dict[str, Any]) -> None:
    document["metrics"]["rmse"] = 0.01


def _tamper_status(document: dict[str, Any]) -> None:
    document.update(status="FAILED", error="nope")


@pytest.mark.parametrize("tamper", [_tamper_artifact, _tamper_metrics, _tamper_status])
async def test_a_tampered_field_breaks_the_signature(
    services_env: ServicesEnv,
    handler: CallbackHandler,
    signaller: RecordingSignaller,
    tamper: Callable[[dict[str, Any]], None],
) -> None:
    run = await running_run(services_env)
    body = training_body(run)
    tamper(body["document"])
    with pytest.raises(CallbackSignatureError):
        await handler.handle_training(body)
    assert signaller.calls == []


async def test_an_unknown_run_is_not_found(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    stranger = Run(run.tenant_id, uuid4(), run.workflow_id, run.key)
    with pytest.raises(UnknownTrainingRunError):
        await handler.handle_training(training_body(stranger))
    assert signaller.calls == []


async def test_another_tenants_run_is_not_found(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)  # belongs to tenant A
    other = await services_env.tenant("other farm")
    # Honestly signed with the run's own key, but naming tenant B: B cannot see A's run.
    with pytest.raises(UnknownTrainingRunError):
        await handler.handle_training(training_body(run, tenant=other))
    assert signaller.calls == []
    assert await audit_rows(services_env, other, "training.callback") == []
    assert await audit_rows(services_env, run.tenant_id, "training.callback") == []


async def test_a_finished_run_is_not_signalled(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    pipeline = PipelineService(
        services_env.db,
        services_env.store,
        datasets_bucket=services_env.settings.s3_datasets_bucket,
    )
    await pipeline.finish_run(run.tenant_id, run.run_id, "FAILED")
    result = await handler.handle_training(training_body(run))
    assert result.outcome is CallbackOutcome.RUN_FINISHED
    assert not result.signalled
    assert "already FAILED" in result.detail
    assert signaller.calls == []


async def test_a_workflow_that_moved_on_still_gets_an_answer(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    signaller.gone.add(run.workflow_id)
    result = await handler.handle_training(training_body(run))
    assert result.outcome is CallbackOutcome.ACCEPTED
    assert not result.signalled
    assert "no longer running" in result.detail


async def test_an_unreachable_workflow_service_is_retried_by_the_sender(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    body = training_body(run)
    signaller.unavailable = True
    with pytest.raises(WorkflowUnavailableError):
        await handler.handle_training(body)
    signaller.unavailable = False
    retried = await handler.handle_training(body)  # the job's retry delivers it
    assert retried.outcome is CallbackOutcome.DUPLICATE
    assert retried.signalled
    assert len(signaller.calls) == 1


def _drop_field(body: dict[str, Any]) -> None:
    del body["document"]["artifact_uri"]


def _bad_hex(body: dict[str, Any]) -> None:
    body["signature"] = "zz" * 64


def _short_signature(body: dict[str, Any]) -> None:
    body["signature"] = body["signature"][:64]


def _bad_uuid(body: dict[str, Any]) -> None:
    body["document"]["training_run_id"] = "run-42"


def _no_artifact(body: dict[str, Any]) -> None:
    body["document"]["artifact_uri"] = None


def _unknown_kind(body: dict[str, Any]) -> None:
    body["document"]["kind"] = "drift"


def _extra_field(body: dict[str, Any]) -> None:
    body["document"]["promote"] = True


def _not_finite(body: dict[str, Any]) -> None:
    body["document"]["metrics"]["rmse"] = float("nan")


def _no_document(body: dict[str, Any]) -> None:
    del body["document"]


@pytest.mark.parametrize(
    "malform",
    [
        _drop_field,
        _bad_hex,
        _short_signature,
        _bad_uuid,
        _no_artifact,
        _unknown_kind,
        _extra_field,
        _not_finite,
        _no_document,
    ],
)
async def test_malformed_bodies_are_refused_before_anything_is_looked_up(
    services_env: ServicesEnv,
    handler: CallbackHandler,
    signaller: RecordingSignaller,
    malform: Callable[[dict[str, Any]], None],
) -> None:
    run = await running_run(services_env)
    body = training_body(run)
    malform(body)
    with pytest.raises(MalformedCallbackError):
        await handler.handle_training(body)
    assert signaller.calls == []
    assert await audit_rows(services_env, run.tenant_id, "training.callback") == []


# -- drift callbacks ------------------------------------------------------------------------


async def test_a_drift_callback_confirms_the_report(
    services_env: ServicesEnv, handler: CallbackHandler, signaller: RecordingSignaller
) -> None:
    env = services_env
    tenant = await env.tenant()
    report = await drift_report(env, tenant)
    body = drift_body(tenant, report.id, report.report_sha256, env.platform)
    first = await handler.handle_drift(body)
    again = await handler.handle_drift(body)
    assert (first.outcome, again.outcome) == (CallbackOutcome.ACCEPTED, CallbackOutcome.DUPLICATE)
    assert first.subject_id == report.id
    assert f"verdict {report.result.verdict.value}" in first.detail
    assert not first.signalled
    assert signaller.calls == []
    assert await audit_rows(env, tenant, "drift.callback") == [
        (str(report.id), "ACCEPTED"),
        (str(report.id), "DUPLICATE"),
    ]


async def test_a_drift_callback_with_another_hash_is_refused(
    services_env: ServicesEnv, handler: CallbackHandler
) -> None:
    env = services_env
    tenant = await env.tenant()
    report = await drift_report(env, tenant)
    with pytest.raises(DriftReportMismatchError, match=report.report_sha256):
        await handler.handle_drift(drift_body(tenant, report.id, "00" * 32, env.platform))
    assert await audit_rows(env, tenant, "drift.callback") == [(str(report.id), "MISMATCH")]


async def test_a_drift_callback_needs_the_tenants_platform_key(
    services_env: ServicesEnv, handler: CallbackHandler
) -> None:
    env = services_env
    tenant = await env.tenant()
    report = await drift_report(env, tenant)
    impostor = Signer.generate()
    # A key the tenant never registered.
    with pytest.raises(CallbackSignatureError, match="no active platform key"):
        await handler.handle_drift(drift_body(tenant, report.id, report.report_sha256, impostor))
    # Claiming the registered key, signed by another.
    with pytest.raises(CallbackSignatureError, match="does not verify"):
        await handler.handle_drift(
            drift_body(
                tenant, report.id, report.report_sha256, impostor, key_id=env.platform.key_id
            )
        )
    # A device key of the tenant is not a platform key.
    device = Signer.generate()
    await register_key(env.db, tenant, device.public_key, "device")
    with pytest.raises(CallbackSignatureError):
        await handler.handle_drift(drift_body(tenant, report.id, report.report_sha256, device))
    # A revoked platform key no longer signs.
    await revoke_key(env.db, tenant, env.platform.key_id)
    with pytest.raises(CallbackSignatureError):
        await handler.handle_drift(
            drift_body(tenant, report.id, report.report_sha256, env.platform)
        )
    assert await audit_rows(env, tenant, "drift.callback") == []  # unverifiable: nothing written


async def test_a_drift_callback_for_an_unknown_or_foreign_report_is_not_found(
    services_env: ServicesEnv, handler: CallbackHandler
) -> None:
    env = services_env
    tenant = await env.tenant()
    report = await drift_report(env, tenant)
    with pytest.raises(UnknownDriftReportError):
        await handler.handle_drift(drift_body(tenant, uuid4(), report.report_sha256, env.platform))
    other = await env.tenant("other farm")  # the platform key is registered for it too
    with pytest.raises(UnknownDriftReportError):
        await handler.handle_drift(drift_body(other, report.id, report.report_sha256, env.platform))


async def test_a_drift_callback_of_another_kind_or_forged_signature_is_refused(
    services_env: ServicesEnv, handler: CallbackHandler
) -> None:
    env = services_env
    tenant = await env.tenant()
    report = await drift_report(env, tenant)
    body = drift_body(tenant, report.id, report.report_sha256, env.platform)
    body["document"]["kind"] = "training"
    with pytest.raises(MalformedCallbackError):
        await handler.handle_drift(body)
    body["document"]["kind"] = "drift"
    body["signature"] = secrets.token_hex(64)
    with pytest.raises(CallbackSignatureError):
        await handler.handle_drift(body)
