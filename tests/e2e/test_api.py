"""The HTTP API end to end: the FastAPI app over the real Postgres (through httpx's ASGI
transport, with a recording stand-in for Temporal), and once for real — uvicorn on a free port,
the real Temporal dev server, the training job's own HTTP client — showing a callback reach a
waiting workflow as its ``training_finished`` signal."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from temporalio import workflow
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from adapters.callback_client import post_callback
from api.app import ApiDependencies, create_app
from api.server import ApiConfig, ApiStartupError, running_api, training_callback_url
from db.repository import Database
from domain.documents import event_document
from domain.pipeline import TRAINING_FINISHED_SIGNAL, TrainingOutcome
from domain.signing import DocumentKind, Signer
from services.callbacks import CallbackHandler
from services.events import LearningEventService
from services.keys import register_key
from services.tokens import create_token
from settings import Settings, app_dsn_for
from tests.integration.callback_support import (
    ARTIFACT_SHA,
    ARTIFACT_URI,
    METRICS,
    RecordingSignaller,
    drift_body,
    drift_report,
    running_run,
    training_body,
)
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 60


def payload(ndvi: float) -> dict[str, Any]:
    return {"features": {"ndvi": ndvi, "soil": "loam"}, "outcome": ndvi * 10}


def signed_event(
    device: Signer, tenant: UUID, season: str, field: str, body: dict[str, Any]
) -> dict[str, Any]:
    """One event as a device sends it (signed as ``ServicesEnv.seed_events`` signs them)."""
    document = event_document(tenant, season, field, body)
    return {
        "season_id": season,
        "field_id": field,
        "payload": body,
        "signature": device.sign(DocumentKind.EVENT, document).hex(),
        "key_id": device.key_id,
    }


def json_bytes(value: Any) -> bytes:
    """``value`` as JSON, Python's way: non-finite floats become the non-standard ``Infinity``
    and ``NaN`` literals (which Python's parser, and so the API's, accepts)."""
    return json.dumps(value).encode()


def client_for(deps: ApiDependencies) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(deps)), base_url="http://api.test"
    )


@pytest.fixture
def signaller() -> RecordingSignaller:
    return RecordingSignaller()


@pytest.fixture
async def api(
    services_env: ServicesEnv, signaller: RecordingSignaller
) -> AsyncIterator[httpx.AsyncClient]:
    db = services_env.db
    deps = ApiDependencies(
        db=db, callbacks=CallbackHandler(db, signaller), events=LearningEventService(db)
    )
    async with client_for(deps) as client:
        yield client


@pytest.fixture
async def farm(services_env: ServicesEnv, api: httpx.AsyncClient) -> tuple[UUID, Signer]:
    """A tenant with a device key; ``api`` sends with one of the tenant's API tokens."""
    tenant = await services_env.tenant()
    device = Signer.generate()
    await register_key(services_env.db, tenant, device.public_key, "device")
    token = await create_token(services_env.db, tenant, "test client")
    api.headers["Authorization"] = f"Bearer {token.secret}"
    return tenant, device


# -- events ---------------------------------------------------------------------------------


async def test_a_batch_is_judged_event_by_event(
    api: httpx.AsyncClient, farm: tuple[UUID, Signer]
) -> None:
    tenant, device = farm
    events = [signed_event(device, tenant, "2026", f"f-{i}", payload(i / 10)) for i in range(20)]
    forged = signed_event(device, tenant, "2026", "f-forged", payload(0.5))
    forged["payload"] = payload(0.9)  # changed after signing
    conflicting = signed_event(device, tenant, "2026", "f-0", payload(0.77))
    response = await api.post(
        f"/v1/tenants/{tenant}/events", json={"events": [*events, forged, conflicting]}
    )
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["tenant_id"] == str(tenant)
    assert answer["counts"] == {"ACCEPTED": 20, "DUPLICATE": 0, "CONFLICT": 1, "REJECTED": 1}
    outcomes = [result["outcome"] for result in answer["results"]]
    assert outcomes == ["ACCEPTED"] * 20 + ["REJECTED", "CONFLICT"]
    assert answer["results"][20]["reason"] == "bad signature"
    assert answer["results"][21]["index"] == 21

    again = await api.post(f"/v1/tenants/{tenant}/events", json={"events": events})
    assert again.status_code == 200
    assert again.json()["counts"]["DUPLICATE"] == 20


