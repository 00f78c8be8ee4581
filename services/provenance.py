"""Provenance a third party can check: the attestation bundle of a model version
(``rai provenance export``) and the artifact at its pinned version (``rai model download``).

Export first verifies the version online, against the pinned platform key
(:class:`services.verify.ProvenanceVerifier`), and refuses to sign provenance that does not
verify. It then gathers every record the provenance rests on (:mod:`domain.attestation`), the
audit chain's rows from the first decision about the version up to a signed checkpoint that
covers them all (writing a new checkpoint when none does yet), and signs the statement with
the platform key as a DSSE envelope.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from uuid import UUID

import asyncpg

from adapters.objectstore import ContentDigest, InvalidS3UriError, S3Uri
from db.integrity import ChainTextError, read_rows
from db.repository import Database
from domain.attestation import (
    BiasAudit,
    ChainEntry,
    DriftReport,
    ProvenanceRecords,
    SignedDocument,
    StatusChange,
    TrainingRun,
    build_statement,
    sign_statement,
)
from domain.canonical import canonical_json
from domain.dsse import Envelope
from domain.signing import DocumentKind, Signer
from domain.trust import TrustedKeys
from services.checkpoints import CheckpointService, StoredCheckpoint
from services.errors import (
    ArtifactHashMismatchError,
    GovernanceRefusal,
    NotFoundError,
    SignatureInvalidError,
)
from services.ports import ObjectStorePort
from services.registry import bias_audit_document, model_document
from services.verify import ProvenanceVerifier, signed_by_trusted_key

# The decisions about one model version in its tenant's audit chain: its registration, status
# moves and bias audits (subject: the version), the drift report that led to it, the snapshot
# and training run that made it, and the pipeline outcome that names it.
_DECISIONS = (
    "SELECT seq FROM integrity_checks WHERE subject_id = $1"
    " OR (check_type = 'drift.report' AND subject_id = $2)"
    " OR (check_type IN ('dataset.snapshot', 'training.queued', 'training.finished')"
    "     AND subject_id = $3)"
    " OR (check_type = 'pipeline.outcome' AND details->>'model_version_id' = $1)"
    " ORDER BY seq"
)


class ExportRefusedError(GovernanceRefusal):
    """The model version's provenance does not verify: it is not signed as if it did."""


class DownloadStorePort(Protocol):
    async def download(
        self, bucket: str, key: str, version_id: str | None, destination: Path
    ) -> ContentDigest: ...


@dataclass(frozen=True)
class DownloadedArtifact:
    path: Path
    sha256: str
    size: int
    artifact_uri: str


class ProvenanceExporter:
    def __init__(
        self,
        db: Database,
        store: ObjectStorePort,
        platform: Signer,
        trusted: TrustedKeys,
        checkpoints: CheckpointService,
    ) -> None:
        self._db = db
        self._store = store
        self._platform = platform
        self._trusted = trusted
        self._checkpoints = checkpoints

    async def export(self, tenant_id: UUID, model_version_id: UUID) -> Envelope:
        checks = await ProvenanceVerifier(self._db, self._store, self._trusted).verify_model(
            tenant_id, model_version_id
        )
        if not checks[0].ok:
            raise NotFoundError(f"model version {model_version_id}: {checks[0].detail}")
        failed = [f"{c.name}: {c.detail}" for c in checks if not c.ok]
        if failed:
            raise ExportRefusedError(
                f"model version {model_version_id} does not verify, nothing exported: "
                + "; ".join(failed)
            )
        records = await self._records(tenant_id, model_version_id)
        return sign_statement(self._platform, build_statement(records))

    async def _records(self, tenant_id: UUID, model_version_id: UUID) -> ProvenanceRecords:
        async with self._db.transaction(tenant_id, isolation="repeatable_read") as conn:
            model = await _one(conn, "SELECT * FROM model_versions WHERE id = $1", model_version_id)
            ancestors = []
            parent_id = model["parent_version_id"]
            while parent_id is not None:
                parent = await _one(conn, "SELECT * FROM model_versions WHERE id = $1", parent_id)
                ancestors.append(_signed_model(parent))
                parent_id = parent["parent_version_id"]
            run = None
            if model["training_run_id"] is not None:
                run = await _one(
                    conn, "SELECT * FROM training_runs WHERE id = $1", model["training_run_id"]
                )
            drift_row = None
            if model["drift_report_id"] is not None:
                drift_row = await _one(
                    conn, "SELECT * FROM drift_reports WHERE id = $1", model["drift_report_id"]
                )
            audit = await conn.fetchrow(
                "SELECT * FROM bias_audits WHERE model_version_id = $1"
                " ORDER BY created_at DESC, id DESC LIMIT 1",
                model_version_id,
            )
            history = await conn.fetch(
                "SELECT from_status, to_status, changed_at, reason FROM model_status_history"
                " WHERE model_version_id = $1 ORDER BY id",
                model_version_id,
            )
            seqs: list[int] = [
                row["seq"]
                for row in await conn.fetch(
                    _DECISIONS,
                    str(model_version_id),
                    _text(model["drift_report_id"]),
                    _text(model["training_run_id"]),
                )
            ]
        if not seqs:
            raise ExportRefusedError(f"the audit chain records no decision about {model['id']}")
        checkpoint = await self._checkpoint(tenant_id, max(seqs))
        chain = await self._chain(tenant_id, min(seqs), checkpoint)
        decisions = [entry for entry in chain if entry.seq in set(seqs)]
        return ProvenanceRecords(
            tenant_id=tenant_id,
            model=_signed_model(model),
            status=model["status"],
            ancestors=ancestors,
            training=_training_run(run) if run is not None else None,
            dataset_version_id=_version_id(model["dataset_uri"]),
            dataset_rows=_snapshot_rows(decisions),
            drift=await self._drift(drift_row) if drift_row is not None else None,
            audit=_bias_audit(audit) if audit is not None else None,
            history=[
                StatusChange(h["from_status"], h["to_status"], h["changed_at"], h["reason"])
                for h in history
            ],
            decisions=decisions,
            chain=chain,
            checkpoint=checkpoint.note,
        )

    async def _checkpoint(self, tenant_id: UUID, last_decision: int) -> StoredCheckpoint:
        found = await self._checkpoints.covering(tenant_id, last_decision)
        return found or await self._checkpoints.checkpoint(tenant_id)

    async def _chain(
        self, tenant_id: UUID, first_seq: int, checkpoint: StoredCheckpoint
    ) -> list[ChainEntry]:
        size = checkpoint.checkpoint.size
        async with self._db.transaction(tenant_id, isolation="repeatable_read") as conn:
            try:
                rows = await read_rows(conn, tenant_id, first_seq, size)
            except ChainTextError as exc:
                raise ExportRefusedError(f"the audit chain is broken: {exc}") from exc
        if (
            len(rows) != size - first_seq + 1
            or rows[-1].row_hash != checkpoint.checkpoint.head_hash
        ):
            raise ExportRefusedError(
                f"the audit chain no longer reaches {checkpoint.key}: run `rai db verify-chain`"
            )
        return [ChainEntry(r.seq, r.prev_hash, r.row_hash, r.canonical) for r in rows]

    async def _drift(self, row: asyncpg.Record) -> DriftReport:
        uri = S3Uri.parse(row["report_uri"])
        body = await self._store.get_bytes(uri.bucket, uri.key, uri.version_id)
        report = json.loads(body)
        # The bundle carries the report as JSON; its canonical form must be the stored bytes,
        # or the reader could not recompute the recorded hash.
        if canonical_json(report) != body:
            raise ExportRefusedError(f"drift report {row['id']} is not stored in canonical form")
        return DriftReport(
            row["id"],
            row["report_uri"],
            row["report_sha256"],
            report,
            row["key_id"],
            row["signature"],
        )


