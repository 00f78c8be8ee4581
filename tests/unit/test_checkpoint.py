"""Checkpoints: C2SP signed notes over the chain head, and judging a chain against them."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from uuid import uuid4

import pytest

from domain.checkpoint import (
    ChainState,
    Checkpoint,
    CheckpointError,
    judge,
    parse_checkpoint,
    sign_checkpoint,
    size_in_key,
)
from domain.signing import DocumentKind, Signer, signed_bytes
from domain.trust import TrustedKeys

pytestmark = pytest.mark.unit

HEAD = hashlib.sha256(b"head").hexdigest()
AT = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=UTC)


def test_a_checkpoint_is_a_signed_note_in_checkpoint_layout() -> None:
    signer = Signer.generate()
    tenant = uuid4()
    note = sign_checkpoint(signer, Checkpoint(tenant, 42, HEAD, AT))
    text, signature = note.decode().split("\n\n")
    assert text.split("\n") == [
        f"rai-level-d/audit-chain/{tenant}",
        "42",
        base64.b64encode(bytes.fromhex(HEAD)).decode(),
        "time 2026-11-30T12:00:00.123456Z",
    ]
    name, blob = signature.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw = base64.b64decode(blob)
    # The signed-note key hash: SHA-256(name || LF || 0x01 (Ed25519) || public key)[:4].
    assert name == "rai-level-d-platform"
    assert raw[:4] == hashlib.sha256(name.encode() + b"\n\x01" + signer.public_key).digest()[:4]
    assert len(raw) == 68
    parsed, kid = parse_checkpoint(note, TrustedKeys.of(signer.public_key))
    assert parsed == Checkpoint(tenant, 42, HEAD, AT)
    assert kid == signer.key_id


def test_a_checkpoint_signature_is_no_document_signature() -> None:
    signer = Signer.generate()
    checkpoint = Checkpoint(uuid4(), 1, HEAD, AT)
    first_line = checkpoint.text().split(b"\n")[0] + b"\n"
    for kind in DocumentKind:
        assert not signed_bytes(kind, {}).startswith(first_line)
    note = sign_checkpoint(signer, checkpoint)
    assert signer.sign(DocumentKind.EVENT, {}) not in base64.b64decode(note.split(b" ")[-1])


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda n: n.replace(b"\n42\n", b"\n43\n"), "does not verify"),
        (lambda n: n.replace(b"time 2026", b"time 2027"), "does not verify"),
        (lambda n: n.split(b"\n\n")[0] + b"\n", "no blank line"),
        (lambda n: n + b"garbage\n", "not a signature line"),
    ],
)
def test_an_altered_note_is_refused(edit: object, reason: str) -> None:
    signer = Signer.generate()
    note = sign_checkpoint(signer, Checkpoint(uuid4(), 42, HEAD, AT))
    assert callable(edit)
    with pytest.raises(CheckpointError, match=reason):
        parse_checkpoint(edit(note), TrustedKeys.of(signer.public_key))


def test_only_a_pinned_key_makes_a_checkpoint() -> None:
    signer, other = Signer.generate(), Signer.generate()
    note = sign_checkpoint(signer, Checkpoint(uuid4(), 42, HEAD, AT))
    with pytest.raises(CheckpointError, match="not signed by a trusted key"):
        parse_checkpoint(note, TrustedKeys.of(other.public_key))


def test_object_keys_sort_by_size_then_time() -> None:
    tenant = uuid4()
    later = AT.replace(hour=13)
    keys = [
        Checkpoint(tenant, 10, HEAD, later).object_key(),
        Checkpoint(tenant, 9, HEAD, later).object_key(),
        Checkpoint(tenant, 10, HEAD, AT).object_key(),
        Checkpoint(tenant, 100, HEAD, AT).object_key(),
    ]
    assert [size_in_key(k) for k in sorted(keys)] == [9, 10, 10, 100]
    assert sorted(keys)[1] == Checkpoint(tenant, 10, HEAD, AT).object_key()
    assert size_in_key(f"checkpoints/{tenant}/notes.txt") is None


def chain(head: int, *, broken: int | None = None, **hashes: str) -> ChainState:
    return ChainState(head, broken, {int(k[1:]): v for k, v in hashes.items()})


def test_judging_a_chain() -> None:
    checkpoint = Checkpoint(uuid4(), 5, HEAD, AT)
    other = hashlib.sha256(b"other").hexdigest()
    assert judge("k", checkpoint, chain(7, s5=HEAD)).holds
    cut = judge("k", checkpoint, chain(3))
    assert not cut.holds
    assert cut.detail.startswith("truncated: the chain ends at seq 3 but k (checkpoint of 5 rows")
    assert cut.detail.endswith("rows 4..5 were removed")
    rewritten = judge("k", checkpoint, chain(6, s5=other))
    assert rewritten.detail.startswith(f"rewritten: row seq 5 has hash {other[:16]}")
    assert rewritten.detail.endswith("the chain was changed at or before seq 5")
    edited = judge("k", checkpoint, chain(6, broken=2, s5=HEAD))
    assert edited.detail.startswith("edited: the chain breaks at seq 2, inside the 5 rows")
    assert judge("k", checkpoint, chain(9, broken=6, s5=HEAD)).holds
    assert judge("k", checkpoint, chain(6, broken=5)).detail.startswith("row seq 5, the head")
