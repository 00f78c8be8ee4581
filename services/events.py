"""LearningEventService (M18): signed field observations in, idempotently.

Each event is checked on its own — schema, key, Ed25519 signature — and one bad event never
sinks the batch. Valid events are inserted in one statement per batch; an event whose
(season, field) is already stored is a DUPLICATE when its payload hash matches and a CONFLICT
otherwise (the stored observation is never overwritten). The batch's decisions are appended to
the tenant's hash-chained audit log.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from adapters.metrics import Metrics
from db.integrity import record_check
from db.repository import Database
from domain.documents import EventPayload, event_document, payload_sha256
from domain.policies import EventOutcome, replay_outcome
from domain.signing import DocumentKind, verify
from services.ports import MetricsPort


@dataclass(frozen=True)
class IncomingEvent:
    season_id: str
    field_id: str
    payload: Mapping[str, Any]
    signature: bytes
    key_id: str


@dataclass(frozen=True)
class EventResult:
    index: int
    season_id: str
    field_id: str
    outcome: EventOutcome
    reason: str | None = None


@dataclass(frozen=True)
class _Valid:
    index: int
    event: IncomingEvent
    payload: dict[str, Any]
    sha256: str


class LearningEventService:
    def __init__(self, db: Database, *, metrics: MetricsPort | None = None) -> None:
        self._db = db
        self._metrics: MetricsPort = metrics if metrics is not None else Metrics()

    async def ingest(self, tenant_id: UUID, events: Sequence[IncomingEvent]) -> list[EventResult]:
        started = time.monotonic()
        results = await self._ingest(tenant_id, events)
        counts = Counter(result.outcome.value for result in results)
        self._metrics.events_ingested(str(tenant_id), counts, time.monotonic() - started)
        return results

    async def _ingest(self, tenant_id: UUID, events: Sequence[IncomingEvent]) -> list[EventResult]:
        results: dict[int, EventResult] = {}

        def reject(index: int, event: IncomingEvent, reason: str) -> None:
            results[index] = EventResult(
                index, event.season_id, event.field_id, EventOutcome.REJECTED, reason
            )

        parsed: list[tuple[int, IncomingEvent, dict[str, Any]]] = []
        for index, event in enumerate(events):
            problem = _shape_problem(event)
            if problem:
                reject(index, event, f"schema error: {problem}")
                continue
            try:
                EventPayload.model_validate(event.payload)
            except ValidationError as exc:
                reject(index, event, f"schema error: {_first_error(exc)}")
                continue
            # Stored exactly as signed, so the signature can be verified again from the row.
            parsed.append((index, event, dict(event.payload)))

        async with self._db.transaction(tenant_id) as conn:
            key_rows = await conn.fetch(
                "SELECT key_id, public_key, revoked_at FROM signing_keys"
                " WHERE purpose = 'device' AND key_id = ANY($1::text[])",
                sorted({event.key_id for _, event, _ in parsed}),
            )
            keys = {row["key_id"]: row for row in key_rows}

            first_by_slot: dict[tuple[str, str], _Valid] = {}
            repeats: list[_Valid] = []
            for index, event, payload in parsed:
                key = keys.get(event.key_id)
                if key is None:
                    reject(index, event, f"unknown signing key {event.key_id}")
                    continue
                if key["revoked_at"] is not None:
                    reject(index, event, f"signing key {event.key_id} is revoked")
                    continue
                document = event_document(tenant_id, event.season_id, event.field_id, payload)
                if not verify(key["public_key"], DocumentKind.EVENT, document, event.signature):
                    reject(index, event, "bad signature")
                    continue
                valid = _Valid(index, event, payload, payload_sha256(payload))
                slot = (event.season_id, event.field_id)
                if slot in first_by_slot:
                    repeats.append(valid)
                else:
                    first_by_slot[slot] = valid

            candidates = list(first_by_slot.values())
            inserted = await conn.fetch(
                "INSERT INTO learning_events"
                " (tenant_id, season_id, field_id, payload, payload_sha256, signature, key_id)"
                " SELECT $1, s, f, p, h, sig, k"
                " FROM unnest($2::text[], $3::text[], $4::jsonb[], $5::text[], $6::bytea[],"
                "   $7::text[]) AS t(s, f, p, h, sig, k)"
                " ON CONFLICT (tenant_id, season_id, field_id) DO NOTHING"
                " RETURNING season_id, field_id",
                tenant_id,
                [v.event.season_id for v in candidates],
                [v.event.field_id for v in candidates],
                [v.payload for v in candidates],
                [v.sha256 for v in candidates],
                [v.event.signature for v in candidates],
                [v.event.key_id for v in candidates],
            )
            new_slots = {(row["season_id"], row["field_id"]) for row in inserted}
            stored_elsewhere = [
                v for v in candidates if (v.event.season_id, v.event.field_id) not in new_slots
            ]
            stored: dict[tuple[str, str], str] = {}
            if stored_elsewhere:
                rows = await conn.fetch(
                    "SELECT season_id, field_id, payload_sha256 FROM learning_events"
                    " WHERE (season_id, field_id) IN"
                    " (SELECT * FROM unnest($1::text[], $2::text[]))",
                    [v.event.season_id for v in stored_elsewhere],
                    [v.event.field_id for v in stored_elsewhere],
                )
                stored = {(r["season_id"], r["field_id"]): r["payload_sha256"] for r in rows}
            for valid in candidates:
                slot = (valid.event.season_id, valid.event.field_id)
                if slot in new_slots:
                    outcome = EventOutcome.ACCEPTED
                    stored[slot] = valid.sha256
                else:
                    outcome = replay_outcome(stored[slot], valid.sha256)
                results[valid.index] = _result(valid, outcome)
            for valid in repeats:
                slot = (valid.event.season_id, valid.event.field_id)
                results[valid.index] = _result(valid, replay_outcome(stored[slot], valid.sha256))

            ordered = [results[index] for index in range(len(events))]
            counts = Counter(result.outcome.value for result in ordered)
            await record_check(
                conn,
                tenant_id,
                "events.ingest",
                f"batch:{len(events)}",
                "OK" if not (counts["REJECTED"] or counts["CONFLICT"]) else "PARTIAL",
                {
                    "counts": dict(counts),
                    "refused": [
                        {
                            "index": r.index,
                            "season_id": r.season_id,
                            "field_id": r.field_id,
                            "outcome": r.outcome.value,
                            "reason": r.reason,
                        }
                        for r in ordered
                        if r.outcome in (EventOutcome.REJECTED, EventOutcome.CONFLICT)
                    ][:100],
                },
            )
        return ordered


def _result(valid: _Valid, outcome: EventOutcome) -> EventResult:
    reason = (
        "a different payload is stored for this season and field"
        if (outcome is EventOutcome.CONFLICT)
        else None
    )
    return EventResult(valid.index, valid.event.season_id, valid.event.field_id, outcome, reason)


def _shape_problem(event: IncomingEvent) -> str | None:
    if not event.season_id.strip() or not event.field_id.strip():
        return "season_id and field_id must not be blank"
    if len(event.signature) != 64:
        return "signature must be 64 bytes"
    return None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "payload"
    return f"{where}: {error['msg']}"
