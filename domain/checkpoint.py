"""Signed checkpoints of a tenant's audit chain, and judging a chain against them.

A checkpoint is a C2SP signed note (c2sp.org/signed-note) whose text follows the transparency-log
checkpoint layout (c2sp.org/tlog-checkpoint), with the chain's head row hash where a log has its
Merkle root::

    rai-level-d/audit-chain/<tenant id>          origin: whose chain
    <size>                                       rows in the chain (= the head row's seq)
    <base64 of the head row's 32-byte hash>      row_hash of row <size>
    time 2026-11-30T12:00:00.000000Z             when it was signed (an extension line)

    — rai-level-d-platform <base64(key hash (4 bytes) || Ed25519 signature (64 bytes))>

The signature covers the text up to and including its last newline; the key hash is
``SHA-256(name || 0x0A || 0x01 || public key)[:4]`` as the signed-note format defines it for
Ed25519. The text's first line is an origin, never ``rai-level-d/<kind>/v1``, so a checkpoint
signature can never pass as a signature over a document of :mod:`domain.signing`.

The chain links every row to the one before (``row_hash = sha256(prev_hash || row)``), so a
checkpoint vouches for all rows up to its size: a superuser who edits a row, rewrites the chain
from some row on and recomputes every hash after it, or deletes the last rows, leaves a chain
that no longer reaches the signed head at the signed size.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from domain.signing import SIGNATURE_BYTES, Signer, verify_framed
from domain.trust import TrustedKeys

ORIGIN_PREFIX = "rai-level-d/audit-chain/"
KEY_NAME = "rai-level-d-platform"
OBJECT_PREFIX = "checkpoints/"
_ED25519_TYPE = b"\x01"
_SIGNATURE_PREFIX = "\u2014 "
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_KEY_SIZE = re.compile(r"(\d{20})-\d{8}T\d{12}Z\.checkpoint")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class CheckpointError(ValueError):
    """Bytes that are not a checkpoint validly signed by a trusted key."""


@dataclass(frozen=True)
class Checkpoint:
    tenant_id: UUID
    size: int
    head_hash: str
    time: datetime

    def __post_init__(self) -> None:
        if self.size < 1:
            raise CheckpointError("a checkpoint covers at least one row")
        if not _SHA256_HEX.fullmatch(self.head_hash):
            raise CheckpointError("the head hash must be 64 lowercase hex characters")
        if self.time.tzinfo is None:
            raise CheckpointError("a checkpoint's time must be timezone-aware")

    @property
    def origin(self) -> str:
        return f"{ORIGIN_PREFIX}{self.tenant_id}"

    def text(self) -> bytes:
        """The signed text of the note."""
        head = base64.standard_b64encode(bytes.fromhex(self.head_hash)).decode("ascii")
        stamp = self.time.astimezone(UTC).strftime(_TIME_FORMAT)
        return f"{self.origin}\n{self.size}\n{head}\ntime {stamp}\n".encode("ascii")

    def object_key(self) -> str:
        """Where it is stored: sorting the keys of one tenant sorts its checkpoints by size,
        then time."""
        stamp = self.time.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        return f"{tenant_prefix(self.tenant_id)}{self.size:020d}-{stamp}.checkpoint"

    def describe(self) -> str:
        stamp = self.time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return f"checkpoint of {self.size} rows signed {stamp}"


def tenant_prefix(tenant_id: UUID) -> str:
    return f"{OBJECT_PREFIX}{tenant_id}/"


def size_in_key(key: str) -> int | None:
    """The size an object key names (None for a key that is not a checkpoint's)."""
    match = _KEY_SIZE.fullmatch(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def key_hash(public_key: bytes, name: str = KEY_NAME) -> bytes:
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519_TYPE + public_key).digest()[:4]


def sign_checkpoint(signer: Signer, checkpoint: Checkpoint) -> bytes:
    """The signed note: text, a blank line, one signature line."""
    text = checkpoint.text()
    blob = key_hash(signer.public_key) + signer.sign_framed(text)
    line = f"{_SIGNATURE_PREFIX}{KEY_NAME} {base64.standard_b64encode(blob).decode('ascii')}\n"
    return text + b"\n" + line.encode("utf-8")


def parse_checkpoint(note: bytes, trusted: TrustedKeys) -> tuple[Checkpoint, str]:
    """The checkpoint and the id of the trusted key whose signature on it verifies."""
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("not UTF-8 text") from None
    text, separator, signature_block = decoded.rpartition("\n\n")
    if not separator or not signature_block.endswith("\n"):
        raise CheckpointError("not a signed note: no blank line before the signatures")
    signed = (text + "\n").encode("utf-8")
    lines = []
    for line in signature_block.splitlines():
        if not line.startswith(_SIGNATURE_PREFIX):
            raise CheckpointError(f"not a signature line: {line[:80]!r}")
        name, _, encoded = line.removeprefix(_SIGNATURE_PREFIX).partition(" ")
        try:
            lines.append((name, base64.b64decode(encoded, validate=True)))
        except (binascii.Error, ValueError):
            raise CheckpointError(f"signature of {name!r} is not base64") from None
    hashes = {key_hash(public): kid for kid, public in trusted.items()}
    signer_id = None
    for name, blob in lines:
        if name != KEY_NAME or len(blob) != 4 + SIGNATURE_BYTES or blob[:4] not in hashes:
            continue
        kid = hashes[blob[:4]]
        if not verify_framed(trusted[kid], signed, blob[4:]):
            raise CheckpointError(f"the signature of trusted key {kid} does not verify: altered")
        signer_id = kid
        break
    if signer_id is None:
        raise CheckpointError(f"not signed by a trusted key ({trusted.describe()})")
    return _parse_text(text), signer_id


def _parse_text(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) != 4:
        raise CheckpointError("a checkpoint has origin, size, head hash and time lines")
    origin, size, head, stamp = lines
    if not origin.startswith(ORIGIN_PREFIX):
        raise CheckpointError(f"origin {origin[:80]!r} is not a Level D audit chain")
    try:
        tenant_id = UUID(origin.removeprefix(ORIGIN_PREFIX))
        head_bytes = base64.b64decode(head, validate=True)
        moment = datetime.strptime(stamp.removeprefix("time "), _TIME_FORMAT).replace(tzinfo=UTC)
    except (binascii.Error, ValueError) as exc:
        raise CheckpointError(f"malformed checkpoint: {exc}") from None
    if not re.fullmatch(r"[1-9]\d*", size) or len(head_bytes) != 32:
        raise CheckpointError("malformed checkpoint: bad size or head hash")
    return Checkpoint(tenant_id, int(size), head_bytes.hex(), moment)


# -- a chain against its checkpoints ---------------------------------------------------------


@dataclass(frozen=True)
class ChainState:
    """What the verifier recomputed of a chain: how far it goes, where it first breaks (a row
    whose hash does not match its content, a broken link, a missing seq), and the stored
    row hash at the seqs checkpoints name."""

    head_seq: int
    first_broken_seq: int | None
    hash_at: Mapping[int, str]


@dataclass(frozen=True)
class CheckpointFinding:
    key: str
    checkpoint: Checkpoint | None
    holds: bool
    detail: str


def judge(key: str, checkpoint: Checkpoint, chain: ChainState) -> CheckpointFinding:
    """Does the chain still reach this checkpoint's signed head at its signed size?"""
    name = f"{key} ({checkpoint.describe()})"
    size = checkpoint.size
    if chain.head_seq < size:
        cut = f"rows {chain.head_seq + 1}..{size}" if chain.head_seq + 1 < size else f"row {size}"
        return CheckpointFinding(
            key,
            checkpoint,
            False,
            f"truncated: the chain ends at seq {chain.head_seq} but {name} covers seq {size};"
            f" {cut} were removed",
        )
    stored = chain.hash_at.get(size)
    if stored is None:
        return CheckpointFinding(
            key, checkpoint, False, f"row seq {size}, the head of {name}, is missing"
        )
    if stored != checkpoint.head_hash:
        return CheckpointFinding(
            key,
            checkpoint,
            False,
            f"rewritten: row seq {size} has hash {stored[:16]}…, {name} signed"
            f" {checkpoint.head_hash[:16]}…; the chain was changed at or before seq {size}",
        )
    if chain.first_broken_seq is not None and chain.first_broken_seq <= size:
        return CheckpointFinding(
            key,
            checkpoint,
            False,
            f"edited: the chain breaks at seq {chain.first_broken_seq}, inside the"
            f" {size} rows {name} vouches for",
        )
    return CheckpointFinding(key, checkpoint, True, f"{name} holds: seq {size} hash {stored[:16]}…")
