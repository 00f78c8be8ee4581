"""What service tests share: a real object store with fresh buckets, the platform key, tenants."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np

from adapters.objectstore import ObjectStore
from db.repository import Database
from db.tenants import create_tenant
from domain.documents import event_document
from domain.signing import DocumentKind, Signer
from services.events import IncomingEvent, LearningEventService
from services.keys import register_key
from settings import Settings


@dataclass
class ServicesEnv:
    db: Database
    store: ObjectStore
    settings: Settings
    platform: Signer

    @property
    def registry_bucket(self) -> str:
        return self.settings.s3_registry_bucket

    async def tenant(self, name: str = "farm") -> UUID:
        return (await create_tenant(self.db, name)).id

    async def artifact(self, tenant: UUID, content: bytes | None = None) -> tuple[str, str]:
        """Upload an artifact; returns its s3:// URI and SHA-256."""
        data = content if content is not None else secrets.token_bytes(4096)
        key = f"models/{tenant}/{secrets.token_hex(4)}/model.json"
        await self.store.put_bytes(self.registry_bucket, key, data)
        return f"s3://{self.registry_bucket}/{key}", hashlib.sha256(data).hexdigest()

    async def seed_events(
        self, tenant: UUID, season: str, n: int, *, shift: float = 0.0, seed: int = 7
    ) -> None:
        """``n`` signed events of one season, with ndvi shifted by ``shift``."""
        device = Signer.generate()
        await register_key(self.db, tenant, device.public_key, "device")
        rng = np.random.default_rng(seed)
        ndvi = rng.normal(0.6 + shift, 0.1, n)
        rain = rng.normal(300.0, 40.0, n)
        soils = rng.choice(["loam", "clay", "sand"], n)
        events = []
        for i in range(n):
            payload: dict[str, Any] = {
                "features": {
                    "ndvi": float(ndvi[i]),
                    "rain_mm": float(rain[i]),
                    "soil": str(soils[i]),
                },
                "outcome": float(10 * ndvi[i] + rain[i] / 100),
                "attributes": {"region": ["north", "south"][i % 2]},
            }
            document = event_document(tenant, season, f"field-{i}", payload)
            events.append(
                IncomingEvent(
                    season,
                    f"field-{i}",
                    payload,
                    device.sign(DocumentKind.EVENT, document),
                    device.key_id,
                )
            )
        await LearningEventService(self.db).ingest(tenant, events)
