"""DriftAnalysisService (M19): drift between two windows of a tenant's learning events, and
the signed report of it.

The report is canonical JSON stored at ``drift-reports/{tenant}/{id}.json`` in the model
registry bucket (versioned; the row keeps the version in its URI), its SHA-256 and the platform's
Ed25519 signature over it in ``drift_reports``.
"""

from __future__ import annotations

import asyncio
import json
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4, uuid5

import numpy as np

from adapters.metrics import DriftFigures, FeatureFigures, Metrics
from adapters.objectstore import S3Uri
from db.integrity import record_check
from db.repository import Database
from domain.canonical import canonical_json, sha256_hex
from domain.drift import DriftResult, DriftThresholds, FeatureValues, analyze_drift
from domain.signing import DocumentKind, Signer
from services.errors import GovernanceRefusal
from services.platform import require_platform_key
from services.ports import MetricsPort, ObjectStorePort

REPORT_FORMAT = "rai.drift-report/v1"

_PIPELINE_REPORTS = UUID("3f1f5c2e-6a57-4d1c-9a43-2f6c1f0b7d11")


@dataclass(frozen=True)
class Window:
    """A slice of learning events: one season."""

    season_id: str

    def describe(self) -> dict[str, str]:
        return {"season_id": self.season_id}


@dataclass(frozen=True)
class DriftReportRecord:
    id: UUID
    report_uri: str
    report_sha256: str
    result: DriftResult


def pipeline_report_id(tenant_id: UUID, pipeline_run: str) -> UUID:
    """The id of the one drift report of a pipeline run (``{workflow id}/{run id}``)."""
    return uuid5(_PIPELINE_REPORTS, f"{tenant_id}/{pipeline_run}")


def feature_columns(rows: Sequence[dict[str, Any]]) -> dict[str, FeatureValues]:
    """Event feature maps as columns: numeric columns as float arrays (NaN where an event lacks
    the feature), others as lists of strings (None where missing)."""
    names = sorted({name for row in rows for name in row})
    columns: dict[str, FeatureValues] = {}
    for name in names:
        values = [row.get(name) for row in rows]
        present = [v for v in values if v is not None]
        if present and all(
            isinstance(v, numbers.Real) and not isinstance(v, bool) for v in present
        ):
            columns[name] = np.array([np.nan if v is None else float(v) for v in values])
        else:
            columns[name] = [None if v is None else str(v) for v in values]
    return columns


class DriftAnalysisService:
    def __init__(
        self,
        db: Database,
        store: ObjectStorePort,
        platform: Signer,
        *,
        bucket: str,
        thresholds: DriftThresholds | None = None,
        metrics: MetricsPort | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._platform = platform
        self._bucket = bucket
        self._thresholds = thresholds or DriftThresholds()
        self._metrics: MetricsPort = metrics if metrics is not None else Metrics()

    async def calculate_drift(
        self, tenant_id: UUID, reference: Window, current: Window
    ) -> DriftResult:
        async with self._db.transaction(tenant_id, isolation="repeatable_read") as conn:
            samples = []
            for window in (reference, current):
                rows = await conn.fetch(
                    "SELECT payload->'features' AS features FROM learning_events"
                    " WHERE season_id = $1",
                    window.season_id,
                )
                if not rows:
                    raise GovernanceRefusal(f"no learning events in season {window.season_id}")
                samples.append(feature_columns([row["features"] for row in rows]))
        try:
            # CPU-bound numpy/scipy work: off the event loop.
            return await asyncio.to_thread(analyze_drift, samples[0], samples[1], self._thresholds)
        except ValueError as exc:
            raise GovernanceRefusal(f"drift cannot be computed: {exc}") from exc

    async def recorded_report(self, tenant_id: UUID, report_id: UUID) -> DriftReportRecord | None:
        """The report recorded under ``report_id``, read back from the store and checked
        against its recorded digest; None if there is none."""
        async with self._db.transaction(tenant_id) as conn:
            row = await conn.fetchrow(
                "SELECT report_uri, report_sha256 FROM drift_reports WHERE id = $1", report_id
            )
        if row is None:
            return None
        uri = S3Uri.parse(row["report_uri"])
        body = await self._store.get_bytes(uri.bucket, uri.key, uri.version_id)
        if sha256_hex(body) != row["report_sha256"]:
            raise GovernanceRefusal(f"drift report {report_id} does not match its digest")
        result = DriftResult.model_validate(json.loads(body)["result"])
        return DriftReportRecord(report_id, row["report_uri"], row["report_sha256"], result)

    async def generate_report(
        self,
        tenant_id: UUID,
        reference: Window,
        current: Window,
        *,
        report_id: UUID | None = None,
    ) -> DriftReportRecord:
        """Analyse, sign, store and record a drift report. With ``report_id`` (the pipeline's,
        derived from its run), a report already recorded under that id is returned instead:
        a retried step finds the report of its run and records no second one."""
        if report_id is not None:
            existing = await self.recorded_report(tenant_id, report_id)
            if existing is not None:
                return existing
        result = await self.calculate_drift(tenant_id, reference, current)
        report_id = report_id or uuid4()
        report = {
            "format": REPORT_FORMAT,
            "id": str(report_id),
            "tenant_id": str(tenant_id),
            "reference": reference.describe(),
            "current": current.describe(),
            "result": result.model_dump(mode="json"),
        }
        body = canonical_json(report)
        digest = sha256_hex(body)
        signature = self._platform.sign(DocumentKind.DRIFT_REPORT, report)
        stored = await self._store.put_bytes(
            self._bucket,
            f"drift-reports/{tenant_id}/{report_id}.json",
            body,
            content_type="application/json",
            metadata={"sha256": digest},
        )
        uri = str(S3Uri(stored.bucket, stored.key, stored.version_id))
        summary = {
            "verdict": result.verdict.value,
            "reference": reference.describe(),
            "current": current.describe(),
            "features": {
                f.name: {
                    "psi": f.psi,
                    "p": f.ks_p if f.ks_p is not None else f.chi2_p,
                    "verdict": f.verdict.value,
                }
                for f in result.features
            },
        }
        async with self._db.transaction(tenant_id) as conn:
            await require_platform_key(conn, self._platform)
            await conn.execute(
                "INSERT INTO drift_reports (id, tenant_id, report_uri, report_sha256, signature,"
                " key_id, summary) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                report_id,
                tenant_id,
                uri,
                digest,
                signature,
                self._platform.key_id,
                summary,
            )
            await record_check(
                conn,
                tenant_id,
                "drift.report",
                str(report_id),
                result.verdict.value,
                {"report_uri": uri, "report_sha256": digest},
            )
        self._metrics.drift_report(str(tenant_id), drift_figures(result))
        return DriftReportRecord(report_id, uri, digest, result)


def drift_figures(result: DriftResult) -> DriftFigures:
    """The figures of a drift result that metrics export (every report sets them)."""
    return DriftFigures(
        verdict=result.verdict.value,
        per_feature_alpha=result.per_feature_alpha,
        psi_threshold=result.thresholds.psi_floor,
        n_reference=max((f.n_reference for f in result.features), default=0),
        n_current=max((f.n_current for f in result.features), default=0),
        features=tuple(
            FeatureFigures(
                name=f.name,
                psi=f.psi,
                p_value=f.ks_p if f.ks_p is not None else f.chi2_p,
                verdict=f.verdict.value,
            )
            for f in result.features
        ),
    )
