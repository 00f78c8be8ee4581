"""Synthetic, signed field observations for the demo tenant (and the tests that need a
realistic season): a yield that depends on NDVI, rainfall and soil, two regions, and a season
whose NDVI has visibly drifted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import numpy as np

from db.repository import Database
from domain.documents import event_document
from domain.policies import EventOutcome
from domain.signing import DocumentKind, Signer
from services.events import IncomingEvent, LearningEventService
from services.keys import register_key

SOIL_EFFECT = {"loam": 0.0, "clay": -0.4, "sand": 0.3}
REGIONS = ("north", "south")


@dataclass(frozen=True)
class SeededSeason:
    season_id: str
    counts: dict[str, int]


def season_events(
    tenant_id: UUID, season: str, n: int, device: Signer, *, ndvi_shift: float, seed: int
) -> list[IncomingEvent]:
    """``n`` events signed by ``device``; NDVI drawn around 0.6 + ``ndvi_shift``."""
    rng = np.random.default_rng(seed)
    ndvi = rng.normal(0.6 + ndvi_shift, 0.1, n)
    rain = rng.normal(300.0, 40.0, n)
    soils = rng.choice(sorted(SOIL_EFFECT), n)
    noise = rng.normal(0.0, 0.2, n)
    events = []
    for i in range(n):
        soil = str(soils[i])
        payload: dict[str, Any] = {
            "features": {"ndvi": float(ndvi[i]), "rain_mm": float(rain[i]), "soil": soil},
            "outcome": float(10 * ndvi[i] + rain[i] / 100 + SOIL_EFFECT[soil] + noise[i]),
            "attributes": {"region": REGIONS[i % len(REGIONS)]},
        }
        field = f"field-{i:05d}"
        document = event_document(tenant_id, season, field, payload)
        events.append(
            IncomingEvent(
                season, field, payload, device.sign(DocumentKind.EVENT, document), device.key_id
            )
        )
    return events


async def seed_season(
    db: Database,
    tenant_id: UUID,
    season: str,
    n: int,
    *,
    ndvi_shift: float = 0.0,
    seed: int = 7,
    device: Signer | None = None,
    batch_size: int = 500,
) -> SeededSeason:
    """Register a device key (a new one unless given) and ingest ``n`` signed events."""
    device = device or Signer.generate()
    await register_key(db, tenant_id, device.public_key, "device")
    events = season_events(tenant_id, season, n, device, ndvi_shift=ndvi_shift, seed=seed)
    service = LearningEventService(db)
    counts = {outcome.value: 0 for outcome in EventOutcome}
    for start in range(0, len(events), batch_size):
        for result in await service.ingest(tenant_id, events[start : start + batch_size]):
            counts[result.outcome.value] += 1
    return SeededSeason(season, counts)
