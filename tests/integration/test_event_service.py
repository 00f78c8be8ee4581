"""LearningEventService against the real Postgres: signatures, idempotency, isolation."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from db.repository import Database
from db.tenants import create_tenant
from domain.documents import event_document
from domain.policies import EventOutcome
from domain.signing import DocumentKind, Signer, verify
from services.events import IncomingEvent, LearningEventService
from services.keys import register_key, revoke_key

pytestmark = pytest.mark.integration


def signed(
    signer: Signer, tenant: UUID, season: str, field: str, payload: dict[str, Any]
) -> IncomingEvent:
    document = event_document(tenant, season, field, payload)
    return IncomingEvent(
        season, field, payload, signer.sign(DocumentKind.EVENT, document), signer.key_id
    )


def payload(value: float, soil: str = "loam") -> dict[str, Any]:
    return {
        "features": {"ndvi": value, "soil": soil},
        "outcome": value * 10,
        "attributes": {"region": "north"},
    }


@pytest.fixture
async def farm(app_db: Database) -> tuple[UUID, Signer]:
    tenant = (await create_tenant(app_db, "farm")).id
    device = Signer.generate()
    await register_key(app_db, tenant, device.public_key, "device")
    return tenant, device


async def test_accepts_valid_events_once(app_db: Database, farm: tuple[UUID, Signer]) -> None:
    tenant, device = farm
    service = LearningEventService(app_db)
    batch = [signed(device, tenant, "2026", f"f-{i}", payload(i / 10)) for i in range(50)]
    first = await service.ingest(tenant, batch)
    assert [r.outcome for r in first] == [EventOutcome.ACCEPTED] * 50
    again = await service.ingest(tenant, batch)
    assert [r.outcome for r in again] == [EventOutcome.DUPLICATE] * 50
    async with app_db.transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM learning_events") == 50


async def test_conflict_never_overwrites(app_db: Database, farm: tuple[UUID, Signer]) -> None:
    tenant, device = farm
    service = LearningEventService(app_db)
    original = signed(device, tenant, "2026", "f-1", payload(0.5))
    changed = signed(device, tenant, "2026", "f-1", payload(0.9))
    results = await service.ingest(tenant, [original, changed, original])
    assert [r.outcome for r in results] == [
        EventOutcome.ACCEPTED,
        EventOutcome.CONFLICT,
        EventOutcome.DUPLICATE,
    ]
    assert (await service.ingest(tenant, [changed]))[0].outcome is EventOutcome.CONFLICT
    async with app_db.transaction(tenant) as conn:
        stored = await conn.fetchval("SELECT payload FROM learning_events")
    assert stored == payload(0.5)


async def test_one_bad_event_never_sinks_the_batch(
    app_db: Database, farm: tuple[UUID, Signer]
) -> None:
    tenant, device = farm
    service = LearningEventService(app_db)
    stranger = Signer.generate()
    revoked = Signer.generate()
    await register_key(app_db, tenant, revoked.public_key, "device")
    await revoke_key(app_db, tenant, revoked.key_id)
    good = signed(device, tenant, "2026", "ok", payload(0.1))
    tampered = signed(device, tenant, "2026", "t", payload(0.2))
    tampered = IncomingEvent("2026", "t", payload(0.3), tampered.signature, tampered.key_id)
    moved = signed(device, tenant, "2026", "a", payload(0.2))
    moved = IncomingEvent("2026", "b", moved.payload, moved.signature, moved.key_id)
    batch = [
        good,
        tampered,
        moved,
        signed(stranger, tenant, "2026", "u", payload(0.4)),
        signed(revoked, tenant, "2026", "r", payload(0.4)),
        signed(device, tenant, "2026", "s", {"features": {}}),
        signed(device, tenant, "2026", "x", {"features": {"ndvi": 1.0}, "unknown": 1}),
        IncomingEvent("2026", "short", payload(0.1), b"\x00" * 10, device.key_id),
        IncomingEvent(" ", "f", payload(0.1), b"\x00" * 64, device.key_id),
    ]
    results = await service.ingest(tenant, batch)
    assert results[0].outcome is EventOutcome.ACCEPTED
    assert [r.outcome for r in results[1:]] == [EventOutcome.REJECTED] * 8
    reasons = [r.reason or "" for r in results[1:]]
    assert reasons[0] == "bad signature"
    assert reasons[1] == "bad signature"
    assert reasons[2].startswith("unknown signing key")
    assert reasons[3].endswith("is revoked")
    assert reasons[4].startswith("schema error: features")
    assert reasons[5].startswith("schema error: unknown")
    assert reasons[6] == "schema error: signature must be 64 bytes"
    assert reasons[7].startswith("schema error: season_id")
    async with app_db.transaction(tenant) as conn:
        assert await conn.fetchval("SELECT count(*) FROM learning_events") == 1
        audit = await conn.fetchrow(
            "SELECT outcome, details FROM integrity_checks WHERE check_type = 'events.ingest'"
        )
    assert audit is not None
    assert audit["outcome"] == "PARTIAL"
    assert audit["details"]["counts"] == {"ACCEPTED": 1, "REJECTED": 8}


async def test_events_do_not_cross_tenants(app_db: Database, farm: tuple[UUID, Signer]) -> None:
    tenant, device = farm
    other = (await create_tenant(app_db, "other")).id
    service = LearningEventService(app_db)
    event = signed(device, tenant, "2026", "f-1", payload(0.5))
    # the device's key is not registered for the other tenant, and the signature binds the tenant
    assert (await service.ingest(other, [event]))[0].outcome is EventOutcome.REJECTED
    await register_key(app_db, other, device.public_key, "device")
    result = (await service.ingest(other, [event]))[0]
    assert (result.outcome, result.reason) == (EventOutcome.REJECTED, "bad signature")
    async with app_db.transaction(other) as conn:
        assert await conn.fetchval("SELECT count(*) FROM learning_events") == 0


async def test_stored_rows_still_verify(
    app_db: Database, farm: tuple[UUID, Signer], db_admin_dsn: str
) -> None:
    tenant, device = farm
    await LearningEventService(app_db).ingest(
        tenant, [signed(device, tenant, "2026", "f-1", payload(0.25))]
    )
    conn = await asyncpg.connect(db_admin_dsn)
    try:
        row = await conn.fetchrow("SELECT * FROM rai.learning_events")
    finally:
        await conn.close()
    assert row is not None
    document = event_document(tenant, row["season_id"], row["field_id"], json.loads(row["payload"]))
    assert verify(device.public_key, DocumentKind.EVENT, document, row["signature"])