async def test_a_single_event_answers_with_its_own_status(
    api: httpx.AsyncClient, farm: tuple[UUID, Signer]
) -> None:
    tenant, device = farm
    url = f"/v1/tenants/{tenant}/events/single"
    event = signed_event(device, tenant, "2026", "f-1", payload(0.5))
    created = await api.post(url, json=event)
    assert created.status_code == 201, created.text
    assert created.json()["outcome"] == "ACCEPTED"
    duplicate = await api.post(url, json=event)
    assert (duplicate.status_code, duplicate.json()["outcome"]) == (200, "DUPLICATE")
    conflict = await api.post(url, json=signed_event(device, tenant, "2026", "f-1", payload(0.6)))
    assert conflict.status_code == 409
    assert conflict.json()["detail"] == "a different payload is stored for this season and field"
    assert conflict.json()["result"]["outcome"] == "CONFLICT"
    stranger = Signer.generate()
    rejected = await api.post(url, json=signed_event(stranger, tenant, "2026", "f-2", payload(0.1)))
    assert rejected.status_code == 422
    assert rejected.json()["detail"] == f"unknown signing key {stranger.key_id}"


async def test_a_token_sends_for_its_own_tenant_only(
    api: httpx.AsyncClient, farm: tuple[UUID, Signer]
) -> None:
    tenant, device = farm
    nobody = uuid4()
    event = signed_event(device, tenant, "2026", "f-1", payload(0.5))
    batch = await api.post(f"/v1/tenants/{nobody}/events", json={"events": [event]})
    single = await api.post(f"/v1/tenants/{nobody}/events/single", json=event)
    assert (batch.status_code, single.status_code) == (403, 403)
    assert batch.json() == {"detail": f"this token may not send for tenant {nobody}"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("events", {}),
        ("events", {"events": []}),
        ("events", {"events": "all of them"}),
        ("events", {"events": [], "more": 1}),
        ("events/single", {"season_id": "2026", "field_id": "f", "payload": {}, "key_id": "k"}),
        (
            "events/single",
            {
                "season_id": "2026",
                "field_id": "f",
                "payload": {},
                "signature": "xyz",
                "key_id": "k",
            },
        ),
        (
            "events/single",
            {
                "season_id": "2026",
                "field_id": "f",
                "payload": {},
                "signature": "ab",
                "key_id": "k",
                "extra": 1,
            },
        ),
    ],
)
async def test_malformed_event_requests_are_refused_whole(
    api: httpx.AsyncClient, farm: tuple[UUID, Signer], path: str, body: dict[str, Any]
) -> None:
    tenant, _ = farm
    response = await api.post(f"/v1/tenants/{tenant}/{path}", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]


