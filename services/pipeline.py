"""The retraining pipeline's bookkeeping: preconditions (M22, M23), the seasons to compare, the
WORM training-data snapshot, training runs (fenced), dead letters (M8) and outcomes — one
place, over the database and the object store, for the activities to call; and the drift step
(:class:`DriftCheck`) over it and the drift service."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from adapters.metrics import Metrics
from adapters.objectstore import S3Uri
from db.errors import Law
from db.integrity import record_check
from db.repository import Database
from domain.canonical import canonical_json
from domain.pipeline import (
    DEAD_LETTER_QUEUE,
    DriftOutput,
    PipelineOutcome,
    PipelineResult,
    PreconditionsResult,
    SnapshotOutput,
    sanitised_text,
)
from domain.policies import cooldown_active, cooldown_ends_at
from services.drift import DriftAnalysisService, Window, pipeline_report_id
from services.errors import GovernanceRefusal, NotFoundError
from services.ports import MetricsPort, ObjectStorePort


@dataclass(frozen=True)
class DeadLetter:
    id: UUID
    queue: str
    workflow_id: str
    error: str
    attempts: int
    created_at: datetime
    resolved_at: datetime | None


class StaleLeaseError(GovernanceRefusal):
    """A pipeline whose tenant lease was superseded tried to record a training run."""


class PipelineService:
    def __init__(
        self,
        db: Database,
        store: ObjectStorePort,
        *,
        datasets_bucket: str,
        metrics: MetricsPort | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._datasets_bucket = datasets_bucket
        self._metrics: MetricsPort = metrics if metrics is not None else Metrics()

    async def preconditions(self, tenant_id: UUID, now: datetime) -> PreconditionsResult:
        async with self._db.transaction(tenant_id) as conn:
            active = await conn.fetchrow(
                "SELECT id, status FROM training_runs WHERE status IN ('QUEUED', 'RUNNING')"
            )
            last_rollback: datetime | None = await conn.fetchval(
                "SELECT max(changed_at) FROM model_status_history WHERE to_status = 'ROLLED_BACK'"
            )
        if active is not None:
            return PreconditionsResult(
                blocked_by=PipelineOutcome.SKIPPED_ACTIVE_RUN,
                detail=f"training run {active['id']} is {active['status']}",
            )
        if cooldown_active(last_rollback, now):
            return PreconditionsResult(
                blocked_by=PipelineOutcome.SKIPPED_COOLDOWN,
                detail=f"rolled back at {last_rollback}; no retraining before"
                f" {cooldown_ends_at(last_rollback)}",
            )
        return PreconditionsResult()

    async def newest_fence(self, tenant_id: UUID) -> int:
        """The highest fencing token the database has seen for the tenant: on a training run,
        or recorded as granted (:meth:`record_fence`)."""
        async with self._db.transaction(tenant_id) as conn:
            newest: int | None = await conn.fetchval(
                "SELECT greatest((SELECT max(fencing_token) FROM training_runs),"
                " (SELECT fence FROM tenant_fences))"
            )
        return newest or 0

    async def record_fence(self, tenant_id: UUID, fence: int, holder: str) -> None:
        """Record that the tenant's lease with ``fence`` was granted to ``holder``: from then
        on the database refuses every write of an older holder (RA008, ``tenant_fences``)."""
        async with self._db.transaction(tenant_id) as conn:
            try:
                await conn.execute(
                    "INSERT INTO tenant_fences (tenant_id, fence, holder) VALUES ($1, $2, $3)"
                    " ON CONFLICT (tenant_id) DO UPDATE SET fence = EXCLUDED.fence,"
                    " holder = EXCLUDED.holder, granted_at = now()",
                    tenant_id,
                    fence,
                    holder,
                )
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == Law.STALE_FENCE:
                    raise StaleLeaseError(str(exc)) from exc
                raise

    async def drift_seasons(
        self, tenant_id: UUID, reference: str | None, current: str | None
    ) -> tuple[str, str] | None:
        """The (reference, current) seasons drift analysis compares: the pair asked for, or,
        unless both are given, the tenant's two newest seasons (season ids sort
        chronologically); None when the tenant has fewer than two."""
        if reference is not None and current is not None:
            return reference, current
        async with self._db.transaction(tenant_id) as conn:
            rows = await conn.fetch(
                "SELECT DISTINCT season_id FROM learning_events ORDER BY season_id DESC LIMIT 2"
            )
        if len(rows) < 2:
            return None
        return rows[1]["season_id"], rows[0]["season_id"]

    async def snapshot(self, tenant_id: UUID, training_run_id: UUID, season: str) -> SnapshotOutput:
        """Write the season's labelled events as JSON Lines to the WORM datasets bucket (the
        bucket's default COMPLIANCE retention locks it). A retry finds the snapshot it wrote."""
        key = f"snapshots/{tenant_id}/{training_run_id}.jsonl"
        existing = await self._store.head(self._datasets_bucket, key)
        if existing is not None:
            digest = await self._store.stream_sha256(
                self._datasets_bucket, key, existing.version_id
            )
            uri = S3Uri(self._datasets_bucket, key, existing.version_id)
            rows = int(existing.metadata.get("rows", "0"))
            return SnapshotOutput(dataset_uri=str(uri), dataset_sha256=digest.sha256_hex, rows=rows)
        async with self._db.transaction(tenant_id, isolation="repeatable_read") as conn:
            records = await conn.fetch(
                "SELECT season_id, field_id, payload FROM learning_events"
                " WHERE season_id = $1 AND payload->'outcome' IS NOT NULL"
                " AND jsonb_typeof(payload->'outcome') = 'number' ORDER BY field_id",
                season,
            )
        if not records:
            raise GovernanceRefusal(f"season {season} has no events with an observed outcome")
        lines = [
            canonical_json(
                {
                    "season_id": r["season_id"],
                    "field_id": r["field_id"],
                    "features": r["payload"]["features"],
                    "outcome": r["payload"]["outcome"],
                }
            )
            for r in records
        ]
        body = b"\n".join(lines) + b"\n"
        sha = hashlib.sha256(body).hexdigest()
        stored = await self._store.put_bytes(
            self._datasets_bucket,
            key,
            body,
            content_type="application/x-ndjson",
            metadata={"sha256": sha, "rows": str(len(lines)), "season": season},
        )
        async with self._db.transaction(tenant_id) as conn:
            await record_check(
                conn,
                tenant_id,
                "dataset.snapshot",
                str(training_run_id),
                "WRITTEN",
                {"uri": str(stored.uri), "sha256": sha, "rows": len(lines)},
            )
        return SnapshotOutput(dataset_uri=str(stored.uri), dataset_sha256=sha, rows=len(lines))

    async def start_training_run(
        self,
        tenant_id: UUID,
        training_run_id: UUID,
        *,
        workflow_id: str,
        fence: int,
        model_name: str,
        dataset_uri: str,
        dataset_sha256: str,
        callback_public_key: bytes,
        workflow_run_id: str | None = None,
    ) -> None:
        """Record the run QUEUED (once: a retry finds it), owned by the workflow execution
        ``workflow_id``/``workflow_run_id``. The database refuses a stale fence and a second
        active run of the tenant."""
        async with self._db.transaction(tenant_id) as conn:
            if await conn.fetchval("SELECT 1 FROM training_runs WHERE id = $1", training_run_id):
                return
            try:
                await conn.execute(
                    "INSERT INTO training_runs (id, tenant_id, workflow_id, status, dataset_uri,"
                    " dataset_sha256, fencing_token, callback_public_key, model_name,"
                    " workflow_run_id) VALUES ($1, $2, $3, 'QUEUED', $4, $5, $6, $7, $8, $9)",
                    training_run_id,
                    tenant_id,
                    workflow_id,
                    dataset_uri,
                    dataset_sha256,
                    fence,
                    callback_public_key,
                    model_name,
                    workflow_run_id,
                )
            except asyncpg.PostgresError as exc:
                if exc.sqlstate == Law.STALE_FENCE:
                    raise StaleLeaseError(str(exc)) from exc
                if isinstance(exc, asyncpg.UniqueViolationError):
                    raise GovernanceRefusal(
                        f"tenant {tenant_id} already has an active training run"
                    ) from exc
                raise
            await record_check(
                conn,
                tenant_id,
                "training.queued",
                str(training_run_id),
                "QUEUED",
                {"workflow_id": workflow_id, "fence": fence, "dataset_uri": dataset_uri},
            )
        self._metrics.training_phase(str(tenant_id), "QUEUED")

    async def mark_running(self, tenant_id: UUID, training_run_id: UUID, job_name: str) -> None:
        async with self._db.transaction(tenant_id) as conn:
            previous = await conn.fetchval(
                "SELECT status FROM training_runs WHERE id = $1 FOR UPDATE", training_run_id
            )
            await conn.execute(
                "UPDATE training_runs SET status = 'RUNNING', started_at = coalesce(started_at,"
                " now()), job_name = $2 WHERE id = $1 AND status IN ('QUEUED', 'RUNNING')",
                training_run_id,
                job_name,
            )
        if previous == "QUEUED":
            self._metrics.training_phase(str(tenant_id), "RUNNING")

    async def finish_run(
        self, tenant_id: UUID, training_run_id: UUID, status: str, *, reason: str | None = None
    ) -> bool:
        """RUNNING/QUEUED -> SUCCEEDED, FAILED or CANCELLED (a finished run is left as it is);
        ``reason`` goes to the audit log. True if this call finished the run."""
        if status not in ("SUCCEEDED", "FAILED", "CANCELLED"):
            raise ValueError(f"not a final training run status: {status}")
        async with self._db.transaction(tenant_id) as conn:
            return await self.finish_run_in(conn, tenant_id, training_run_id, status, reason)

    async def finish_run_in(
        self,
        conn: asyncpg.Connection,
        tenant_id: UUID,
        training_run_id: UUID,
        status: str,
        reason: str | None = None,
    ) -> bool:
        """:meth:`finish_run` inside the caller's transaction."""
        if status == "SUCCEEDED":
            await conn.execute(
                "UPDATE training_runs SET status = 'RUNNING', started_at = now()"
                " WHERE id = $1 AND status = 'QUEUED'",
                training_run_id,
            )
        seconds: float | None = await conn.fetchval(
            "UPDATE training_runs SET status = $2, finished_at = now()"
            " WHERE id = $1 AND status IN ('QUEUED', 'RUNNING')"
            " RETURNING extract(epoch FROM finished_at - coalesce(started_at, created_at))",
            training_run_id,
            status,
        )
        if seconds is None:
            return False
        await record_check(
            conn,
            tenant_id,
            "training.finished",
            str(training_run_id),
            status,
            {"reason": reason} if reason else None,
        )
        # One observation per run (this call finished it); inside a registration's
        # transaction it is made just before that commits.
        self._metrics.training_phase(str(tenant_id), status)
        self._metrics.training_finished(str(tenant_id), status, float(seconds))
        return True

    async def run_job(self, tenant_id: UUID, training_run_id: UUID) -> str | None:
        """The job the run last launched (None before its first)."""
        async with self._db.transaction(tenant_id) as conn:
            job: str | None = await conn.fetchval(
                "SELECT job_name FROM training_runs WHERE id = $1", training_run_id
            )
        return job

    async def dead_letter(
        self,
        tenant_id: UUID,
        *,
        workflow_id: str,
        error: str,
        attempts: int,
        training_run_id: UUID | None,
    ) -> UUID:
        error, workflow_id = sanitised_text(error), sanitised_text(workflow_id, 500)
        if training_run_id is not None:
            await self.finish_run(tenant_id, training_run_id, "FAILED", reason=error)
        async with self._db.transaction(tenant_id) as conn:
            letter_id: UUID = await conn.fetchval(
                "INSERT INTO dead_letters (tenant_id, queue, workflow_id, error, attempts)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING id",
                tenant_id,
                DEAD_LETTER_QUEUE,
                workflow_id,
                error,
                attempts,
            )
            await record_check(
                conn,
                tenant_id,
                "pipeline.dead_letter",
                str(letter_id),
                "DEAD_LETTERED",
                {"workflow_id": workflow_id, "attempts": attempts, "error": error},
            )
        return letter_id

    async def record_outcome(
        self, workflow_id: str, workflow_run_id: str, result: PipelineResult
    ) -> bool:
        """Append the pipeline's outcome to the tenant's integrity chain and count it, once per
        workflow run: an activity retried after its first attempt committed finds the row
        (the run id is in its details) and records and counts nothing; two racing attempts
        meet the unique index ``integrity_checks_one_outcome_per_run``. True when recorded
        now."""
        details = {**json.loads(result.model_dump_json()), "workflow_run_id": workflow_run_id}
        try:
            async with self._db.transaction(result.tenant_id) as conn:
                if await conn.fetchval(
                    "SELECT 1 FROM integrity_checks WHERE check_type = 'pipeline.outcome'"
                    " AND subject_id = $1 AND details ->> 'workflow_run_id' = $2",
                    workflow_id,
                    workflow_run_id,
                ):
                    return False
                await record_check(
                    conn,
                    result.tenant_id,
                    "pipeline.outcome",
                    workflow_id,
                    result.outcome.value,
                    details,
                )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != "integrity_checks_one_outcome_per_run":
                raise
            return False  # another attempt recorded it meanwhile
        # One increment per finished pipeline: every way out of the workflow ends here.
        self._metrics.pipeline_finished(str(result.tenant_id), result.outcome.value)
        return True


