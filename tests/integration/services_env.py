"""What service tests share: a real object store with fresh buckets, the platform key, tenants."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from uuid import UUID

from adapters.objectstore import ObjectStore
from db.repository import Database
from db.tenants import create_tenant
from domain.signing import Signer
from services.demo import seed_season
from services.keys import register_platform_key
from settings import Settings


@dataclass
class ServicesEnv:
    db: Database
    store: ObjectStore
    settings: Settings
    platform: Signer
    admin_dsn: str

    @property
    def registry_bucket(self) -> str:
        return self.settings.s3_registry_bucket

    async def tenant(self, name: str = "farm") -> UUID:
        """A new tenant with the platform key registered the administrative way."""
        tenant = (await create_tenant(self.db, name)).id
        await register_platform_key(self.admin_dsn, tenant, self.platform.public_key)
        return tenant

    async def artifact(self, tenant: UUID, content: bytes | None = None) -> tuple[str, str]:
        """Upload an artifact; returns its s3:// URI and SHA-256."""
        data = content if content is not None else secrets.token_bytes(4096)
        key = f"models/{tenant}/{secrets.token_hex(4)}/model.json"
        await self.store.put_bytes(self.registry_bucket, key, data)
        return f"s3://{self.registry_bucket}/{key}", hashlib.sha256(data).hexdigest()

    async def seed_events(
        self, tenant: UUID, season: str, n: int, *, shift: float = 0.0, seed: int = 7
    ) -> None:
        """``n`` signed events of one season, with NDVI shifted by ``shift``."""
        await seed_season(self.db, tenant, season, n, ndvi_shift=shift, seed=seed)