async def download_artifact(
    db: Database,
    store: DownloadStorePort,
    trusted: TrustedKeys,
    tenant_id: UUID,
    model_version_id: UUID,
    destination: Path,
) -> DownloadedArtifact:
    """The model's artifact at its pinned S3 version, written to ``destination`` only when it
    hashes to the SHA-256 of the model document signed by a pinned platform key."""
    async with db.transaction(tenant_id) as conn:
        row = await conn.fetchrow("SELECT * FROM model_versions WHERE id = $1", model_version_id)
    if row is None:
        raise NotFoundError(f"model version {model_version_id} not found for tenant {tenant_id}")
    problem = signed_by_trusted_key(
        trusted,
        row["key_id"],
        DocumentKind.MODEL_VERSION,
        model_document(row).document(),
        row["signature"],
    )
    if problem is not None:
        raise SignatureInvalidError(f"model version {model_version_id}: {problem}")
    try:
        uri = S3Uri.parse(row["artifact_uri"])
    except InvalidS3UriError as exc:
        raise GovernanceRefusal(f"model version {model_version_id}: {exc}") from exc
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        digest = await store.download(uri.bucket, uri.key, row["artifact_version_id"], partial)
        if digest.sha256_hex != row["artifact_sha256"]:
            raise ArtifactHashMismatchError(
                f"the artifact at {uri.at_version(row['artifact_version_id'])} hashes to"
                f" {digest.sha256_hex}, the signed record says {row['artifact_sha256']}"
            )
        partial.replace(destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return DownloadedArtifact(destination, digest.sha256_hex, digest.size, row["artifact_uri"])


async def _one(conn: asyncpg.Connection, query: str, key: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(query, key)
    if row is None:
        raise ExportRefusedError(f"record {key} is missing")
    return row


def _signed_model(row: asyncpg.Record) -> SignedDocument:
    return SignedDocument(model_document(row).document(), row["key_id"], row["signature"])


def _bias_audit(row: asyncpg.Record) -> BiasAudit:
    signed = SignedDocument(bias_audit_document(row).document(), row["key_id"], row["signature"])
    return BiasAudit(row["id"], row["report_sha256"], row["created_at"], signed)


def _training_run(row: asyncpg.Record) -> TrainingRun:
    return TrainingRun(
        id=row["id"],
        workflow_id=row["workflow_id"],
        job_name=row["job_name"],
        status=row["status"],
        model_name=row["model_name"],
        fencing_token=row["fencing_token"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def _text(value: UUID | None) -> str | None:
    return str(value) if value is not None else None


def _version_id(uri: str) -> str | None:
    try:
        return S3Uri.parse(uri).version_id
    except InvalidS3UriError:
        return None


def _snapshot_rows(decisions: list[ChainEntry]) -> int | None:
    """Rows the snapshot was written with, as its decision in the audit chain recorded."""
    for entry in decisions:
        row: Mapping[str, object] = json.loads(entry.canonical)
        details = row.get("details")
        if row.get("check_type") == "dataset.snapshot" and isinstance(details, dict):
            rows = details.get("rows")
            return rows if isinstance(rows, int) else None
    return None
