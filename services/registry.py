"""ModelRegistryService (M16, M17): registration with provenance, and the status machine.

Registration reads the artifact itself (HEAD, then a streamed SHA-256 of that exact object
version), signs the canonical model document with the platform key and inserts it with its
lineage hash; the database re-checks the lineage. Promotion to SHADOW re-verifies the model's
signature and its latest bias audit's signature from the stored rows — nothing is trusted
because it is in a table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID, uuid4

import asyncpg

from adapters.objectstore import InvalidS3UriError, S3Uri
from db.errors import Law
from db.integrity import record_check
from db.repository import Database
from domain.documents import BiasAuditDocument, ModelVersionDocument
from domain.lineage import lineage_hash
from domain.model_status import ModelStatus, can_transition
from domain.signing import DocumentKind, Signer, verify
from services.errors import (
    ArtifactHashMismatchError,
    ArtifactMissingError,
    BiasAuditRequiredError,
    GovernanceRefusal,
    IllegalTransitionRefusal,
    NotFoundError,
    SignatureInvalidError,
)
from services.platform import active_public_key, require_platform_key
from services.ports import ObjectStorePort

# Work done inside a registration's transaction (see ``register_model``).
InTransaction = Callable[[asyncpg.Connection], Awaitable[object]]


class Row(Protocol):
    """A database row (asyncpg.Record) or any mapping read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


@dataclass(frozen=True)
class RegisterModel:
    model_name: str
    artifact_uri: str
    dataset_uri: str
    dataset_sha256: str
    expected_artifact_sha256: str | None = None
    training_run_id: UUID | None = None
    drift_report_id: UUID | None = None
    metrics: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegisteredModel:
    id: UUID
    model_name: str
    version: int
    status: ModelStatus
    artifact_uri: str
    artifact_version_id: str | None
    artifact_sha256: str
    lineage_hash: str
    parent_version_id: UUID | None


@dataclass(frozen=True)
class Rollback:
    rolled_back: UUID
    restored: UUID | None
    at: datetime


def model_document(row: Row) -> ModelVersionDocument:
    """The signed document of a ``model_versions`` row."""
    return ModelVersionDocument(
        id=row["id"],
        tenant_id=row["tenant_id"],
        model_name=row["model_name"],
        version=row["version"],
        artifact_uri=row["artifact_uri"],
        artifact_version_id=row["artifact_version_id"],
        artifact_sha256=row["artifact_sha256"],
        dataset_uri=row["dataset_uri"],
        dataset_sha256=row["dataset_sha256"],
        parent_version_id=row["parent_version_id"],
        lineage_hash=row["lineage_hash"],
        training_run_id=row["training_run_id"],
        drift_report_id=row["drift_report_id"],
        metrics=row["metrics"],
    )


def bias_audit_document(row: Row) -> BiasAuditDocument:
    """The signed document of a ``bias_audits`` row."""
    return BiasAuditDocument(
        id=row["id"],
        tenant_id=row["tenant_id"],
        model_version_id=row["model_version_id"],
        passed=row["passed"],
        metrics=row["metrics"],
    )


# How long registration waits for an artifact that is not there yet: some S3 stores answer a
# HEAD right after the write with 404 (read-after-write lag). Then the refusal is final.
ARTIFACT_LOOKUPS = (0.0, 0.5, 1.0, 2.0, 4.0)  # seconds before each HEAD


