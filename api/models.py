"""The API's request and response bodies (the callbacks' bodies are the services' own models).

Request models check only the transport shape (types, hex); whether an event is acceptable
(payload schema, key, signature, the 64-byte signature length) is the service's per-event
judgement, so one bad event never sinks a batch.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.policies import EventOutcome
from services.callbacks import CallbackOutcome, CallbackResult
from services.events import EventResult, IncomingEvent

MAX_EVENTS_PER_BATCH = 10_000

HexBytes = Annotated[str, StringConstraints(pattern=r"^(?:[0-9a-fA-F]{2})*$", max_length=256)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignedEvent(_Body):
    """One field observation, signed by a device key registered for the tenant over
    ``domain.documents.event_document(tenant_id, season_id, field_id, payload)``."""

    season_id: str = Field(max_length=256)
    field_id: str = Field(max_length=256)
    payload: dict[str, Any]
    signature: HexBytes = Field(description="Ed25519 signature (64 bytes) in hex")
    key_id: str = Field(max_length=64, description="the device key's id (32 hex digits)")

    def incoming(self) -> IncomingEvent:
        return IncomingEvent(
            season_id=self.season_id,
            field_id=self.field_id,
            payload=self.payload,
            signature=bytes.fromhex(self.signature),
            key_id=self.key_id,
        )


class EventBatch(_Body):
    events: list[SignedEvent] = Field(min_length=1, max_length=MAX_EVENTS_PER_BATCH)


class EventResultOut(_Body):
    index: int
    season_id: str
    field_id: str
    outcome: EventOutcome
    reason: str | None = None

    @classmethod
    def of(cls, result: EventResult) -> EventResultOut:
        return cls(
            index=result.index,
            season_id=result.season_id,
            field_id=result.field_id,
            outcome=result.outcome,
            reason=result.reason,
        )


class EventBatchResult(_Body):
    tenant_id: UUID
    counts: dict[EventOutcome, int]
    results: list[EventResultOut]


class EventRefusal(_Body):
    """A single event the service refused (CONFLICT or REJECTED)."""

    detail: str
    result: EventResultOut


class CallbackAnswer(_Body):
    tenant_id: UUID
    subject_id: UUID = Field(description="the training run or drift report the callback is about")
    outcome: CallbackOutcome
    signalled: bool = Field(description="whether a waiting workflow was signalled")
    detail: str

    @classmethod
    def of(cls, result: CallbackResult) -> CallbackAnswer:
        return cls(
            tenant_id=result.tenant_id,
            subject_id=result.subject_id,
            outcome=result.outcome,
            signalled=result.signalled,
            detail=result.detail,
        )


class ErrorDetail(_Body):
    detail: str


class Health(_Body):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"
