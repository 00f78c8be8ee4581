"""Provenance verification of a model version (``rai verify model``).

Everything is recomputed from the stored bytes, nothing is taken on trust: the artifact's
SHA-256 (at the recorded S3 version), the model version's Ed25519 signature, the lineage chain
up to its root (every ancestor's hash and signature), the drift report that led to it (the S3
object at its recorded version hashes to the recorded value and carries a valid signature), its
latest bias audit (signature and hash) and the dataset snapshot (re-hashed at its recorded
version). Signatures are checked against the platform keys pinned in the verifier's
configuration (``services.trust``), never against keys found in the database it verifies: a
database administrator who re-signs rows with a key of their own gets them refused.
"""

from __future__ import annotations

import hashlib
import json
from uuid import UUID

import asyncpg

from adapters.objectstore import InvalidS3UriError, ObjectStoreError, S3Uri
from db.repository import Database
from domain.canonical import canonical_sha256
from domain.checks import Check
from domain.lineage import lineage_hash
from domain.signing import DocumentKind, verify
from domain.trust import TrustedKeys
from services.ports import ObjectStorePort
from services.registry import bias_audit_document, model_document

__all__ = ["Check", "ProvenanceVerifier", "signed_by_trusted_key"]


def signed_by_trusted_key(
    trusted: TrustedKeys,
    key_id: str,
    kind: DocumentKind,
    document: dict[str, object],
    signature: bytes,
) -> str | None:
    """None when the signature verifies with the pinned platform key it names, else why not."""
    public_key = trusted.get(key_id)
    if public_key is None:
        return f"signed by key {key_id}, which is not a trusted platform key ({trusted.describe()})"
    if not verify(public_key, kind, document, signature):
        return f"signature does not verify with key {key_id}"
    return None


