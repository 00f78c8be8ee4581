"""Property-based fuzzing of the ingest API over real HTTP and the real Postgres.

1. schemathesis generates requests from the app's own OpenAPI document (for every operation:
   documented and made-up bodies, headers, paths) and checks each answer: never a 5xx, a
   documented status code, content type and schema.
2. hypothesis builds batches of correctly signed events mixed with hostile ones (NUL, lone
   surrogates, over-long text, non-finite and huge numbers, bad hex, wrong signature lengths,
   unknown keys, deep nesting, non-objects): the batch is always judged (200), every hostile
   event is REJECTED with a reason, every good one ACCEPTED or DUPLICATE, and the database holds
   exactly the good ones.

The API runs in a thread with its own event loop (schemathesis and the checks below are
synchronous clients), as uvicorn on a free port.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from adapters.objectstore import ObjectStore
from api.app import ApiDependencies, create_app
from api.server import ApiConfig, serving
from db.repository import Database
from db.tenants import create_tenant
from domain.documents import event_document
from domain.signing import DocumentKind, Signer
from domain.trust import TrustedKeys
from services.callbacks import CallbackHandler
from services.drift_reports import DriftReportReader
from services.events import LearningEventService
from services.keys import register_key
from services.tokens import create_token
from settings import Settings, app_dsn_for
from tests.integration.callback_support import RecordingSignaller

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@dataclass(frozen=True)
class LiveApi:
    url: str
    tenant: UUID
    token: str
    device: Signer

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def live_api(db_admin_dsn: str, service_storage: Settings) -> Iterator[LiveApi]:
    ready: queue.Queue[LiveApi | BaseException] = queue.Queue()
    stop = asyncio.Event()
    loop_of_server: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loop_of_server.append(asyncio.get_running_loop())
        db = await Database.connect(app_dsn_for(db_admin_dsn), max_size=4)
        events = LearningEventService(db)
        try:
            tenant = (await create_tenant(db, "fuzzed farm")).id
            device = Signer.generate()
            await register_key(db, tenant, device.public_key, "device")
            token = (await create_token(db, tenant, "fuzzer")).secret
            async with (
                ObjectStore.from_settings(service_storage) as store,
                serving(
                    create_app(
                        ApiDependencies(
                            db=db,
                            callbacks=CallbackHandler(db, RecordingSignaller()),
                            events=events,
                            # the drift report pages, pinned to a platform key of the test's own
                            drift_reports=DriftReportReader(
                                db, store, TrustedKeys.of(Signer.generate().public_key)
                            ),
                        )
                    ),
                    ApiConfig(port=0),
                ) as url,
            ):
                ready.put(LiveApi(url, tenant, token, device))
                await stop.wait()
        finally:
            events.close()
            await db.close()

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:
            ready.put(exc)

    thread = threading.Thread(target=run, name="fuzzed-api", daemon=True)
    thread.start()
    started = ready.get(timeout=120)
    if isinstance(started, BaseException):
        raise started
    try:
        yield started
    finally:
        loop_of_server[0].call_soon_threadsafe(stop.set)
        thread.join(60)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def test_the_api_answers_its_own_openapi_document(live_api: LiveApi) -> None:
    schema = schemathesis.openapi.from_url(f"{live_api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} >= {
        "/v1/tenants/{tenant_id}/events",
        "/v1/tenants/{tenant_id}/events/single",
    }
    for operation in operations:
        fixed: dict[str, Any] = {}
        if "{tenant_id}" in operation.path:
            fixed["path_parameters"] = {"tenant_id": str(live_api.tenant)}

        @given(case=operation.as_strategy(headers=live_api.auth, **fixed))
        @settings(
            max_examples=60,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=live_api.url, checks=CHECKS)

        check()

        # The same operation with made-up paths and no token at all: refused, never a 5xx.
        @given(case=operation.as_strategy())
        @settings(
            max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check_anonymous(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(base_url=live_api.url, checks=CHECKS)

        check_anonymous()


# -- hypothesis: signed batches with hostile events mixed in ------------------------------

# What a well-behaved device sends: any Unicode Postgres can store (no NUL, no lone surrogate).
texts = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=30
).filter(lambda t: t.strip() != "")
good_payloads = st.fixed_dictionaries(
    {"features": st.dictionaries(texts, st.floats(-1e6, 1e6), min_size=1, max_size=4)},
    optional={"outcome": st.floats(-1e6, 1e6), "attributes": st.dictionaries(texts, texts)},
)


def _deep(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"x": value}
    return value


# Each turns a correctly signed event into one the API must reject; the JSON text is edited
# where Python's own encoder cannot say it (huge integers).
HOSTILE: dict[str, Any] = {
    "nul in season": lambda e: {**e, "season_id": e["season_id"] + "\x00"},
    "nul in field": lambda e: {**e, "field_id": "\x00" + e["field_id"]},
    "nul in payload": lambda e: {**e, "payload": {"features": {"a\x00": 1.0}}},
    "lone surrogate": lambda e: {**e, "field_id": e["field_id"] + "\udc80"},
    "long field": lambda e: {**e, "field_id": "f" * 257},
    "nan": lambda e: {**e, "payload": {"features": {"ndvi": float("nan")}}},
    "minus infinity": lambda e: {**e, "payload": {"features": {"x": 1.0}, "outcome": -1e999}},
    "huge integer": lambda e: {**e, "payload": {"features": {"x": 2**70}}},
    "bad hex": lambda e: {**e, "signature": "g" + e["signature"][1:]},
    "odd hex": lambda e: {**e, "signature": e["signature"][:-1]},
    "short signature": lambda e: {**e, "signature": e["signature"][:64]},
    "long signature": lambda e: {**e, "signature": e["signature"] + "00"},
    "unknown key": lambda e: {**e, "shape": "round"},
    "missing key": lambda e: {k: v for k, v in e.items() if k != "key_id"},
    "deep nesting": lambda e: {**e, "payload": {"features": {"x": 1.0}, "n": _deep(40)}},
    "not an object": lambda e: [e],
    "number for text": lambda e: {**e, "season_id": 2026},
    "forged payload": lambda e: {**e, "payload": {"features": {"forged": 1.0}}},
}


@dataclass(frozen=True)
class Planned:
    good: bool
    body: Any


@st.composite
def batches(draw: st.DrawFn, api: LiveApi) -> list[Planned]:
    planned: list[Planned] = []
    for _ in range(draw(st.integers(1, 12))):
        season, field = draw(texts), draw(texts)
        payload = draw(good_payloads)
        document = event_document(api.tenant, season, field, payload)
        event = {
            "season_id": season,
            "field_id": field,
            "payload": payload,
            "signature": api.device.sign(DocumentKind.EVENT, document).hex(),
            "key_id": api.device.key_id,
        }
        hostile = draw(st.none() | st.sampled_from(sorted(HOSTILE)))
        if hostile is None:
            planned.append(Planned(True, event))
        else:
            planned.append(Planned(False, HOSTILE[hostile](event)))
    return planned


def test_hostile_events_never_sink_a_batch(live_api: LiveApi, db_admin_dsn: str) -> None:
    seen_good: dict[tuple[str, str], dict[str, Any]] = {}
    client = httpx.Client(base_url=live_api.url, headers=live_api.auth, timeout=60)

    @given(batch=batches(live_api))
    @settings(
        max_examples=80, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    def check(batch: list[Planned]) -> None:
        body = json.dumps({"events": [p.body for p in batch]}, ensure_ascii=True)
        response = client.post(
            f"/v1/tenants/{live_api.tenant}/events",
            content=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["index"] for r in results] == list(range(len(batch)))
        first_in_batch: set[tuple[str, str]] = set()
        for planned, result in zip(batch, results, strict=True):
            if not planned.good:
                assert result["outcome"] == "REJECTED", (planned.body, result)
                assert result["reason"]
                continue
            slot = (planned.body["season_id"], planned.body["field_id"])
            earlier = seen_good.get(slot)
            if earlier is None and slot not in first_in_batch:
                assert result["outcome"] == "ACCEPTED", result
            elif earlier is not None and earlier != planned.body["payload"]:
                assert result["outcome"] == "CONFLICT", result
            else:
                assert result["outcome"] in ("DUPLICATE", "CONFLICT"), result
            first_in_batch.add(slot)
            seen_good.setdefault(slot, planned.body["payload"])

    try:
        check()
    finally:
        client.close()

    async def stored() -> set[tuple[str, str]]:
        conn = await asyncpg.connect(db_admin_dsn)
        try:
            rows = await conn.fetch(
                "SELECT season_id, field_id FROM rai.learning_events WHERE tenant_id = $1",
                live_api.tenant,
            )
        finally:
            await conn.close()
        return {(r["season_id"], r["field_id"]) for r in rows}

    assert asyncio.run(stored()) == set(seen_good)
