"""What a bias audit judges: a registered model's predictions on the held-out labelled events of
a season (the fields :mod:`domain.holdout` kept out of its training), grouped by an event
attribute; and the pipeline's audit step, which evaluates and audits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from adapters.objectstore import ObjectNotFoundError, S3Uri
from db.repository import Database
from domain.holdout import DEFAULT_HOLDOUT_FRACTION, HoldoutSplit, check_holdout_fraction
from domain.pipeline import AuditOutput
from domain.ridge import ModelFormatError, load_model
from services.bias import BiasAuditService, Evaluation
from services.errors import GovernanceRefusal, NotFoundError
from services.ports import ObjectStorePort

AUDIT_GROUP: Final = "region"


@dataclass(frozen=True)
class HoldoutEvaluation:
    """The model's predictions on the holdout, and how the season's events were split."""

    evaluations: list[Evaluation]
    split: dict[str, Any]


async def evaluate_model(
    db: Database,
    store: ObjectStorePort,
    tenant_id: UUID,
    model_version_id: UUID,
    season: str,
    *,
    group_by: str,
    default_holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
) -> HoldoutEvaluation:
    """Predict the season's held-out events. The split is the one the model was trained with
    (its metrics' ``holdout_fraction``); ``default_holdout_fraction`` only for a model whose
    metrics do not record one."""
    async with db.transaction(tenant_id, isolation="repeatable_read") as conn:
        model = await conn.fetchrow(
            "SELECT artifact_uri, artifact_version_id, metrics FROM model_versions WHERE id = $1",
            model_version_id,
        )
        if model is None:
            raise NotFoundError(f"model version {model_version_id} not found")
        events = await conn.fetch(
            "SELECT field_id, payload FROM learning_events WHERE season_id = $1"
            " AND jsonb_typeof(payload->'outcome') = 'number'"
            " AND payload->'attributes'->>$2 IS NOT NULL",
            season,
            group_by,
        )
    recorded = model["metrics"].get("holdout_fraction")
    try:
        split = HoldoutSplit(float(recorded) if recorded is not None else default_holdout_fraction)
    except (TypeError, ValueError) as exc:
        raise GovernanceRefusal(
            f"model version {model_version_id} records an unusable holdout fraction: {exc}"
        ) from exc
    held_out = [event for event in events if split.is_holdout(event["field_id"])]
    uri = S3Uri.parse(model["artifact_uri"])
    try:
        artifact = await store.get_bytes(uri.bucket, uri.key, model["artifact_version_id"])
        predictor = load_model(artifact)
    except (ObjectNotFoundError, ModelFormatError) as exc:
        raise GovernanceRefusal(
            f"model version {model_version_id} cannot be loaded: {exc}"
        ) from exc
    evaluations = [
        Evaluation(
            group=event["payload"]["attributes"][group_by],
            observed=float(event["payload"]["outcome"]),
            predicted=predictor.predict(event["payload"]["features"]),
        )
        for event in held_out
    ]
    return HoldoutEvaluation(
        evaluations,
        {
            **split.describe(),
            "side": "holdout",
            "fraction_source": "model metrics" if recorded is not None else "configuration",
            "season": season,
            "rows_evaluated": len(held_out),
            "rows_excluded_as_trained_on": len(events) - len(held_out),
        },
    )


class ModelAuditService:
    """The pipeline's bias audit (M17): a registered model's predictions on a season, grouped
    by ``group_by``, judged and signed by the :class:`BiasAuditService`."""

    def __init__(
        self,
        db: Database,
        store: ObjectStorePort,
        audits: BiasAuditService,
        *,
        group_by: str = AUDIT_GROUP,
        holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    ) -> None:
        self._db = db
        self._store = store
        self._audits = audits
        self._group_by = group_by
        self._holdout_fraction = check_holdout_fraction(holdout_fraction)

    async def audit_model(
        self, tenant_id: UUID, model_version_id: UUID, season: str
    ) -> AuditOutput:
        held_out = await evaluate_model(
            self._db,
            self._store,
            tenant_id,
            model_version_id,
            season,
            group_by=self._group_by,
            default_holdout_fraction=self._holdout_fraction,
        )
        if not held_out.evaluations:
            raise GovernanceRefusal(
                f"season {season} has no held-out labelled events with a {self._group_by}"
                f" to audit model version {model_version_id} on ({held_out.split})"
            )
        audit = await self._audits.audit(
            tenant_id,
            model_version_id,
            held_out.evaluations,
            group_by=self._group_by,
            split=held_out.split,
        )
        ratio = audit.metrics.get("error_ratio")
        detail = (
            f"bias audit {'passed' if audit.passed else 'failed'}:"
            f" worst/best {self._group_by} error ratio {ratio}"
            f" on {held_out.split['rows_evaluated']} held-out events"
        )
        if audit.metrics["insufficient_groups"]:
            detail += (
                f"; not judged (under {audit.metrics['min_group_size']} events):"
                f" {audit.metrics['insufficient_groups']}"
            )
        return AuditOutput(passed=audit.passed, detail=detail)
