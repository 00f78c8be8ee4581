"""What the promotion tests share: model versions in a chosen status, and signed learning events
carrying paired predictions, both through the real services."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import asyncpg

from domain.documents import event_document
from domain.model_status import ModelStatus
from domain.signing import DocumentKind, Signer
from services.bias import BiasAuditService, Evaluation
from services.events import IncomingEvent, LearningEventService
from services.keys import register_key
from services.registry import ModelRegistryService, RegisterModel
from tests.integration.services_env import ServicesEnv

PASSING_AUDIT = [Evaluation("north", 5.0, 5.1) for _ in range(40)] + [
    Evaluation("south", 5.0, 4.9) for _ in range(40)
]


async def model_in(
    env: ServicesEnv, tenant: UUID, status: ModelStatus, name: str = "yield"
) -> UUID:
    """A registered, audited model version moved to ``status`` (SHADOW, CANARY or
    PRODUCTION) along the status machine."""
    registry = ModelRegistryService(env.db, env.store, env.platform)
    uri, _ = await env.artifact(tenant)
    model = await registry.register_model(
        tenant,
        RegisterModel(
            model_name=name,
            artifact_uri=uri,
            dataset_uri="s3://rai-datasets/snapshots/1.jsonl",
            dataset_sha256="d" * 64,
        ),
    )
    await BiasAuditService(env.db, env.platform).audit(
        tenant, model.id, PASSING_AUDIT, group_by="region"
    )
    await registry.promote_to_shadow(tenant, model.id)
    if status in (ModelStatus.CANARY, ModelStatus.PRODUCTION):
        await registry.transition(tenant, model.id, ModelStatus.CANARY, "test")
    if status is ModelStatus.PRODUCTION:
        await registry.transition(tenant, model.id, ModelStatus.PRODUCTION, "test")
    return model.id


def paired(outcome: float | None, predictions: dict[UUID, float], **extra: Any) -> dict[str, Any]:
    """An event payload with the observed ``outcome`` and each model's prediction."""
    payload: dict[str, Any] = {
        "features": {"ndvi": 0.6},
        "predictions": {str(model): value for model, value in predictions.items()},
        **extra,
    }
    if outcome is not None:
        payload["outcome"] = outcome
    return payload


@dataclass
class Device:
    """A tenant's device, sending signed events to fresh field ids."""

    env: ServicesEnv
    tenant: UUID
    season: str = "2026"
    device: Signer = field(default_factory=Signer.generate)
    sent: int = 0
    registered: bool = False

    async def send(self, *payloads: dict[str, Any]) -> None:
        """Ingest the payloads as one batch (one transaction: one ``received_at``)."""
        if not self.registered:
            await register_key(self.env.db, self.tenant, self.device.public_key, "device")
            self.registered = True
        events = []
        for payload in payloads:
            field_id = f"field-{self.sent}"
            self.sent += 1
            document = event_document(self.tenant, self.season, field_id, payload)
            events.append(
                IncomingEvent(
                    self.season,
                    field_id,
                    payload,
                    self.device.sign(DocumentKind.EVENT, document),
                    self.device.key_id,
                )
            )
        results = await LearningEventService(self.env.db).ingest(self.tenant, events)
        assert all(r.outcome.value == "ACCEPTED" for r in results), results

    async def send_each(self, *payloads: dict[str, Any]) -> None:
        """Ingest the payloads one transaction each, so they are received in this order."""
        for payload in payloads:
            await self.send(payload)


async def statuses(env: ServicesEnv, tenant: UUID) -> dict[UUID, str]:
    async with env.db.transaction(tenant) as conn:
        rows = await conn.fetch("SELECT id, status FROM model_versions")
    return {row["id"]: row["status"] for row in rows}


async def history(env: ServicesEnv, tenant: UUID, model: UUID) -> list[asyncpg.Record]:
    async with env.db.transaction(tenant) as conn:
        return await conn.fetch(
            "SELECT from_status, to_status, reason, changed_at FROM model_status_history"
            " WHERE model_version_id = $1 ORDER BY id",
            model,
        )


async def decisions(env: ServicesEnv, tenant: UUID) -> list[asyncpg.Record]:
    async with env.db.transaction(tenant) as conn:
        return await conn.fetch(
            "SELECT subject_id, outcome, details FROM integrity_checks"
            " WHERE check_type = 'shadow_evaluation.decision' ORDER BY seq"
        )