async def test_malformed_paths_and_json_are_refused(
    api: httpx.AsyncClient, farm: tuple[UUID, Signer]
) -> None:
    bad_tenant = await api.post("/v1/tenants/farm-7/events", json={"events": []})
    assert bad_tenant.status_code == 422
    not_json = await api.post(
        "/v1/callbacks/training",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert not_json.status_code == 422


# -- health and the contract ----------------------------------------------------------------


async def test_health_says_whether_the_database_answers(
    api: httpx.AsyncClient, services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    healthy = await api.get("/healthz")
    assert (healthy.status_code, healthy.json()) == (200, {"status": "ok", "database": "ok"})

    closed = await Database.connect(app_dsn_for(db_admin_dsn), max_size=1)
    await closed.close()
    deps = ApiDependencies(
        db=closed,
        callbacks=CallbackHandler(closed, RecordingSignaller()),
        events=LearningEventService(closed),
    )
    async with client_for(deps) as broken:
        sick = await broken.get("/healthz")
    assert sick.status_code == 503
    assert sick.json()["detail"].startswith("database unreachable")


async def test_the_openapi_document_describes_every_endpoint(api: httpx.AsyncClient) -> None:
    response = await api.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert set(spec["paths"]) == {
        "/healthz",
        "/v1/tenants/{tenant_id}/events",
        "/v1/tenants/{tenant_id}/events/single",
        "/v1/callbacks/training",
        "/v1/callbacks/drift",
        "/metrics",
        "/v1/tenants/{tenant_id}/drift-reports/{report_id}.html",
    }
    page = spec["paths"]["/v1/tenants/{tenant_id}/drift-reports/{report_id}.html"]["get"]
    assert {"200", "404", "422", "503"} <= set(page["responses"])
    training = spec["paths"]["/v1/callbacks/training"]["post"]
    assert {"200", "400", "403", "404", "422", "503"} <= set(training["responses"])
    assert "TrainingCallbackDocument" in spec["components"]["schemas"]


# -- callbacks ------------------------------------------------------------------------------


async def test_a_training_callback_over_http(
    api: httpx.AsyncClient, services_env: ServicesEnv, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    body = training_body(run)
    first = await api.post("/v1/callbacks/training", json=body)
    assert first.status_code == 200, first.text
    assert first.json() == {
        "tenant_id": str(run.tenant_id),
        "subject_id": str(run.run_id),
        "outcome": "ACCEPTED",
        "signalled": True,
        "detail": f"training_finished(SUCCEEDED) signalled to {run.workflow_id}",
    }
    again = await api.post("/v1/callbacks/training", json=body)
    assert (again.status_code, again.json()["outcome"]) == (200, "DUPLICATE")
    assert [workflow_id for workflow_id, _ in signaller.calls] == [run.workflow_id] * 2


async def test_training_callback_refusals_over_http(
    api: httpx.AsyncClient, services_env: ServicesEnv, signaller: RecordingSignaller
) -> None:
    run = await running_run(services_env)
    forged = await api.post(
        "/v1/callbacks/training", json=training_body(run, signer=Signer.generate())
    )
    assert forged.status_code == 403
    assert "does not verify" in forged.json()["detail"]

    other = await services_env.tenant("other farm")
    foreign = await api.post("/v1/callbacks/training", json=training_body(run, tenant=other))
    assert foreign.status_code == 404
    assert foreign.json() == {"detail": f"tenant {other} has no training run {run.run_id}"}

    malformed = training_body(run)
    malformed["signature"] = "not hex"
    assert (await api.post("/v1/callbacks/training", json=malformed)).status_code == 422

    not_finite = training_body(run)
    not_finite["document"]["metrics"]["rmse"] = float("inf")
    undecidable = await api.post(
        "/v1/callbacks/training",
        content=json_bytes(not_finite),
        headers={"Content-Type": "application/json"},
    )
    assert undecidable.status_code == 400
    assert "canonical JSON" in undecidable.json()["detail"]
    assert signaller.calls == []

    signaller.unavailable = True
    unavailable = await api.post("/v1/callbacks/training", json=training_body(run))
    assert unavailable.status_code == 503
    assert unavailable.headers["Retry-After"] == "5"


async def test_a_drift_callback_over_http(
    api: httpx.AsyncClient, services_env: ServicesEnv
) -> None:
    env = services_env
    tenant = await env.tenant()
    report = await drift_report(env, tenant)
    confirmed = await api.post(
        "/v1/callbacks/drift",
        json=drift_body(tenant, report.id, report.report_sha256, env.platform),
    )
    assert confirmed.status_code == 200, confirmed.text
    assert confirmed.json()["outcome"] == "ACCEPTED"
    assert confirmed.json()["signalled"] is False
    mismatch = await api.post(
        "/v1/callbacks/drift", json=drift_body(tenant, report.id, "00" * 32, env.platform)
    )
    assert mismatch.status_code == 409
    forged = await api.post(
        "/v1/callbacks/drift",
        json=drift_body(tenant, report.id, report.report_sha256, Signer.generate()),
    )
    assert forged.status_code == 403
    missing = await api.post(
        "/v1/callbacks/drift",
        json=drift_body(tenant, uuid4(), report.report_sha256, env.platform),
    )
    assert missing.status_code == 404


# -- for real: uvicorn, the Temporal dev server, the job's HTTP client -----------------------


@workflow.defn(name="CallbackProbe")
class CallbackProbe:
    """Waits, as RetrainingPipeline does, for ``training_finished`` and returns it."""

    def __init__(self) -> None:
        self._outcome: TrainingOutcome | None = None

    @workflow.signal(name=TRAINING_FINISHED_SIGNAL)
    def training_finished(self, outcome: TrainingOutcome) -> None:
        if self._outcome is None:
            self._outcome = outcome

    @workflow.run
    async def run(self) -> TrainingOutcome:
        await workflow.wait_condition(lambda: self._outcome is not None)
        assert self._outcome is not None
        return self._outcome


async def test_a_callback_reaches_the_waiting_workflow_through_temporal(
    temporal: WorkflowEnvironment, services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    run = await running_run(services_env)
    settings = Settings(database_url=db_admin_dsn, app_database_url=app_dsn_for(db_admin_dsn))
    queue = f"callbacks-{uuid.uuid4()}"
    async with (
        Worker(
            temporal.client,
            task_queue=queue,
            workflows=[CallbackProbe],
            # The probe lives in this test module, whose imports (FastAPI, asyncpg, ...) the
            # sandbox would have to re-import; it is deterministic without the sandbox.
            workflow_runner=UnsandboxedWorkflowRunner(),
        ),
        running_api(settings, ApiConfig(port=0), client=temporal.client) as base_url,
    ):
        handle = await temporal.client.start_workflow(
            CallbackProbe.run, id=run.workflow_id, task_queue=queue
        )
        url = training_callback_url(base_url)
        body = json_bytes(training_body(run))
        async with asyncio.timeout(WAIT_SECONDS):
            assert await post_callback(url, body, attempts=1)
            delivered = await handle.result()
        assert delivered == TrainingOutcome(
            training_run_id=run.run_id,
            status="SUCCEEDED",
            artifact_uri=ARTIFACT_URI,
            artifact_sha256=ARTIFACT_SHA,
            metrics=METRICS,
        )
        # The workflow has finished: a late copy is still answered, with a note.
        async with httpx.AsyncClient() as client:
            late = await client.post(
                url, content=body, headers={"Content-Type": "application/json"}
            )
    assert late.status_code == 200, late.text
    assert late.json()["outcome"] == "DUPLICATE"
    assert late.json()["signalled"] is False
    assert "no longer running" in late.json()["detail"]


async def test_a_busy_port_stops_the_api_with_a_clear_error(
    temporal: WorkflowEnvironment, db_admin_dsn: str
) -> None:
    settings = Settings(database_url=db_admin_dsn, app_database_url=app_dsn_for(db_admin_dsn))
    async with running_api(settings, ApiConfig(port=0), client=temporal.client) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        with pytest.raises(ApiStartupError, match=f"cannot listen on 127.0.0.1:{port}"):
            async with running_api(settings, ApiConfig(port=port), client=temporal.client):
                pass


async def test_the_api_metrics_name_no_tenant(
    temporal: WorkflowEnvironment, services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    """The API's /metrics answers anyone who reaches its port: after ingest for a tenant with
    a name found nowhere else, it carries the tenant's id on the ingest counters (documented
    labels) and never its name; tenant names are the worker's (rai_tenant_info)."""
    name = f"Quetzalcoatl Orchards {uuid4().hex[:8]}"
    tenant = await services_env.tenant(name)
    await services_env.tenant(f"Xylophage Vineyards {uuid4().hex[:8]}")  # one it never ingests
    device = Signer.generate()
    await register_key(services_env.db, tenant, device.public_key, "device")
    token = await create_token(services_env.db, tenant, "metrics test")
    settings = Settings(database_url=db_admin_dsn, app_database_url=app_dsn_for(db_admin_dsn))
    async with (
        running_api(settings, ApiConfig(port=0), client=temporal.client) as base_url,
        httpx.AsyncClient(base_url=base_url) as client,
    ):
        events = [signed_event(device, tenant, "2026", f"f-{i}", payload(i / 10)) for i in range(3)]
        sent = await client.post(
            f"/v1/tenants/{tenant}/events",
            json={"events": events},
            headers={"Authorization": f"Bearer {token.secret}"},
        )
        assert sent.status_code == 200, sent.text
        scraped = await client.get("/metrics")
    assert scraped.status_code == 200
    body = scraped.text
    accepted = {
        (sample.labels["tenant"], sample.value)
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name == "rai_ingest_events_total" and sample.labels["outcome"] == "ACCEPTED"
    }
    assert accepted == {(str(tenant), 3.0)}
    for word in ("Quetzalcoatl", "Xylophage", "Orchards", "Vineyards"):
        assert word not in body
    assert "rai_tenant_info" not in body
    assert "name=" not in body
