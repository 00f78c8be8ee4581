"""The API's request and response bodies (the callbacks' bodies are the services' own models).

The event routes read their bodies themselves (``api.ingest``), so one bad event never sinks a
batch: :class:`SignedEvent` documents what a good event looks like (the OpenAPI request body),
and whatever does not fit it is that event's REJECTED, judged by the service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.policies import EventOutcome
from services.callbacks import CallbackOutcome, CallbackResult
from services.events import MAX_ID_CHARS, EventResult

SignatureHex = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-fA-F]{128}$", min_length=128, max_length=128)
]
KeyIdHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SignedEvent(_Body):
    """One field observation, signed by a device key registered for the tenant over
    ``domain.documents.event_document(tenant_id, season_id, field_id, payload)``."""

    season_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    field_id: str = Field(min_length=1, max_length=MAX_ID_CHARS)
    payload: dict[str, Any] = Field(description="features, outcome, attributes, predictions")
    signature: SignatureHex = Field(description="Ed25519 signature (64 bytes) in hex")
    key_id: KeyIdHex = Field(description="the device key's id (32 hex digits)")


def event_request_schema() -> dict[str, Any]:
    """``openapi_extra`` of the single-event route: its body, documented though read raw."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SignedEvent.model_json_schema()}},
        }
    }


def batch_request_schema(max_events: int) -> dict[str, Any]:
    """``openapi_extra`` of the batch route."""
    schema = {
        "title": "EventBatch",
        "type": "object",
        "additionalProperties": False,
        "required": ["events"],
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": max_events,
                "items": SignedEvent.model_json_schema(),
            }
        },
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


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
