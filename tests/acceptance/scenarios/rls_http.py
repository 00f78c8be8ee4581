"""The HTTP half of scenario 6: tenant A's API token (or none, or a revoked one) against tenant
B's routes and ids, B's events and ids replayed, and callbacks for B's run not signed by B's
run key. The app is the real one (``api.app.create_app`` over the scenario's database as
rai_app), driven over ASGI; each attack must get a refusal status or change nothing, and B's
rows are fingerprinted around all attacks by the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx

from api.app import ApiDependencies, create_app
from domain.documents import event_document
from domain.signing import DocumentKind, Signer
from domain.trust import TrustedKeys
from services.callbacks import CallbackHandler
from services.drift_reports import DriftReportReader
from services.events import LearningEventService
from services.keys import register_key
from services.tokens import create_token, revoke_token
from tests.acceptance.stack import World
from tests.integration.callback_support import (
    RecordingSignaller,
    Run,
    drift_body,
    drift_report,
    running_run,
    training_body,
)


@dataclass(frozen=True)
class HttpTargets:
    a: UUID
    b: UUID
    a_token: str
    b_token: str
    revoked_token: str
    a_device: Signer
    b_device: Signer
    b_run: Run
    b_report_id: UUID


def event(device: Signer, tenant: UUID, field: str) -> dict[str, Any]:
    body = {"features": {"ndvi": 0.4, "soil": "loam"}, "outcome": 4.0}
    document = event_document(tenant, "2099", field, body)
    return {
        "season_id": "2099",
        "field_id": field,
        "payload": body,
        "signature": device.sign(DocumentKind.EVENT, document).hex(),
        "key_id": device.key_id,
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


Attack = Callable[[httpx.AsyncClient, HttpTargets], Awaitable[httpx.Response]]


def attacks() -> list[tuple[str, Attack, set[int]]]:
    """(what, request, the statuses that count as refused)."""
    events = "/v1/tenants/{}/events"
    return [
        (
            "A's token posts a batch to B's route",
            lambda c, t: c.post(
                events.format(t.b),
                json={"events": [event(t.a_device, t.b, "x")]},
                headers=bearer(t.a_token),
            ),
            {403},
        ),
        (
            "A's token posts one event to B's route",
            lambda c, t: c.post(
                events.format(t.b) + "/single",
                json=event(t.a_device, t.b, "x"),
                headers=bearer(t.a_token),
            ),
            {403},
        ),
        (
            "A's token sends B-signed events to B's route",
            lambda c, t: c.post(
                events.format(t.b),
                json={"events": [event(t.b_device, t.b, "y")]},
                headers=bearer(t.a_token),
            ),
            {403},
        ),
        (
            "A's token on B's route, tenant id in upper case",
            lambda c, t: c.post(
                events.format(str(t.b).upper()),
                json={"events": [event(t.a_device, t.b, "x")]},
                headers=bearer(t.a_token),
            ),
            {403},
        ),
        (
            "no token on B's route",
            lambda c, t: c.post(events.format(t.b), json={"events": [event(t.b_device, t.b, "z")]}),
            {401},
        ),
        (
            "a made-up token on B's route",
            lambda c, t: c.post(
                events.format(t.b),
                json={"events": [event(t.b_device, t.b, "z")]},
                headers=bearer("rai_" + "A" * 43),
            ),
            {401},
        ),
        (
            "B's revoked token on B's route",
            lambda c, t: c.post(
                events.format(t.b),
                json={"events": [event(t.b_device, t.b, "z")]},
                headers=bearer(t.revoked_token),
            ),
            {401},
        ),
        (
            "B's token in the query string",
            lambda c, t: c.post(
                events.format(t.b) + f"?token={t.b_token}",
                json={"events": [event(t.b_device, t.b, "z")]},
            ),
            {401},
        ),
        (
            "path traversal to B from A's route",
            lambda c, t: c.post(
                events.format(f"{t.a}/../{t.b}"),
                json={"events": [event(t.a_device, t.b, "x")]},
                headers=bearer(t.a_token),
            ),
            {403, 404, 422},
        ),
        (
            "A's token reads B's drift report page",
            lambda c, t: c.get(
                f"/v1/tenants/{t.b}/drift-reports/{t.b_report_id}.html",
                headers=bearer(t.a_token),
            ),
            {403},
        ),
        (
            "B's drift report id replayed on A's route",
            lambda c, t: c.get(
                f"/v1/tenants/{t.a}/drift-reports/{t.b_report_id}.html",
                headers=bearer(t.a_token),
            ),
            {404},
        ),
        (
            "training callback for B's run signed by another key",
            lambda c, t: c.post(
                "/v1/callbacks/training", json=training_body(t.b_run, signer=Signer.generate())
            ),
            {400, 403},
        ),
        (
            "training callback for B's run claiming tenant A",
            lambda c, t: c.post("/v1/callbacks/training", json=training_body(t.b_run, tenant=t.a)),
            {400, 403, 404},
        ),
        (
            "training callback for B's run signed by A's device key",
            lambda c, t: c.post(
                "/v1/callbacks/training", json=training_body(t.b_run, signer=t.a_device)
            ),
            {400, 403},
        ),
        (
            "training callback for a guessed run id of B",
            lambda c, t: c.post(
                "/v1/callbacks/training",
                json=training_body(Run(t.b, uuid4(), t.b_run.workflow_id, Signer.generate())),
            ),
            {400, 403, 404},
        ),
        (
            "drift callback for B's report signed by another key",
            lambda c, t: c.post(
                "/v1/callbacks/drift",
                json=drift_body(t.b, t.b_report_id, "ab" * 32, Signer.generate()),
            ),
            {400, 403, 404},
        ),
    ]


async def setup(world: World, a: UUID, b: UUID) -> HttpTargets:
    db = world.env.db
    a_device, b_device = Signer.generate(), Signer.generate()
    await register_key(db, a, a_device.public_key, "device")
    await register_key(db, b, b_device.public_key, "device")
    a_token = await create_token(db, a, "acceptance A")
    b_token = await create_token(db, b, "acceptance B")
    revoked = await create_token(db, b, "acceptance B, revoked")
    await revoke_token(db, b, revoked.token.id)
    b_run = await running_run(world.env, b)
    report_id = (await drift_report(world.env, b)).id
    return HttpTargets(
        a, b, a_token.secret, b_token.secret, revoked.secret, a_device, b_device, b_run, report_id
    )


async def run_attacks(world: World, targets: HttpTargets) -> list[dict[str, Any]]:
    signaller = RecordingSignaller()
    db = world.env.db
    deps = ApiDependencies(
        db=db,
        callbacks=CallbackHandler(db, signaller),
        events=LearningEventService(db),
        drift_reports=DriftReportReader(
            db, world.env.store, TrustedKeys.of(world.env.platform.public_key)
        ),
    )
    rows = []
    transport = httpx.ASGITransport(app=create_app(deps))
    async with httpx.AsyncClient(transport=transport, base_url="http://api.test") as client:
        for name, attack, refused in attacks():
            response = await attack(client, targets)
            ok = response.status_code in refused
            rows.append(
                {
                    "via": "http",
                    "category": "api",
                    "attack": name,
                    "outcome": "refused" if ok else "SUCCEEDED",
                    "sqlstate": f"HTTP {response.status_code}",
                    "observed": response.text[:120],
                }
            )
    if signaller.calls:
        rows.append(
            {
                "via": "http",
                "category": "api",
                "attack": "any callback reached B's workflow",
                "outcome": "SUCCEEDED",
                "sqlstate": "",
                "observed": str(signaller.calls),
            }
        )
    return rows
