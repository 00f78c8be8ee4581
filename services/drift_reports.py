"""A stored drift report for people to look at: read from the object store at its recorded
version, checked against its recorded SHA-256 and its signature (the pinned platform key), and
rendered as one self-contained HTML page (:mod:`domain.drift_page`). A report that fails a
check is still shown, with the failure as its signature status: the page says what it is."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from adapters.objectstore import InvalidS3UriError, ObjectNotFoundError, S3Uri
from db.repository import Database
from domain.drift import DriftResult
from domain.drift_page import PageContext, render_drift_page
from domain.signing import DocumentKind
from domain.trust import TrustedKeys
from services.errors import GovernanceRefusal, NotFoundError
from services.ports import ObjectStorePort
from services.verify import signed_by_trusted_key


@dataclass(frozen=True)
class DriftReportView:
    report_id: UUID
    tenant_id: UUID
    report: dict[str, Any]
    result: DriftResult
    signature_ok: bool
    signature_detail: str

    def html(self) -> str:
        return render_drift_page(
            self.result,
            PageContext(
                title=f"Drift report {self.report_id}",
                lines=(
                    f"Tenant {self.tenant_id}",
                    f"Reference {_window(self.report.get('reference'))},"
                    f" current {_window(self.report.get('current'))}",
                ),
                signature_ok=self.signature_ok,
                signature_detail=self.signature_detail,
            ),
        )

    def summary(self) -> dict[str, Any]:
        return {
            "report_id": self.report_id,
            "tenant_id": self.tenant_id,
            "verdict": self.result.verdict.value,
            "signature_ok": self.signature_ok,
            "signature": self.signature_detail,
            "features": {
                f.name: {
                    "psi": f.psi,
                    "p": f.ks_p if f.ks_p is not None else f.chi2_p,
                    "verdict": f.verdict.value,
                }
                for f in self.result.features
            },
        }


class DriftReportReader:
    def __init__(self, db: Database, store: ObjectStorePort, trusted: TrustedKeys) -> None:
        self._db = db
        self._store = store
        self._trusted = trusted

    async def read(self, tenant_id: UUID, report_id: UUID) -> DriftReportView:
        """NotFoundError when the tenant has no such report; GovernanceRefusal when the stored
        object cannot be read as a drift report at all."""
        async with self._db.transaction(tenant_id) as conn:
            row = await conn.fetchrow(
                "SELECT report_uri, report_sha256, signature, key_id FROM drift_reports"
                " WHERE id = $1",
                report_id,
            )
        if row is None:
            raise NotFoundError(f"tenant {tenant_id} has no drift report {report_id}")
        try:
            uri = S3Uri.parse(row["report_uri"])
            body = await self._store.get_bytes(uri.bucket, uri.key, uri.version_id)
        except (InvalidS3UriError, ObjectNotFoundError) as exc:
            # Unreachable or refusing S3 is the caller's to report (a service, not the report).
            raise GovernanceRefusal(f"cannot read {row['report_uri']}: {exc}") from exc
        try:
            report: dict[str, Any] = json.loads(body)
            result = DriftResult.model_validate(report["result"])
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise GovernanceRefusal(f"{row['report_uri']} is not a drift report: {exc}") from exc
        if hashlib.sha256(body).hexdigest() != row["report_sha256"]:
            ok, detail = False, "the stored report does not hash to the recorded SHA-256"
        else:
            problem = signed_by_trusted_key(
                self._trusted, row["key_id"], DocumentKind.DRIFT_REPORT, report, row["signature"]
            )
            ok = problem is None
            detail = problem or f"signed by platform key {row['key_id']}; SHA-256 matches"
        return DriftReportView(report_id, tenant_id, report, result, ok, detail)


def _window(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k.removesuffix('_id')} {v}" for k, v in sorted(value.items()))
    return str(value)
