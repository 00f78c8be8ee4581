"""Ingest's hot path gives the same bytes as the reference path, and its per-event judgement
(``services.events.parse_event``) accepts what a device sends and rejects, with a reason,
whatever Postgres could not store -- for any event hypothesis can make up."""

from __future__ import annotations

import json
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.canonical import canonical_json, canonical_json_of_checked
from domain.documents import (
    event_document,
    event_signed_bytes_and_payload_sha256,
    payload_sha256,
)
from domain.policies import EventOutcome
from domain.signing import DocumentKind, Signer, signed_bytes
from services.events import (
    EventResult,
    IncomingEvent,
    IngestedBatch,
    MalformedEvent,
    parse_event,
)

pytestmark = pytest.mark.unit

texts = st.text(min_size=1, max_size=40)
json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    texts,
    st.floats(allow_nan=False, allow_infinity=False),
)
payloads = st.fixed_dictionaries(
    {"features": st.dictionaries(texts, st.floats(-1e9, 1e9) | texts, min_size=1, max_size=5)},
    optional={
        "outcome": st.floats(-1e9, 1e9),
        "attributes": st.dictionaries(texts, texts, max_size=3),
        "extra": st.recursive(
            json_scalars,
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
            max_leaves=8,
        ),
    },
)


@given(season=texts, field=texts, payload=payloads)
@settings(max_examples=300, deadline=None)
def test_the_hot_path_signs_and_hashes_the_same_bytes(
    season: str, field: str, payload: dict[str, Any]
) -> None:
    tenant = uuid4()
    message, sha = event_signed_bytes_and_payload_sha256(
        tenant, season, field, canonical_json_of_checked(payload)
    )
    document = event_document(tenant, season, field, payload)
    assert message == signed_bytes(DocumentKind.EVENT, document)
    assert sha == payload_sha256(payload)
    assert canonical_json_of_checked(payload) == canonical_json(payload)


SIGNER = Signer.generate()


def wire(event: dict[str, Any]) -> Any:
    """The event as the API's JSON decoder hands it over."""
    return json.loads(json.dumps(event))


@given(season=texts, field=texts, payload=payloads)
@settings(max_examples=200, deadline=None)
def test_a_well_formed_event_parses(season: str, field: str, payload: dict[str, Any]) -> None:
    if "\x00" in season + field or len(json.dumps(payload)) > 5000:
        return
    raw = {
        "season_id": season,
        "field_id": field,
        "payload": payload,
        "signature": "ab" * 64,
        "key_id": SIGNER.key_id,
    }
    parsed = parse_event(wire(raw))
    if any(0xD800 <= ord(c) <= 0xDFFF for c in json.dumps(raw, ensure_ascii=False)):
        assert isinstance(parsed, MalformedEvent)
        return
    nul_in_payload = "\\u0000" in json.dumps(payload)
    assert isinstance(parsed, MalformedEvent if nul_in_payload else IncomingEvent), parsed


@given(raw=st.recursive(json_scalars, lambda i: st.lists(i) | st.dictionaries(texts, i)))
@settings(max_examples=300, deadline=None)
def test_anything_else_is_judged_without_raising(raw: Any) -> None:
    parsed = parse_event(raw)
    if isinstance(parsed, MalformedEvent):
        assert parsed.reason.startswith("schema error: ")
        json.dumps(parsed.reason, ensure_ascii=False).encode("utf-8")  # can be answered
        assert "\x00" not in parsed.season_id + parsed.field_id + parsed.reason


def test_a_batch_counts_each_outcome_once_and_is_the_sequence_of_its_results() -> None:
    results = [
        EventResult(0, "s", "a", EventOutcome.ACCEPTED),
        EventResult(1, "s", "b", EventOutcome.REJECTED, "bad signature"),
        EventResult(2, "s", "a", EventOutcome.DUPLICATE),
        EventResult(3, "s", "c", EventOutcome.ACCEPTED),
    ]
    batch = IngestedBatch.of(results)
    assert dict(batch.counts) == {
        EventOutcome.ACCEPTED: 2,
        EventOutcome.DUPLICATE: 1,
        EventOutcome.CONFLICT: 0,  # every outcome present, zeros included
        EventOutcome.REJECTED: 1,
    }
    assert list(batch.counts) == list(EventOutcome)
    assert len(batch) == 4
    assert list(batch) == results
    assert batch[1] is results[1]
    assert batch[1:3] == tuple(results[1:3])
    (only,) = IngestedBatch.of(results[:1])  # unpacks like the list it replaced
    assert only is results[0]
    assert batch.refused() == [results[1]]
    assert sum(IngestedBatch.of([]).counts.values()) == 0