class ModelRegistryService:
    def __init__(
        self,
        db: Database,
        store: ObjectStorePort,
        platform: Signer,
        *,
        artifact_lookups: tuple[float, ...] = ARTIFACT_LOOKUPS,
    ) -> None:
        self._db = db
        self._store = store
        self._platform = platform
        self._artifact_lookups = artifact_lookups or (0.0,)

    async def register_model(
        self, tenant_id: UUID, request: RegisterModel, *, also: InTransaction | None = None
    ) -> RegisteredModel:
        """Register the artifact as the next version of ``model_name``, chained to the newest
        version of that model (its parent in the lineage). ``also`` runs in the same
        transaction, after the version is inserted (the pipeline marks the training run
        SUCCEEDED there: both happen, or neither)."""
        try:
            uri = S3Uri.parse(request.artifact_uri)
        except InvalidS3UriError as exc:
            raise GovernanceRefusal(f"artifact_uri: {exc}") from exc
        info = None
        for pause in self._artifact_lookups:  # a 404 right after the write is transient
            await asyncio.sleep(pause)
            info = await self._store.head(uri.bucket, uri.key, uri.version_id)
            if info is not None:
                break
        if info is None:
            raise ArtifactMissingError(
                f"artifact {request.artifact_uri} does not exist"
                f" (looked {len(self._artifact_lookups)} times)"
            )
        digest = await self._store.stream_sha256(uri.bucket, uri.key, info.version_id)
        expected = request.expected_artifact_sha256
        if expected is not None and digest.sha256_hex != expected:
            raise ArtifactHashMismatchError(
                f"artifact {request.artifact_uri} hashes to {digest.sha256_hex}, not {expected}"
            )
        pinned = str(uri.at_version(None))
        async with self._db.transaction(tenant_id) as conn:
            await require_platform_key(conn, self._platform)
            # Version numbers of one model are handed out one at a time.
            await conn.execute(
                "SELECT rai.lock_tenant($1, $2)",
                tenant_id,
                f"model_versions:{request.model_name}",
            )
            parent = await conn.fetchrow(
                "SELECT id, version, lineage_hash FROM model_versions WHERE model_name = $1"
                " ORDER BY version DESC LIMIT 1",
                request.model_name,
            )
            version_id = uuid4()
            document = ModelVersionDocument(
                id=version_id,
                tenant_id=tenant_id,
                model_name=request.model_name,
                version=(parent["version"] + 1) if parent else 1,
                artifact_uri=pinned,
                artifact_version_id=info.version_id,
                artifact_sha256=digest.sha256_hex,
                dataset_uri=request.dataset_uri,
                dataset_sha256=request.dataset_sha256,
                parent_version_id=parent["id"] if parent else None,
                lineage_hash=lineage_hash(
                    parent["lineage_hash"] if parent else None,
                    digest.sha256_hex,
                    request.dataset_sha256,
                ),
                training_run_id=request.training_run_id,
                drift_report_id=request.drift_report_id,
                metrics=dict(request.metrics),
            )
            signature = self._platform.sign(DocumentKind.MODEL_VERSION, document.document())
            try:
                await conn.execute(
                    "INSERT INTO model_versions (id, tenant_id, model_name, version, artifact_uri,"
                    " artifact_version_id, artifact_sha256, signature, key_id, dataset_uri,"
                    " dataset_sha256, parent_version_id, lineage_hash, training_run_id,"
                    " drift_report_id, metrics)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,"
                    " $16)",
                    document.id,
                    tenant_id,
                    document.model_name,
                    document.version,
                    document.artifact_uri,
                    document.artifact_version_id,
                    document.artifact_sha256,
                    signature,
                    self._platform.key_id,
                    document.dataset_uri,
                    document.dataset_sha256,
                    document.parent_version_id,
                    document.lineage_hash,
                    document.training_run_id,
                    document.drift_report_id,
                    document.metrics,
                )
            except (asyncpg.CheckViolationError, asyncpg.ForeignKeyViolationError) as exc:
                raise GovernanceRefusal(f"model version refused: {exc}") from exc
            await record_check(
                conn,
                tenant_id,
                "model.registered",
                str(version_id),
                "REGISTERED",
                {
                    "model_name": document.model_name,
                    "version": document.version,
                    "artifact_uri": document.artifact_uri,
                    "artifact_sha256": document.artifact_sha256,
                    "lineage_hash": document.lineage_hash,
                },
            )
            if also is not None:
                await also(conn)
        return RegisteredModel(
            id=version_id,
            model_name=document.model_name,
            version=document.version,
            status=ModelStatus.REGISTERED,
            artifact_uri=document.artifact_uri,
            artifact_version_id=document.artifact_version_id,
            artifact_sha256=document.artifact_sha256,
            lineage_hash=document.lineage_hash,
            parent_version_id=document.parent_version_id,
        )

    async def version_of_training_run(
        self, tenant_id: UUID, training_run_id: UUID
    ) -> RegisteredModel | None:
        """The model version a training run already produced (a retried registration finds it)."""
        async with self._db.transaction(tenant_id) as conn:
            row = await conn.fetchrow(
                "SELECT * FROM model_versions WHERE training_run_id = $1", training_run_id
            )
        if row is None:
            return None
        return RegisteredModel(
            id=row["id"],
            model_name=row["model_name"],
            version=row["version"],
            status=ModelStatus(row["status"]),
            artifact_uri=row["artifact_uri"],
            artifact_version_id=row["artifact_version_id"],
            artifact_sha256=row["artifact_sha256"],
            lineage_hash=row["lineage_hash"],
            parent_version_id=row["parent_version_id"],
        )

    async def promote_to_shadow(
        self, tenant_id: UUID, model_version_id: UUID, reason: str = "promoted to shadow"
    ) -> None:
        """REGISTERED -> SHADOW, only with a valid model signature and a passed, validly
        signed latest bias audit (M17)."""
        async with self._db.transaction(tenant_id) as conn:
            row = await _model_row(conn, model_version_id)
            await self._require_valid_signature(conn, row)
            audit = await conn.fetchrow(
                "SELECT * FROM bias_audits WHERE model_version_id = $1"
                " ORDER BY created_at DESC, id DESC LIMIT 1",
                model_version_id,
            )
            if audit is None:
                raise BiasAuditRequiredError(f"model version {model_version_id} has no bias audit")
            if not audit["passed"]:
                raise BiasAuditRequiredError(
                    f"the latest bias audit of model version {model_version_id} failed"
                )
            audit_key = await active_public_key(conn, audit["key_id"], "platform")
            if audit_key is None or not verify(
                audit_key,
                DocumentKind.BIAS_AUDIT,
                bias_audit_document(audit).document(),
                audit["signature"],
            ):
                raise SignatureInvalidError(
                    f"the bias audit {audit['id']} of model version {model_version_id}"
                    " has no valid signature"
                )
            await self._move(conn, tenant_id, row, ModelStatus.SHADOW, reason)

    async def promote_to_shadow_or_reject(
        self, tenant_id: UUID, model_version_id: UUID, reason: str = "promoted to shadow"
    ) -> None:
        """:meth:`promote_to_shadow`, except that a model whose bias audit did not pass (or
        that has none) is REJECTED before the refusal is raised: the pipeline's candidate
        either enters SHADOW or is settled, never left REGISTERED."""
        try:
            await self.promote_to_shadow(tenant_id, model_version_id, reason)
        except BiasAuditRequiredError:
            await self.transition(
                tenant_id, model_version_id, ModelStatus.REJECTED, "bias audit did not pass"
            )
            raise

    async def transition(
        self, tenant_id: UUID, model_version_id: UUID, target: ModelStatus, reason: str
    ) -> None:
        """Any other move of the status machine (SHADOW goes through promote_to_shadow)."""
        if target is ModelStatus.SHADOW:
            await self.promote_to_shadow(tenant_id, model_version_id, reason)
            return
        async with self._db.transaction(tenant_id) as conn:
            row = await _model_row(conn, model_version_id)
            await self._move(conn, tenant_id, row, target, reason)

    async def rollback(
        self, tenant_id: UUID, model_name: str, reason: str = "rollback"
    ) -> Rollback:
        """PRODUCTION -> ROLLED_BACK and the most recently archived version back to PRODUCTION,
        in one transaction."""
        async with self._db.transaction(tenant_id) as conn:
            current = await conn.fetchrow(
                "SELECT * FROM model_versions WHERE model_name = $1 AND status = 'PRODUCTION'"
                " FOR UPDATE",
                model_name,
            )
            if current is None:
                raise NotFoundError(f"model {model_name} has no PRODUCTION version to roll back")
            await self._move(conn, tenant_id, current, ModelStatus.ROLLED_BACK, reason)
            previous = await conn.fetchrow(
                "SELECT * FROM model_versions WHERE model_name = $1 AND status = 'ARCHIVED'"
                " ORDER BY status_changed_at DESC, version DESC LIMIT 1 FOR UPDATE",
                model_name,
            )
            if previous is not None:
                await self._move(conn, tenant_id, previous, ModelStatus.PRODUCTION, reason)
            at: datetime = await conn.fetchval("SELECT now()")
            await record_check(
                conn,
                tenant_id,
                "model.rollback",
                str(current["id"]),
                "ROLLED_BACK",
                {"model_name": model_name, "restored": str(previous["id"]) if previous else None},
            )
        return Rollback(current["id"], previous["id"] if previous else None, at)

    async def last_rollback_at(self, tenant_id: UUID) -> datetime | None:
        async with self._db.transaction(tenant_id) as conn:
            at: datetime | None = await conn.fetchval(
                "SELECT max(changed_at) FROM model_status_history WHERE to_status = 'ROLLED_BACK'"
            )
        return at

    async def _require_valid_signature(self, conn: asyncpg.Connection, row: Row) -> None:
        public_key = await active_public_key(conn, row["key_id"], "platform")
        if public_key is None or not verify(
            public_key, DocumentKind.MODEL_VERSION, model_document(row).document(), row["signature"]
        ):
            raise SignatureInvalidError(f"model version {row['id']} has no valid signature")

    async def _move(
        self,
        conn: asyncpg.Connection,
        tenant_id: UUID,
        row: Row,
        target: ModelStatus,
        reason: str,
    ) -> None:
        await move_status(conn, tenant_id, row, target, reason)