class ProvenanceVerifier:
    def __init__(self, db: Database, store: ObjectStorePort, trusted: TrustedKeys) -> None:
        self._db = db
        self._store = store
        self._trusted = trusted

    async def verify_model(self, tenant_id: UUID, model_version_id: UUID) -> list[Check]:
        async with self._db.transaction(tenant_id, isolation="repeatable_read") as conn:
            model = await conn.fetchrow(
                "SELECT * FROM model_versions WHERE id = $1", model_version_id
            )
            if model is None:
                return [Check("model version", False, f"{model_version_id} not found for tenant")]
            checks = [
                Check(
                    "model version",
                    True,
                    f"{model['model_name']} v{model['version']} ({model['status']})",
                )
            ]
            checks.append(await self._artifact(model))
            problem = signed_by_trusted_key(
                self._trusted,
                model["key_id"],
                DocumentKind.MODEL_VERSION,
                model_document(model).document(),
                model["signature"],
            )
            checks.append(Check("model signature", problem is None, problem or "valid"))
            checks.append(await self._lineage(conn, model))
            checks.append(await self._drift_report(conn, model["drift_report_id"]))
            checks.append(await self._bias_audit(conn, model_version_id))
        checks.append(await self._dataset(model))
        return checks

    async def _artifact(self, model: asyncpg.Record) -> Check:
        try:
            uri = S3Uri.parse(model["artifact_uri"])
            digest = await self._store.stream_sha256(
                uri.bucket, uri.key, model["artifact_version_id"]
            )
        except (InvalidS3UriError, ObjectStoreError) as exc:
            return Check("artifact sha256", False, f"cannot read the recorded artifact: {exc}")
        if digest.sha256_hex != model["artifact_sha256"]:
            return Check(
                "artifact sha256",
                False,
                f"artifact hashes to {digest.sha256_hex}, recorded {model['artifact_sha256']}",
            )
        return Check("artifact sha256", True, f"{digest.sha256_hex} ({digest.size} bytes)")

    async def _dataset(self, model: asyncpg.Record) -> Check:
        name = "dataset sha256"
        try:
            uri = S3Uri.parse(model["dataset_uri"])
        except InvalidS3UriError as exc:
            return Check(name, False, f"the recorded dataset URI is not an S3 URI: {exc}")
        if uri.version_id is None:
            return Check(name, False, f"{uri} names no S3 version: its bytes are not pinned")
        try:
            digest = await self._store.stream_sha256(uri.bucket, uri.key, uri.version_id)
        except ObjectStoreError as exc:
            return Check(name, False, f"cannot read the recorded dataset snapshot: {exc}")
        if digest.sha256_hex != model["dataset_sha256"]:
            return Check(
                name,
                False,
                f"the snapshot hashes to {digest.sha256_hex}, recorded {model['dataset_sha256']}",
            )
        return Check(name, True, f"{digest.sha256_hex} ({digest.size} bytes)")

    async def _lineage(self, conn: asyncpg.Connection, model: asyncpg.Record) -> Check:
        node: asyncpg.Record | None = model
        depth = 0
        seen: set[UUID] = set()
        while node is not None:
            if node["id"] in seen:
                return Check("lineage chain", False, f"cycle at {node['id']}")
            seen.add(node["id"])
            parent = None
            if node["parent_version_id"] is not None:
                parent = await conn.fetchrow(
                    "SELECT * FROM model_versions WHERE id = $1", node["parent_version_id"]
                )
                if parent is None:
                    return Check(
                        "lineage chain",
                        False,
                        f"parent {node['parent_version_id']} of {node['id']} is missing",
                    )
            expected = lineage_hash(
                parent["lineage_hash"] if parent else None,
                node["artifact_sha256"],
                node["dataset_sha256"],
            )
            if node["lineage_hash"] != expected:
                return Check("lineage chain", False, f"lineage hash of {node['id']} is wrong")
            if node is not model:
                problem = signed_by_trusted_key(
                    self._trusted,
                    node["key_id"],
                    DocumentKind.MODEL_VERSION,
                    model_document(node).document(),
                    node["signature"],
                )
                if problem:
                    return Check("lineage chain", False, f"ancestor {node['id']}: {problem}")
            node = parent
            depth += 1
        return Check("lineage chain", True, f"{depth} version(s) to the root")

    async def _drift_report(self, conn: asyncpg.Connection, report_id: UUID | None) -> Check:
        name = "drift report"
        if report_id is None:
            return Check(name, False, "no drift report is linked to this model version")
        row = await conn.fetchrow("SELECT * FROM drift_reports WHERE id = $1", report_id)
        if row is None:
            return Check(name, False, f"drift report {report_id} not found")
        try:
            uri = S3Uri.parse(row["report_uri"])
            body = await self._store.get_bytes(uri.bucket, uri.key, uri.version_id)
        except (InvalidS3UriError, ObjectStoreError) as exc:
            return Check(name, False, f"cannot read {row['report_uri']}: {exc}")
        if hashlib.sha256(body).hexdigest() != row["report_sha256"]:
            return Check(name, False, "the stored report does not hash to the recorded sha256")
        try:
            report = json.loads(body)
        except ValueError:
            return Check(name, False, "the stored report is not JSON")
        problem = signed_by_trusted_key(
            self._trusted, row["key_id"], DocumentKind.DRIFT_REPORT, report, row["signature"]
        )
        if problem:
            return Check(name, False, problem)
        verdict = report.get("result", {}).get("verdict")
        return Check(name, True, f"{report_id} signed, verdict {verdict}")

    async def _bias_audit(self, conn: asyncpg.Connection, model_version_id: UUID) -> Check:
        name = "bias audit"
        row = await conn.fetchrow(
            "SELECT * FROM bias_audits WHERE model_version_id = $1"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            model_version_id,
        )
        if row is None:
            return Check(name, False, "this model version has no bias audit")
        document = bias_audit_document(row).document()
        if canonical_sha256(document) != row["report_sha256"]:
            return Check(name, False, "the audit does not hash to the recorded sha256")
        problem = signed_by_trusted_key(
            self._trusted, row["key_id"], DocumentKind.BIAS_AUDIT, document, row["signature"]
        )
        if problem:
            return Check(name, False, problem)
        return Check(name, True, f"{row['id']} signed, {'passed' if row['passed'] else 'FAILED'}")
