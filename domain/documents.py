"""The documents Level D signs, and the learning-event payload schema.

Each ``*_document`` function returns the exact mapping that :func:`domain.signing.signed_bytes`
turns into signed bytes; services and ``rai verify`` both call them, so what is verified is
always rebuilt the same way from stored fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.canonical import canonical_sha256, sha256_hex
from domain.signing import DocumentKind, kind_prefix


class EventPayload(BaseModel):
    """What a field device observed: features for drift and training, the observed outcome,
    group attributes for bias audits, and the predictions the serving models made."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    features: dict[str, float | str] = Field(min_length=1)
    outcome: float | None = None
    attributes: dict[str, str] = Field(default_factory=dict)
    predictions: dict[str, float] = Field(default_factory=dict)

    @field_validator("features", "attributes", "predictions")
    @classmethod
    def _names_not_blank(cls, value: dict[str, Any]) -> dict[str, Any]:
        if any(not name.strip() for name in value):
            raise ValueError("names must not be blank")
        return value


def event_document(
    tenant_id: UUID, season_id: str, field_id: str, payload: Mapping[str, Any]
) -> dict[str, Any]:
    """What a device signs: the payload bound to its tenant, season and field, so a signed
    observation cannot be replayed into another tenant or another field."""
    return {
        "tenant_id": str(tenant_id),
        "season_id": season_id,
        "field_id": field_id,
        "payload": dict(payload),
    }


def payload_sha256(payload: Mapping[str, Any]) -> str:
    return canonical_sha256(dict(payload))


def _json_text(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)


def event_signed_bytes_and_payload_sha256(
    tenant_id: UUID, season_id: str, field_id: str, payload_json: bytes
) -> tuple[bytes, str]:
    """What a device signed for an event and the payload's SHA-256, from the payload's
    canonical JSON computed once (ingest's hot path). Byte for byte
    ``signed_bytes(EVENT, event_document(...))`` and ``payload_sha256(payload)``: the canonical
    form sorts keys, and ``event_document``'s keys sort as field_id, payload, season_id,
    tenant_id (tests/unit proves the equality)."""
    document = b"".join(
        (
            b'{"field_id":',
            _json_text(field_id).encode("utf-8"),
            b',"payload":',
            payload_json,
            b',"season_id":',
            _json_text(season_id).encode("utf-8"),
            b',"tenant_id":"',
            str(tenant_id).encode("ascii"),
            b'"}',
        )
    )
    return kind_prefix(DocumentKind.EVENT) + document, sha256_hex(payload_json)


class ModelVersionDocument(BaseModel):
    """Every provenance field of a model version; the platform key signs this."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: UUID
    tenant_id: UUID
    model_name: str
    version: int
    artifact_uri: str
    artifact_version_id: str | None
    artifact_sha256: str
    dataset_uri: str
    dataset_sha256: str
    parent_version_id: UUID | None
    lineage_hash: str
    training_run_id: UUID | None
    drift_report_id: UUID | None
    metrics: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class BiasAuditDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: UUID
    tenant_id: UUID
    model_version_id: UUID
    passed: bool
    metrics: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
