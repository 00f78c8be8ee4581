"""Attestation bundles on the real stack: exported, verified offline and by the reference
implementations; a flipped byte anywhere is named."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from google.protobuf import json_format
from in_toto_attestation.v1 import statement_pb2
from in_toto_attestation.v1.statement import Statement
from securesystemslib.dsse import Envelope as ReferenceEnvelope
from securesystemslib.signer import SSlibKey

from adapters.objectstore import ContentDigest, ObjectStore
from domain.attestation import PAYLOAD_TYPE, verify_attestation
from domain.dsse import sign_envelope
from domain.signing import Signer
from domain.trust import TrustedKeys
from services.errors import ArtifactHashMismatchError, NotFoundError, SignatureInvalidError
from services.provenance import ExportRefusedError, download_artifact
from tests.integration.provenance_support import (
    Provenance,
    exporter,
    trusted,
    two_trained_versions,
)
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration

ALL_LINES = [
    "envelope signature",
    "statement",
    "model signature",
    "lineage chain",
    "status history",
    "training run",
    "dataset snapshot",
    "drift report",
    "bias audit",
    "audit chain",
    "artifact bytes",
    "dataset bytes",
]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def superuser(dsn: str, statement: str, *args: object) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(statement, *args)
    finally:
        await conn.close()


def failed(envelope: bytes, p: Provenance, keys: TrustedKeys, **hashes: str) -> dict[str, str]:
    digests = {"artifact_sha256": sha(p.artifact), "dataset_sha256": sha(p.dataset), **hashes}
    report = verify_attestation(envelope, keys, **digests)
    return {c.name: c.detail for c in report.checks if not c.ok}


async def test_an_exported_bundle_verifies_offline_and_with_the_references(
    services_env: ServicesEnv,
) -> None:
    env = services_env
    p = await two_trained_versions(env)
    envelope = await exporter(env).export(p.tenant, p.model)
    data = envelope.to_json()

    report = verify_attestation(
        data, trusted(env), artifact_sha256=sha(p.artifact), dataset_sha256=sha(p.dataset)
    )
    assert [(c.name, c.ok) for c in report.checks] == [(name, True) for name in ALL_LINES]
    assert report.model_version_id == str(p.model)

    # securesystemslib's DSSE verifies the envelope with the platform key...
    reference = ReferenceEnvelope.from_dict(json.loads(data))
    public = {"public": env.platform.public_key.hex()}
    key = SSlibKey(env.platform.key_id, "ed25519", "ed25519", public)
    assert list(reference.verify([key], 1)) == [env.platform.key_id]
    assert reference.payload_type == PAYLOAD_TYPE
    # ...and the in-toto attestation bindings accept the statement inside it.
    statement = Statement.copy_from_pb(
        json_format.Parse(reference.payload.decode(), statement_pb2.Statement())
    )
    statement.validate()
    assert statement.pb.subject[0].digest["sha256"] == sha(p.artifact)

    predicate = json.loads(envelope.payload)["predicate"]
    training = predicate["training"]
    assert training["buildDefinition"]["externalParameters"]["l2Lambda"] == 1.0
    assert training["runDetails"]["metadata"]["invocationId"] == str(p.training_run)
    assert training["runDetails"]["builder"]["version"] == {"modelFormat": "rai.ridge/v1"}
    assert training["runDetails"]["metadata"]["startedOn"].endswith("Z")
    assert predicate["dataset"]["rows"] == len(p.dataset.splitlines())
    assert (predicate["dataset"]["trainRows"], predicate["dataset"]["holdoutRows"]) == (900, 200)
    assert predicate["dataset"]["s3VersionId"]
    assert predicate["driftReport"]["verdict"] == "DRIFT"
    assert {f["name"] for f in predicate["driftReport"]["report"]["result"]["features"]} >= {"ndvi"}
    assert predicate["biasAudit"]["result"] == "PASSED"
    assert [a["document"]["id"] for a in predicate["lineage"]] == [str(p.parent)]
    assert [(h["from"], h["to"]) for h in predicate["statusHistory"]] == [
        (None, "REGISTERED"),
        ("REGISTERED", "SHADOW"),
    ]
    kinds = [d["checkType"] for d in predicate["auditChain"]["decisions"]]
    assert kinds == [
        "drift.report",
        "dataset.snapshot",
        "training.queued",
        "training.finished",
        "model.registered",
        "model.bias_audit",
        "model.status",
        "pipeline.outcome",
    ]


def resigned(env: ServicesEnv, data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """The bundle with its statement edited and signed again with the platform key: what an
    exporter with a bug, or with the key and bad intent, could produce. Every check inside must
    still catch it."""
    statement = json.loads(base64.b64decode(json.loads(data)["payload"]))
    edit(statement)
    payload = json.dumps(statement).encode()
    return sign_envelope(env.platform, PAYLOAD_TYPE, payload).to_json()


def flip(value: str) -> str:
    return ("0" if value[0] != "0" else "1") + value[1:]


def set_at(path: tuple[str | int, ...]) -> Callable[[dict[str, Any]], None]:
    def edit(statement: dict[str, Any]) -> None:
        node: Any = statement
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = flip(node[path[-1]])

    return edit


DIGESTS: list[tuple[tuple[str | int, ...], set[str]]] = [
    (("subject", 0, "digest", "sha256"), {"model signature", "audit chain", "artifact bytes"}),
    (
        ("predicate", "modelVersion", "document", "artifact_sha256"),
        {"model signature", "lineage chain"},
    ),
    (
        ("predicate", "modelVersion", "document", "lineage_hash"),
        {"model signature", "lineage chain", "audit chain"},
    ),
    (("predicate", "dataset", "digest", "sha256"), {"dataset snapshot"}),
    (("predicate", "driftReport", "digest", "sha256"), {"drift report", "audit chain"}),
    (("predicate", "biasAudit", "digest", "sha256"), {"bias audit"}),
    (("predicate", "lineage", 0, "document", "dataset_sha256"), {"lineage chain"}),
    (("predicate", "auditChain", "rows", 2, "rowHash"), {"audit chain"}),
    (("predicate", "auditChain", "decisions", 0, "rowHash"), {"audit chain"}),
]


async def test_a_flipped_byte_is_named(services_env: ServicesEnv) -> None:
    env = services_env
    p = await two_trained_versions(env)
    data = (await exporter(env).export(p.tenant, p.model)).to_json()
    keys = trusted(env)
    assert failed(data, p, keys) == {}

    # The artifact or the dataset the verifier holds.
    artifact = bytearray(p.artifact)
    artifact[10] ^= 1
    found = failed(data, p, keys, artifact_sha256=sha(bytes(artifact)))
    assert list(found) == ["artifact bytes"]
    assert found["artifact bytes"].startswith(f"the artifact file hashes to {sha(bytes(artifact))}")
    assert list(failed(data, p, keys, dataset_sha256=sha(p.dataset + b" "))) == ["dataset bytes"]

    # The envelope: any byte of its payload or its signature.
    document = json.loads(data)
    payload = bytearray(base64.b64decode(document["payload"]))
    payload[len(payload) // 2] ^= 1
    tampered = {**document, "payload": base64.b64encode(bytes(payload)).decode()}
    found = failed(json.dumps(tampered).encode(), p, keys)
    altered = "the signature does not verify: the envelope was altered"
    assert found == {"envelope signature": altered}
    signature = bytearray(base64.b64decode(document["signatures"][0]["sig"]))
    signature[0] ^= 1
    document["signatures"][0]["sig"] = base64.b64encode(bytes(signature)).decode()
    assert list(failed(json.dumps(document).encode(), p, keys)) == ["envelope signature"]
    # Not the pinned key.
    found = failed(data, p, TrustedKeys.of(Signer.generate().public_key))
    assert list(found) == ["envelope signature"]
    assert found["envelope signature"].startswith(f"signed by {env.platform.key_id}, none")

    # Any digest in the bundle: the envelope's signature catches it; signed again, the check
    # of that record names it.
    named_by = {}
    for path, _ in DIGESTS:
        unsigned = json.loads(data)
        statement = json.loads(base64.b64decode(unsigned["payload"]))
        set_at(path)(statement)
        unsigned["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
        assert list(failed(json.dumps(unsigned).encode(), p, keys)) == ["envelope signature"]
        named_by[path] = set(failed(resigned(env, data, set_at(path)), p, keys))
    assert named_by == dict(DIGESTS)


async def test_export_refuses_what_does_not_verify(
    services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    env = services_env
    p = await two_trained_versions(env)
    await superuser(
        db_admin_dsn,
        "UPDATE rai.bias_audits SET passed = NOT passed WHERE model_version_id = $1",
        p.model,
    )
    with pytest.raises(ExportRefusedError, match="does not verify, nothing exported: bias audit"):
        await exporter(env).export(p.tenant, p.model)


async def test_export_refuses_a_chain_that_no_longer_reaches_its_checkpoint(
    services_env: ServicesEnv, db_admin_dsn: str
) -> None:
    env = services_env
    p = await two_trained_versions(env)
    await superuser(
        db_admin_dsn,
        "DELETE FROM rai.integrity_checks WHERE tenant_id = $1"
        " AND seq = (SELECT max(seq) FROM rai.integrity_checks WHERE tenant_id = $1)",
        p.tenant,
    )
    with pytest.raises(ExportRefusedError, match="no longer reaches"):
        await exporter(env).export(p.tenant, p.model)


async def test_download_checks_the_signed_hash(
    services_env: ServicesEnv, db_admin_dsn: str, tmp_path: Path
) -> None:
    env = services_env
    p = await two_trained_versions(env)
    out = tmp_path / "model.json"
    done = await download_artifact(env.db, env.store, trusted(env), p.tenant, p.model, out)
    assert out.read_bytes() == p.artifact
    assert (done.sha256, done.size) == (sha(p.artifact), len(p.artifact))
    with pytest.raises(NotFoundError):
        await download_artifact(env.db, env.store, trusted(env), p.tenant, p.tenant, out)
    with pytest.raises(SignatureInvalidError, match="not a trusted platform key"):
        await download_artifact(
            env.db, env.store, TrustedKeys.of(Signer.generate().public_key), p.tenant, p.model, out
        )
    # A record whose hash was rewritten fails its signature before anything is fetched.
    await superuser(
        db_admin_dsn,
        "UPDATE rai.model_versions SET artifact_sha256 = repeat('a', 64) WHERE id = $1",
        p.model,
    )
    with pytest.raises(SignatureInvalidError, match="signature does not verify"):
        await download_artifact(env.db, env.store, trusted(env), p.tenant, p.model, out)
    assert not await asyncio.to_thread(lambda: list(tmp_path.glob(".*partial")))


class CorruptingStore:
    """An object store that hands back other bytes than it stored (bit rot, a bad proxy)."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store

    async def download(
        self, bucket: str, key: str, version_id: str | None, destination: Path
    ) -> ContentDigest:
        digest = await self._store.download(bucket, key, version_id, destination)
        data = bytearray(await asyncio.to_thread(destination.read_bytes))
        data[0] ^= 1
        await asyncio.to_thread(destination.write_bytes, bytes(data))
        return ContentDigest(sha(bytes(data)), len(data), digest.version_id, digest.etag)


async def test_download_keeps_nothing_that_does_not_hash(
    services_env: ServicesEnv, tmp_path: Path
) -> None:
    env = services_env
    p = await two_trained_versions(env)
    out = tmp_path / "model.json"
    with pytest.raises(ArtifactHashMismatchError, match="the signed record says"):
        await download_artifact(
            env.db, CorruptingStore(env.store), trusted(env), p.tenant, p.model, out
        )
    assert await asyncio.to_thread(lambda: list(tmp_path.iterdir())) == []
