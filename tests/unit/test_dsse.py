"""DSSE envelopes: ours are the reference implementation's, byte for byte."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from securesystemslib.dsse import Envelope as ReferenceEnvelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from domain.dsse import (
    DsseError,
    DsseSignature,
    Envelope,
    pae,
    parse_envelope,
    sign_envelope,
    verify_envelope,
)
from domain.signing import Signer
from domain.trust import TrustedKeys

pytestmark = pytest.mark.unit

PAYLOAD_TYPE = "application/vnd.in-toto+json"
PAYLOAD = b'{"_type":"https://in-toto.io/Statement/v1","subject":[]}'


def reference_key(signer: Signer) -> SSlibKey:
    return SSlibKey(signer.key_id, "ed25519", "ed25519", {"public": signer.public_key.hex()})


def test_pae_is_the_specification_s() -> None:
    # The example of the DSSE protocol specification.
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae("t", b"") == b"DSSEv1 1 t 0 "


def test_the_reference_implementation_verifies_our_envelope() -> None:
    signer = Signer.generate()
    ours = sign_envelope(signer, PAYLOAD_TYPE, PAYLOAD)
    reference = ReferenceEnvelope.from_dict(json.loads(ours.to_json()))
    assert reference.payload == PAYLOAD
    assert reference.pae() == ours.pae()
    assert reference.verify([reference_key(signer)], 1) == {signer.key_id: reference_key(signer)}
    assert reference.to_dict() == json.loads(ours.to_json())


def test_the_reference_implementation_signs_the_same_bytes() -> None:
    """Ed25519 is deterministic: the reference signer, given our seed, writes our envelope."""
    signer = Signer.generate()
    private = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(signer.seed_hex()))
    reference = ReferenceEnvelope(PAYLOAD, PAYLOAD_TYPE, {})
    reference.sign(CryptoSigner(private, reference_key(signer)))
    ours = sign_envelope(signer, PAYLOAD_TYPE, PAYLOAD)
    assert (json.dumps(reference.to_dict(), indent=2) + "\n").encode() == ours.to_json()
    parsed = parse_envelope(json.dumps(reference.to_dict()).encode())
    assert verify_envelope(parsed, TrustedKeys.of(signer.public_key)).keyid == signer.key_id


def test_the_reference_implementation_refuses_what_we_refuse() -> None:
    signer = Signer.generate()
    document = json.loads(sign_envelope(signer, PAYLOAD_TYPE, PAYLOAD).to_json())
    document["payload"] = base64.b64encode(PAYLOAD.replace(b"[]", b"[1]")).decode()
    tampered = parse_envelope(json.dumps(document).encode())
    verdict = verify_envelope(tampered, TrustedKeys.of(signer.public_key))
    assert (verdict.ok, verdict.problem) == (
        False,
        "the signature does not verify: the envelope was altered",
    )
    with pytest.raises(VerificationError):
        ReferenceEnvelope.from_dict(document).verify([reference_key(signer)], 1)


def test_only_pinned_keys_count() -> None:
    signer, other = Signer.generate(), Signer.generate()
    envelope = sign_envelope(signer, PAYLOAD_TYPE, PAYLOAD)
    verdict = verify_envelope(envelope, TrustedKeys.of(other.public_key))
    assert not verdict.ok
    assert verdict.problem == (
        f"signed by {signer.key_id}, none of them a trusted key ({other.key_id})"
    )
    # A signature without a key id (DSSE makes it optional) is tried with every pinned key.
    anonymous = Envelope(PAYLOAD, PAYLOAD_TYPE, (DsseSignature("", envelope.signatures[0].sig),))
    trusted = TrustedKeys.of(other.public_key, signer.public_key)
    assert verify_envelope(anonymous, trusted).keyid == signer.key_id


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[]", "a DSSE envelope is a JSON object"),
        (b'{"payload": "e30=", "payloadType": "t", "signatures": []}', "non-empty list"),
        (b'{"payload": "e30=", "payloadType": 1, "signatures": [{"sig": "AA=="}]}', "strings"),
        (b'{"payload": "%%%", "payloadType": "t", "signatures": [{"sig": "AA=="}]}', "base64"),
        (b'{"payload": "e30=", "payloadType": "t", "signatures": [{"keyid": "k"}]}', "sig"),
    ],
)
def test_malformed_envelopes_are_named(data: bytes, reason: str) -> None:
    with pytest.raises(DsseError, match=reason):
        parse_envelope(data)
