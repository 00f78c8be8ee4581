"""LearningEventService (M18): signed field observations in, idempotently.

Each event is checked on its own — transport shape (:func:`parse_event`: unknown keys, bad
hex, a signature of the wrong length, strings Postgres cannot store such as NUL or lone
surrogates, over-long strings, non-finite or huge numbers, deep nesting), payload schema, key,
Ed25519 signature — and one bad event never sinks the batch: it is REJECTED with its reason.
Signatures are verified on a thread pool (PyNaCl releases the GIL), so one process uses every
core for the expensive part. Valid events are inserted with one statement per batch; an event
whose (season, field) is already stored is a DUPLICATE when its payload hash matches and a
CONFLICT otherwise (the stored observation is never overwritten). The batch's decisions are
appended to the tenant's hash-chained audit log in the same transaction, so a batch is stored
whole or not at all.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, overload
from uuid import UUID

from pydantic import ValidationError

from adapters.metrics import Metrics
from db.integrity import record_check
from db.repository import Database
from domain.canonical import canonical_json_of_checked
from domain.documents import EventPayload, event_signed_bytes_and_payload_sha256
from domain.policies import EventOutcome, replay_outcome
from domain.signing import verify_framed
from services.ports import MetricsPort

MAX_ID_CHARS: Final = 256
MAX_PAYLOAD_STRING_CHARS: Final = 1024
MAX_PAYLOAD_DEPTH: Final = 8
# Integers beyond this lose precision as the float the schema reads them as.
MAX_SAFE_INTEGER: Final = 2**53
SIGNATURE_HEX_CHARS: Final = 128
EVENT_KEYS: Final = frozenset({"season_id", "field_id", "payload", "signature", "key_id"})
_KEY_ID = re.compile(r"[0-9a-f]{32}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")
# Below this many events a batch is verified on the event loop: handing it to threads costs more.
_THREADED_FROM: Final = 32


class HugeNumber(str):
    """A JSON integer too long to be a number we store; the JSON decoder makes one (see
    ``parse_int`` in the API) so that the event carrying it is rejected on its own."""


@dataclass(frozen=True)
class IncomingEvent:
    season_id: str
    field_id: str
    payload: Mapping[str, Any]
    signature: bytes
    key_id: str


@dataclass(frozen=True)
class MalformedEvent:
    """An event refused before it could be read as one; kept for its place in the batch."""

    season_id: str
    field_id: str
    reason: str


@dataclass(frozen=True)
class EventResult:
    index: int
    season_id: str
    field_id: str
    outcome: EventOutcome
    reason: str | None = None


@dataclass(frozen=True)
class IngestedBatch(Sequence[EventResult]):
    """One batch's results in the batch's order (it is the sequence of them) and how many
    events had each outcome, every outcome present: counted once, for the batch's audit row,
    the ingest metric and the API's answer."""

    results: tuple[EventResult, ...]
    counts: Mapping[EventOutcome, int]

    @classmethod
    def of(cls, results: Sequence[EventResult]) -> IngestedBatch:
        counted = Counter(result.outcome for result in results)
        return cls(tuple(results), {outcome: counted[outcome] for outcome in EventOutcome})

    def __len__(self) -> int:
        return len(self.results)

    @overload
    def __getitem__(self, index: int) -> EventResult: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[EventResult, ...]: ...

    def __getitem__(self, index: int | slice) -> EventResult | tuple[EventResult, ...]:
        return self.results[index]

    def refused(self) -> list[EventResult]:
        """The events not stored and not already stored: REJECTED or CONFLICT."""
        return [r for r in self.results if r.outcome in _REFUSED]


_REFUSED: Final = (EventOutcome.REJECTED, EventOutcome.CONFLICT)


@dataclass(frozen=True)
class _Valid:
    index: int
    event: IncomingEvent
    #: the payload's canonical JSON: what was signed, stored as it is
    payload_json: str
    sha256: str


def _text_problem(value: str, max_chars: int) -> str | None:
    if len(value) > max_chars:
        return f"longer than {max_chars} characters"
    if "\x00" in value:
        return "contains a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate)"
    return None


