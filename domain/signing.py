"""Ed25519 signing of Level D documents.

:func:`signed_bytes` is the one place that decides what bytes get signed for each kind of
document: a domain-separation prefix naming the kind and format version, then the canonical
JSON of the document. A signature over one kind can therefore never pass as another kind.
A key's id is the first 16 bytes of the SHA-256 of its raw public key, in hex (the database
checks the same relation).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from domain.canonical import canonical_json

PUBLIC_KEY_BYTES = 32
SEED_BYTES = 32
SIGNATURE_BYTES = 64


class DocumentKind(StrEnum):
    EVENT = "event"
    MODEL_VERSION = "model-version"
    DRIFT_REPORT = "drift-report"
    BIAS_AUDIT = "bias-audit"
    CALLBACK = "callback"


class KeyMaterialError(ValueError):
    """Malformed key material."""


def kind_prefix(kind: DocumentKind) -> bytes:
    """The domain-separation prefix of ``kind``: what comes before the canonical JSON."""
    return b"rai-level-d/" + kind.value.encode("ascii") + b"/v1\n"


def signed_bytes(kind: DocumentKind, document: Mapping[str, Any]) -> bytes:
    return kind_prefix(kind) + canonical_json(document)


def key_id(public_key: bytes) -> str:
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise KeyMaterialError(
            f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes, not {len(public_key)}"
        )
    return hashlib.sha256(public_key).hexdigest()[:32]


class Signer:
    """An Ed25519 private key. Its seed never appears in ``repr`` or logs."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise KeyMaterialError(f"an Ed25519 seed has {SEED_BYTES} bytes, not {len(seed)}")
        self._key = SigningKey(seed)
        self.public_key: bytes = bytes(self._key.verify_key)
        self.key_id: str = key_id(self.public_key)

    @classmethod
    def generate(cls) -> Signer:
        return cls(bytes(SigningKey.generate()))

    @classmethod
    def from_hex(cls, seed_hex: str) -> Signer:
        try:
            seed = bytes.fromhex(seed_hex.strip())
        except ValueError:
            raise KeyMaterialError("an Ed25519 seed must be hex") from None
        return cls(seed)

    def seed_hex(self) -> str:
        return bytes(self._key).hex()

    def sign(self, kind: DocumentKind, document: Mapping[str, Any]) -> bytes:
        return self._key.sign(signed_bytes(kind, document)).signature

    def sign_framed(self, message: bytes) -> bytes:
        """Sign bytes of a format that frames itself and cannot be mistaken for
        :func:`signed_bytes` of any kind: DSSE's pre-authentication encoding (it starts
        ``DSSEv1 ``) and a checkpoint note (its first line is a log origin, never
        ``rai-level-d/<kind>/v1``). Nothing else may be passed here."""
        return self._key.sign(message).signature

    def __repr__(self) -> str:
        return f"Signer(key_id={self.key_id!r})"


def verify(
    public_key: bytes, kind: DocumentKind, document: Mapping[str, Any], signature: bytes
) -> bool:
    """True only for a valid signature of exactly this kind and document."""
    return verify_framed(public_key, signed_bytes(kind, document), signature)


def verify_framed(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only for a valid signature of exactly ``message`` (see :meth:`Signer.sign_framed`)."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        VerifyKey(public_key).verify(message, signature)
    except BadSignatureError:
        return False
    return True
