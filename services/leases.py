"""The pipeline's tenant lease (M21, M25): the Redis mutex, fenced above every fence the
database has seen, in the workflow's vocabulary (:class:`domain.pipeline.LeaseInfo`)."""

from __future__ import annotations

from uuid import UUID

from adapters.redis_mutex import Lease, TenantMutex
from domain.pipeline import LeaseInfo
from services.pipeline import PipelineService
from services.reaper import PipelineReaper


class TenantLeases:
    def __init__(
        self, mutex: TenantMutex, pipeline: PipelineService, reaper: PipelineReaper | None = None
    ) -> None:
        self._mutex = mutex
        self._pipeline = pipeline
        self._reaper = reaper

    async def acquire(self, tenant_id: UUID, holder: str) -> LeaseInfo | None:
        """The tenant's lease, or None while someone else holds it. Its fence is above the
        newest fence a training run of the tenant was recorded with, so a Redis that lost its
        counter still hands out a fence the database accepts. The fence is recorded in the
        database before it is handed out, so every later write of an older holder is refused."""
        if self._reaper is not None:  # what a terminated pipeline left behind goes first
            await self._reaper.reap(tenant_id)
        newest = await self._pipeline.newest_fence(tenant_id)
        lease = await self._mutex.acquire(tenant_id, holder, fence_floor=newest)
        if lease is None:
            return None
        await self._pipeline.record_fence(tenant_id, lease.fence, lease.holder)
        return LeaseInfo(
            tenant_id=lease.tenant_id, token=lease.token, fence=lease.fence, holder=lease.holder
        )

    async def renew(self, info: LeaseInfo) -> bool:
        """False once the lease is lost."""
        return await self._mutex.renew(self._lease(info))

    async def release(self, info: LeaseInfo) -> None:
        await self._mutex.release(self._lease(info))

    def _lease(self, info: LeaseInfo) -> Lease:
        return Lease(
            tenant_id=info.tenant_id,
            token=info.token,
            fence=info.fence,
            holder=info.holder,
            ttl=self._mutex.ttl,
        )