def _value_problem(value: Any, path: str, depth: int) -> str | None:
    """What makes a payload value unstorable or unjudgeable, or None."""
    if depth > MAX_PAYLOAD_DEPTH:
        return f"{path}: nested deeper than {MAX_PAYLOAD_DEPTH} levels"
    if isinstance(value, HugeNumber):
        return f"{path}: the number {value[:20]}... is too large"
    if isinstance(value, str):
        problem = _text_problem(value, MAX_PAYLOAD_STRING_CHARS)
        return f"{path}: {problem}" if problem else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return f"{path}: the number {value} is too large" if abs(value) > MAX_SAFE_INTEGER else None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{path}: {value} is not a finite number"
    if isinstance(value, dict):
        for key, item in value.items():
            problem = _text_problem(key, MAX_ID_CHARS) if isinstance(key, str) else "not text"
            if problem:
                return f"{path}: a key {problem}"
            found = _value_problem(item, f"{path}.{key}", depth + 1)
            if found:
                return found
        return None
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _value_problem(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
        return None
    return f"{path}: {type(value).__name__} is not a JSON value"


def _printable(value: Any, max_chars: int = MAX_ID_CHARS) -> str:
    """Text a result (and the audit log) may echo: what Postgres and JSON can carry, cut
    short; anything else is replaced."""
    if not isinstance(value, str):
        return ""
    return value[:max_chars].replace("\x00", "\ufffd").encode("utf-8", "replace").decode()


def parse_event(raw: Any) -> IncomingEvent | MalformedEvent:
    """One event of a request body (decoded JSON), or why it cannot be one."""
    if not isinstance(raw, dict):
        return MalformedEvent("", "", "schema error: an event is a JSON object")
    season, field = _printable(raw.get("season_id")), _printable(raw.get("field_id"))

    def malformed(reason: str) -> MalformedEvent:
        return MalformedEvent(season, field, f"schema error: {_printable(reason, 1000)}")

    unknown = sorted(str(key)[:64] for key in raw.keys() - EVENT_KEYS)
    if unknown:
        return malformed(f"unknown keys {', '.join(unknown[:5])}")
    missing = sorted(EVENT_KEYS - raw.keys())
    if missing:
        return malformed(f"missing {', '.join(missing)}")
    for name in ("season_id", "field_id", "key_id", "signature"):
        if not isinstance(raw[name], str):
            return malformed(f"{name} must be a string")
    for name in ("season_id", "field_id"):
        problem = _text_problem(raw[name], MAX_ID_CHARS)
        if problem:
            return malformed(f"{name} {problem}")
    if not _KEY_ID.fullmatch(raw["key_id"]):
        return malformed("key_id must be 32 lowercase hex digits")
    signature: str = raw["signature"]
    if len(signature) > 2 * SIGNATURE_HEX_CHARS or not _HEX.fullmatch(signature):
        return malformed("signature is not hex")
    if len(signature) != SIGNATURE_HEX_CHARS:
        return malformed(f"signature must be 64 bytes, not {len(signature) // 2}")
    if not isinstance(raw["payload"], dict):
        return malformed("payload must be a JSON object")
    problem = _value_problem(raw["payload"], "payload", 1)
    if problem:
        return malformed(problem)
    return IncomingEvent(
        season_id=raw["season_id"],
        field_id=raw["field_id"],
        payload=raw["payload"],
        signature=bytes.fromhex(signature),
        key_id=raw["key_id"],
    )


def _verify_all(work: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    return [verify_framed(public_key, message, sig) for public_key, message, sig in work]


class LearningEventService:
    def __init__(
        self,
        db: Database,
        *,
        verify_threads: int | None = None,
        metrics: MetricsPort | None = None,
    ) -> None:
        self._db = db
        self._metrics: MetricsPort = metrics if metrics is not None else Metrics()
        self._threads = verify_threads or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="rai-verify")

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    async def _verify(self, work: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
        """Ed25519 verification of ``work`` (public key, message, signature), split over the
        thread pool for batches large enough to be worth it."""
        if len(work) < _THREADED_FROM or self._threads == 1:
            return _verify_all(work)
        loop = asyncio.get_running_loop()
        size = -(-len(work) // self._threads)
        chunks = [work[start : start + size] for start in range(0, len(work), size)]
        verdicts = await asyncio.gather(
            *(loop.run_in_executor(self._pool, _verify_all, chunk) for chunk in chunks)
        )
        return [ok for chunk in verdicts for ok in chunk]

    async def ingest(
        self, tenant_id: UUID, events: Sequence[IncomingEvent | MalformedEvent]
    ) -> IngestedBatch:
        started = time.monotonic()
        batch = await self._ingest(tenant_id, events)
        self._metrics.events_ingested(
            str(tenant_id),
            {outcome.value: n for outcome, n in batch.counts.items()},
            time.monotonic() - started,
        )
        return batch

    async def _ingest(
        self, tenant_id: UUID, events: Sequence[IncomingEvent | MalformedEvent]
    ) -> IngestedBatch:
        results: dict[int, EventResult] = {}

        def reject(index: int, event: IncomingEvent | MalformedEvent, reason: str) -> None:
            results[index] = EventResult(
                index, event.season_id, event.field_id, EventOutcome.REJECTED, reason
            )

        parsed: list[tuple[int, IncomingEvent, bytes]] = []
        for index, event in enumerate(events):
            if isinstance(event, MalformedEvent):
                reject(index, event, event.reason)
                continue
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
            try:
                payload_json = canonical_json_of_checked(dict(event.payload))
            except ValueError as exc:  # walked already: a non-finite number cannot get here
                reject(index, event, f"schema error: {exc}")
                continue
            parsed.append((index, event, payload_json))

        async with self._db.transaction(tenant_id) as conn:
            key_rows = await conn.fetch(
                "SELECT key_id, public_key, revoked_at FROM signing_keys"
                " WHERE purpose = 'device' AND key_id = ANY($1::text[])",
                sorted({event.key_id for _, event, _ in parsed}),
            )
            keys = {row["key_id"]: row for row in key_rows}

            checkable: list[tuple[int, IncomingEvent, bytes, str]] = []
            work: list[tuple[bytes, bytes, bytes]] = []
            for index, event, payload_json in parsed:
                key = keys.get(event.key_id)
                if key is None:
                    reject(index, event, f"unknown signing key {event.key_id}")
                    continue
                if key["revoked_at"] is not None:
                    reject(index, event, f"signing key {event.key_id} is revoked")
                    continue
                message, sha256 = event_signed_bytes_and_payload_sha256(
                    tenant_id, event.season_id, event.field_id, payload_json
                )
                checkable.append((index, event, payload_json, sha256))
                work.append((key["public_key"], message, event.signature))
            verdicts = await self._verify(work)

            first_by_slot: dict[tuple[str, str], _Valid] = {}
            repeats: list[_Valid] = []
            for (index, event, payload_json, sha256), verified in zip(
                checkable, verdicts, strict=True
            ):
                if not verified:
                    reject(index, event, "bad signature")
                    continue
                valid = _Valid(index, event, payload_json.decode("utf-8"), sha256)
                slot = (event.season_id, event.field_id)
                if slot in first_by_slot:
                    repeats.append(valid)
                else:
                    first_by_slot[slot] = valid

            candidates = list(first_by_slot.values())
            inserted = await conn.fetch(
                "INSERT INTO learning_events"
                " (tenant_id, season_id, field_id, payload, payload_sha256, signature, key_id)"
                " SELECT $1, s, f, p::jsonb, h, sig, k"
                " FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::bytea[],"
                "   $7::text[]) AS t(s, f, p, h, sig, k)"
                " ON CONFLICT (tenant_id, season_id, field_id) DO NOTHING"
                " RETURNING season_id, field_id",
                tenant_id,
                [v.event.season_id for v in candidates],
                [v.event.field_id for v in candidates],
                [v.payload_json for v in candidates],
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

            batch = IngestedBatch.of([results[index] for index in range(len(events))])
            refused = batch.refused()
            await record_check(
                conn,
                tenant_id,
                "events.ingest",
                f"batch:{len(events)}",
                "PARTIAL" if refused else "OK",
                {
                    "counts": {o.value: n for o, n in batch.counts.items() if n},
                    "refused": [
                        {
                            "index": r.index,
                            "season_id": r.season_id,
                            "field_id": r.field_id,
                            "outcome": r.outcome.value,
                            "reason": r.reason,
                        }
                        for r in refused[:100]
                    ],
                },
            )
        return batch


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
    for name, value in (("season_id", event.season_id), ("field_id", event.field_id)):
        problem = _text_problem(value, MAX_ID_CHARS)
        if problem:
            return f"{name} {problem}"
    if not _KEY_ID.fullmatch(event.key_id):
        return "key_id must be 32 lowercase hex digits"
    if len(event.signature) != 64:
        return "signature must be 64 bytes"
    return _value_problem(dict(event.payload), "payload", 1)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "payload"
    return f"{where}: {error['msg']}"
