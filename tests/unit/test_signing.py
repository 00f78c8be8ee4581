from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.canonical import CanonicalJsonError, canonical_json, canonical_sha256
from domain.documents import EventPayload, event_document, payload_sha256
from domain.policies import EventOutcome, cooldown_active, cooldown_ends_at, replay_outcome
from domain.signing import DocumentKind, KeyMaterialError, Signer, key_id, signed_bytes, verify

pytestmark = pytest.mark.unit

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


def test_canonical_form() -> None:
    assert canonical_json({"b": 1, "a": [1.5, "é", None, True]}) == (
        '{"a":[1.5,"é",null,true],"b":1}'.encode()
    )


@given(json_values)
def test_canonical_json_round_trips_to_the_same_bytes(value: Any) -> None:
    data = canonical_json(value)
    assert canonical_json(json.loads(data)) == data
    assert b"\n" not in data


@given(st.dictionaries(st.text(), st.integers(), min_size=2, max_size=6))
def test_key_order_does_not_matter(mapping: dict[str, int]) -> None:
    reversed_mapping = dict(reversed(list(mapping.items())))
    assert canonical_json(mapping) == canonical_json(reversed_mapping)
    assert canonical_sha256(mapping) == canonical_sha256(reversed_mapping)


@pytest.mark.parametrize("bad", [math.nan, math.inf, {"x": [-math.inf]}, {1: "a"}, {"b": b"x"}])
def test_values_without_a_canonical_form_are_refused(bad: Any) -> None:
    with pytest.raises(CanonicalJsonError):
        canonical_json(bad)


@given(json_values, st.sampled_from(list(DocumentKind)))
def test_sign_verify_round_trip(value: Any, kind: DocumentKind) -> None:
    signer = Signer.from_hex("11" * 32)
    document = {"value": value}
    signature = signer.sign(kind, document)
    assert len(signature) == 64
    assert verify(signer.public_key, kind, document, signature)


def test_signatures_do_not_cross_kinds_documents_or_keys() -> None:
    signer, other = Signer.generate(), Signer.generate()
    document = {"model": "yield", "version": 1}
    signature = signer.sign(DocumentKind.MODEL_VERSION, document)
    assert verify(signer.public_key, DocumentKind.MODEL_VERSION, document, signature)
    assert not verify(signer.public_key, DocumentKind.BIAS_AUDIT, document, signature)
    assert not verify(
        signer.public_key, DocumentKind.MODEL_VERSION, {**document, "version": 2}, signature
    )
    assert not verify(other.public_key, DocumentKind.MODEL_VERSION, document, signature)
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify(signer.public_key, DocumentKind.MODEL_VERSION, document, flipped)
    assert not verify(signer.public_key, DocumentKind.MODEL_VERSION, document, signature[:63])
    assert signed_bytes(DocumentKind.EVENT, {}) == b"rai-level-d/event/v1\n{}"


def test_key_id_is_the_first_16_bytes_of_the_public_key_hash() -> None:
    signer = Signer.from_hex("01" * 32)
    assert signer.key_id == hashlib.sha256(signer.public_key).hexdigest()[:32]
    assert key_id(signer.public_key) == signer.key_id
    assert Signer.from_hex(signer.seed_hex()).public_key == signer.public_key
    assert signer.seed_hex() not in repr(signer)
    with pytest.raises(KeyMaterialError):
        key_id(b"short")
    with pytest.raises(KeyMaterialError):
        Signer.from_hex("zz")


def test_event_document_binds_tenant_season_and_field() -> None:
    tenant = uuid4()
    payload = EventPayload(features={"ndvi": 0.7, "soil": "loam"}, outcome=7.1).model_dump(
        mode="json"
    )
    doc = event_document(tenant, "2026", "f-1", payload)
    assert doc == {
        "tenant_id": str(tenant),
        "season_id": "2026",
        "field_id": "f-1",
        "payload": payload,
    }
    assert payload_sha256(payload) == canonical_sha256(payload)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"features": {}},
        {"features": {"x": 1}, "extra": 1},
        {"features": {" ": 1.0}},
        {"features": {"x": [1]}},
    ],
)
def test_event_payload_schema(payload: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        EventPayload.model_validate(payload)


def test_cooldown() -> None:
    rolled_back = datetime(2026, 11, 1, 12, tzinfo=UTC)
    assert cooldown_ends_at(None) is None
    assert not cooldown_active(None, rolled_back)
    assert cooldown_active(rolled_back, rolled_back + timedelta(days=6, hours=23))
    assert not cooldown_active(rolled_back, rolled_back + timedelta(days=7))
    with pytest.raises(ValueError, match="timezone-aware"):
        cooldown_active(datetime.fromisoformat("2026-11-01T00:00:00"), rolled_back)
    assert replay_outcome("a" * 64, "a" * 64) is EventOutcome.DUPLICATE
    assert replay_outcome("a" * 64, "b" * 64) is EventOutcome.CONFLICT
