"""BiasAuditService: does the model serve every group of fields about equally well?

Per group (an event attribute such as region or crop) the mean absolute error of the model's
predictions is computed; the audit passes when the worst group's error is at most
``max_error_ratio`` times the best group's. Groups with fewer than ``min_group_size``
evaluations are not judged, and say so: they are listed with their counts under
``insufficient_groups`` and named in the verdict, never silently passed. The pipeline audits on
the holdout (:mod:`services.evaluation`), and the audit records that split (``split``). The
signed audit is append-only.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

from db.integrity import record_check
from db.repository import Database
from domain.canonical import canonical_sha256
from domain.documents import BiasAuditDocument
from domain.signing import DocumentKind, Signer
from services.errors import GovernanceRefusal, NotFoundError
from services.platform import require_platform_key


@dataclass(frozen=True)
class Evaluation:
    group: str
    observed: float
    predicted: float


@dataclass(frozen=True)
class AuditResult:
    id: UUID
    passed: bool
    metrics: dict[str, Any]


def disparity_metrics(
    evaluations: Sequence[Evaluation], *, max_error_ratio: float, min_group_size: int
) -> tuple[bool, dict[str, Any]]:
    if max_error_ratio < 1:
        raise ValueError("max_error_ratio must be at least 1")
    errors: dict[str, list[float]] = defaultdict(list)
    for item in evaluations:
        errors[item.group].append(abs(item.observed - item.predicted))
    groups = {
        name: {"n": len(values), "mae": sum(values) / len(values)}
        for name, values in sorted(errors.items())
    }
    judged = {name: g for name, g in groups.items() if g["n"] >= min_group_size}
    insufficient = {name: g["n"] for name, g in groups.items() if name not in judged}
    metrics: dict[str, Any] = {
        "groups": groups,
        "judged_groups": sorted(judged),
        "insufficient_groups": insufficient,
        "max_error_ratio": max_error_ratio,
        "min_group_size": min_group_size,
    }
    if not judged:
        metrics.update(
            worst_group=None,
            best_group=None,
            error_ratio=None,
            verdict="no group has enough evaluations",
        )
        return False, metrics
    worst = max(judged, key=lambda name: judged[name]["mae"])
    best = min(judged, key=lambda name: judged[name]["mae"])
    worst_mae, best_mae = judged[worst]["mae"], judged[best]["mae"]
    ratio = _error_ratio(worst_mae, best_mae)
    passed = ratio is not None and ratio <= max_error_ratio
    verdict = "within bound" if passed else "disparity above bound"
    if insufficient:
        verdict += f"; {len(insufficient)} group(s) under {min_group_size} events not judged"
    metrics.update(worst_group=worst, best_group=best, error_ratio=ratio, verdict=verdict)
    return passed, metrics


def _error_ratio(worst_mae: float, best_mae: float) -> float | None:
    """worst / best; None when the best group is error-free and another is not (unbounded)."""
    if best_mae > 0:
        return worst_mae / best_mae
    return 1.0 if worst_mae == 0 else None


class BiasAuditService:
    def __init__(
        self,
        db: Database,
        platform: Signer,
        *,
        max_error_ratio: float = 1.5,
        min_group_size: int = 30,
    ) -> None:
        self._db = db
        self._platform = platform
        self._max_error_ratio = max_error_ratio
        self._min_group_size = min_group_size

    async def audit(
        self,
        tenant_id: UUID,
        model_version_id: UUID,
        evaluations: Sequence[Evaluation],
        *,
        group_by: str,
        split: dict[str, Any] | None = None,
    ) -> AuditResult:
        """Judge and sign ``evaluations``; ``split`` says which rows they are (recorded)."""
        if not evaluations:
            raise GovernanceRefusal("a bias audit needs evaluations")
        passed, metrics = disparity_metrics(
            evaluations,
            max_error_ratio=self._max_error_ratio,
            min_group_size=self._min_group_size,
        )
        metrics["group_by"] = group_by
        if split is not None:
            metrics["split"] = split
        audit_id = uuid4()
        document = BiasAuditDocument(
            id=audit_id,
            tenant_id=tenant_id,
            model_version_id=model_version_id,
            passed=passed,
            metrics=metrics,
        ).document()
        signature = self._platform.sign(DocumentKind.BIAS_AUDIT, document)
        async with self._db.transaction(tenant_id) as conn:
            if not await conn.fetchval(
                "SELECT 1 FROM model_versions WHERE id = $1", model_version_id
            ):
                raise NotFoundError(f"model version {model_version_id} not found")
            await require_platform_key(conn, self._platform)
            await conn.execute(
                "INSERT INTO bias_audits (id, tenant_id, model_version_id, passed, metrics,"
                " report_sha256, signature, key_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                audit_id,
                tenant_id,
                model_version_id,
                passed,
                metrics,
                canonical_sha256(document),
                signature,
                self._platform.key_id,
            )
            await record_check(
                conn,
                tenant_id,
                "model.bias_audit",
                str(model_version_id),
                "PASSED" if passed else "FAILED",
                {
                    "audit_id": str(audit_id),
                    "error_ratio": metrics["error_ratio"],
                    "insufficient_groups": metrics["insufficient_groups"],
                    "split": metrics.get("split"),
                },
            )
        return AuditResult(audit_id, passed, metrics)