async def move_status(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    row: Row,
    target: ModelStatus,
    reason: str,
    *,
    current: ModelStatus | None = None,
    second_production_is_refusal: bool = True,
) -> None:
    """One status move, its reason in the status history and a row in the audit chain.
    ``current`` overrides the row's status when the row was already moved in this transaction.
    A second PRODUCTION (the unique index) is a refusal unless the caller retries such a race
    (``second_production_is_refusal=False``: the retry finds the new state)."""
    source = current or ModelStatus(row["status"])
    if not can_transition(source, target):
        raise IllegalTransitionRefusal(
            f"model version {row['id']} cannot move {source} -> {target}"
        )
    await conn.execute("SELECT set_config('app.status_change_reason', $1, true)", reason)
    refusals = {Law.ILLEGAL_MODEL_STATUS_TRANSITION, Law.SHADOW_REQUIRES_PASSED_BIAS_AUDIT}
    if second_production_is_refusal:
        refusals.add(Law.UNIQUE)
    try:
        await conn.execute(
            "UPDATE model_versions SET status = $1 WHERE id = $2", target.value, row["id"]
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate in refusals:
            raise IllegalTransitionRefusal(str(exc)) from exc
        raise
    await record_check(
        conn,
        tenant_id,
        "model.status",
        str(row["id"]),
        target.value,
        {"from": source.value, "reason": reason},
    )


async def _model_row(conn: asyncpg.Connection, model_version_id: UUID) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT * FROM model_versions WHERE id = $1 FOR UPDATE", model_version_id
    )
    if row is None:
        raise NotFoundError(f"model version {model_version_id} not found")
    return row
