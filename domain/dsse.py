"""DSSE, the Dead Simple Signing Envelope (github.com/secure-systems-lab/dsse, protocol v1).

An envelope is the JSON object ``{"payload": BASE64(body), "payloadType": TYPE, "signatures":
[{"keyid": ID, "sig": BASE64(signature)}]}``; each signature is an Ed25519 signature over the
pre-authentication encoding ``PAE(TYPE, body) = "DSSEv1" SP LEN(TYPE) SP TYPE SP LEN(body) SP
body`` (lengths in ASCII decimal bytes), never over the JSON. Key ids are ours (the first 16
bytes of the SHA-256 of the raw public key, hex): a hint for the verifier, which only accepts
keys it was given. ``securesystemslib.dsse.Envelope`` reads and verifies what this module writes,
byte for byte (``tests/unit/test_dsse.py``).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from domain.signing import Signer, verify_framed
from domain.trust import TrustedKeys


class DsseError(ValueError):
    """Bytes that are not a DSSE envelope."""


@dataclass(frozen=True)
class DsseSignature:
    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    payload: bytes
    payload_type: str
    signatures: tuple[DsseSignature, ...]

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)

    def to_dict(self) -> dict[str, Any]:
        return {
            "payload": _b64(self.payload),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": _b64(s.sig)} for s in self.signatures],
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), indent=2).encode("utf-8") + b"\n"


@dataclass(frozen=True)
class EnvelopeVerdict:
    """Which pinned key verified the envelope, or why none did."""

    keyid: str | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.keyid is not None


def pae(payload_type: str, payload: bytes) -> bytes:
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def sign_envelope(signer: Signer, payload_type: str, payload: bytes) -> Envelope:
    signature = signer.sign_framed(pae(payload_type, payload))
    return Envelope(payload, payload_type, (DsseSignature(signer.key_id, signature),))


def verify_envelope(envelope: Envelope, trusted: TrustedKeys) -> EnvelopeVerdict:
    """The first signature that verifies with a pinned key. A signature without a key id is
    tried with every pinned key (DSSE makes the key id optional)."""
    message = envelope.pae()
    named = []
    for signature in envelope.signatures:
        candidates = [signature.keyid] if signature.keyid else list(trusted)
        for kid in candidates:
            if kid in trusted and verify_framed(trusted[kid], message, signature.sig):
                return EnvelopeVerdict(kid, None)
        named.append(signature.keyid or "(no key id)")
    if not any(kid in trusted for kid in named):
        return EnvelopeVerdict(
            None,
            f"signed by {', '.join(named)}, none of them a trusted key ({trusted.describe()})",
        )
    return EnvelopeVerdict(None, "the signature does not verify: the envelope was altered")


def parse_envelope(data: bytes) -> Envelope:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise DsseError(f"not JSON: {exc}") from None
    if not isinstance(document, Mapping):
        raise DsseError("a DSSE envelope is a JSON object")
    payload, payload_type, signatures = (
        document.get("payload"),
        document.get("payloadType"),
        document.get("signatures"),
    )
    if not isinstance(payload, str) or not isinstance(payload_type, str):
        raise DsseError('"payload" and "payloadType" must be strings')
    if not isinstance(signatures, list) or not signatures:
        raise DsseError('"signatures" must be a non-empty list')
    parsed = []
    for index, item in enumerate(signatures):
        if not isinstance(item, Mapping) or not isinstance(item.get("sig"), str):
            raise DsseError(f'signature {index} has no base64 "sig"')
        keyid = item.get("keyid", "")
        if not isinstance(keyid, str):
            raise DsseError(f'signature {index}: "keyid" must be a string')
        parsed.append(DsseSignature(keyid, _unb64(item["sig"], f"signature {index}")))
    return Envelope(_unb64(payload, "payload"), payload_type, tuple(parsed))


def _b64(data: bytes) -> str:
    return base64.standard_b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    # DSSE accepts standard and URL-safe base64.
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.b64decode(text, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise DsseError(f"{what} is not base64") from None