class DriftCheck:
    """Step 3 of the pipeline: pick the seasons, have the drift service report on them."""

    def __init__(self, pipeline: PipelineService, drift: DriftAnalysisService) -> None:
        self._pipeline = pipeline
        self._drift = drift

    async def check(
        self,
        tenant_id: UUID,
        reference: str | None,
        current: str | None,
        *,
        pipeline_run: str | None = None,
    ) -> DriftOutput:
        """The drift verdict; ``pipeline_run`` (``{workflow id}/{run id}``) keys the run's one
        report, so a retried step reuses it."""
        seasons = await self._pipeline.drift_seasons(tenant_id, reference, current)
        if seasons is None:
            return DriftOutput(
                report_id=None,
                verdict="INSUFFICIENT_DATA",
                reference_season=None,
                current_season=None,
                detail="drift needs two seasons of events",
            )
        reference, current = seasons
        report = await self._drift.generate_report(
            tenant_id,
            Window(reference),
            Window(current),
            report_id=None if pipeline_run is None else pipeline_report_id(tenant_id, pipeline_run),
        )
        return DriftOutput(
            report_id=report.id,
            verdict=report.result.verdict.value,
            reference_season=reference,
            current_season=current,
            features={f.name: f.verdict.value for f in report.result.features},
            detail=f"season {current} against {reference}",
        )


async def list_dead_letters(
    db: Database, tenant_id: UUID, *, include_resolved: bool
) -> list[DeadLetter]:
    async with db.transaction(tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT id, queue, workflow_id, error, attempts, created_at, resolved_at"
            " FROM dead_letters WHERE $1 OR resolved_at IS NULL ORDER BY created_at",
            include_resolved,
        )
    return [DeadLetter(**dict(row)) for row in rows]


async def resolve_dead_letter(db: Database, tenant_id: UUID, letter_id: UUID) -> None:
    async with db.transaction(tenant_id) as conn:
        changed = await conn.execute(
            "UPDATE dead_letters SET resolved_at = now() WHERE id = $1 AND resolved_at IS NULL",
            letter_id,
        )
        if changed != "UPDATE 1":
            raise NotFoundError(f"no unresolved dead letter {letter_id} for this tenant")
        await record_check(conn, tenant_id, "pipeline.dead_letter", str(letter_id), "RESOLVED")
