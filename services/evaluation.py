"""What a bias audit judges: a registered model's predictions on a season's labelled events,
grouped by an event attribute; and the pipeline's audit step, which evaluates and audits."""

from __future__ import annotations

from typing import Final
from uuid import UUID

from adapters.objectstore import ObjectNotFoundError, S3Uri
from db.repository import Database
from domain.pipeline import AuditOutput
from domain.ridge import ModelFormatError, load_model
from services.bias import BiasAuditService, Evaluation
from services.errors import GovernanceRefusal, NotFoundError
from services.ports import ObjectStorePort

AUDIT_GROUP: Final = "region"


async def evaluate_model(
    db: Database,
    store: ObjectStorePort,
    tenant_id: UUID,
    model_version_id: UUID,
    season: str,
    *,
    group_by: str,
) -> list[Evaluation]:
    async with db.transaction(tenant_id, isolation="repeatable_read") as conn:
        model = await conn.fetchrow(
            "SELECT artifact_uri, artifact_version_id FROM model_versions WHERE id = $1",
            model_version_id,
        )
        if model is None:
            raise NotFoundError(f"model version {model_version_id} not found")
        events = await conn.fetch(
            "SELECT payload FROM learning_events WHERE season_id = $1"
            " AND jsonb_typeof(payload->'outcome') = 'number'"
            " AND payload->'attributes'->>$2 IS NOT NULL",
            season,
            group_by,
        )
    uri = S3Uri.parse(model["artifact_uri"])
    try:
        artifact = await store.get_bytes(uri.bucket, uri.key, model["artifact_version_id"])
        predictor = load_model(artifact)
    except (ObjectNotFoundError, ModelFormatError) as exc:
        raise GovernanceRefusal(
            f"model version {model_version_id} cannot be loaded: {exc}"
        ) from exc
    return [
        Evaluation(
            group=event["payload"]["attributes"][group_by],
            observed=float(event["payload"]["outcome"]),
            predicted=predictor.predict(event["payload"]["features"]),
        )
        for event in events
    ]


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
    ) -> None:
        self._db = db
        self._store = store
        self._audits = audits
        self._group_by = group_by

    async def audit_model(
        self, tenant_id: UUID, model_version_id: UUID, season: str
    ) -> AuditOutput:
        evaluations = await evaluate_model(
            self._db, self._store, tenant_id, model_version_id, season, group_by=self._group_by
        )
        audit = await self._audits.audit(
            tenant_id, model_version_id, evaluations, group_by=self._group_by
        )
        ratio = audit.metrics.get("error_ratio")
        return AuditOutput(
            passed=audit.passed,
            detail=f"bias audit {'passed' if audit.passed else 'failed'}:"
            f" worst/best {self._group_by} error ratio {ratio}",
        )
