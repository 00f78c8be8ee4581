"""The pipeline's tenant lease (M21, M25): the Redis mutex, fenced above every fence the
database has seen, in the workflow's vocabulary (:class:`domain.pipeline.LeaseInfo`)."""

from __future__ import annotations

import time
from uuid import UUID

from adapters.metrics import Metrics
from adapters.redis_mutex import Lease, TenantMutex
from domain.pipeline import LeaseInfo
from services.pipeline import PipelineService
from services.ports import MetricsPort
from services.reaper import PipelineReaper


def _epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class TenantLeases:
    def __init__(
        self,
        mutex: TenantMutex,
        pipeline: PipelineService,
        reaper: PipelineReaper | None = None,
        *,
        metrics: MetricsPort | None = None,
    ) -> None:
        self._mutex = mutex
        self._pipeline = pipeline
        self._reaper = reaper
        self._metrics: MetricsPort = metrics if metrics is not None else Metrics()

    async def acquire(self, tenant_id: UUID, holder: str) -> LeaseInfo | None:
        """The tenant's lease, or None while someone else holds it. Its fence is above the
        newest fence a training run of the tenant was recorded with, so a Redis that lost its
        counter still hands out a fence the database accepts. The fence is recorded in the
        database before it is handed out, so every later write of an older holder is refused."""
        if self._reaper is not None:  # what a terminated pipeline left behind goes first
            await self._reaper.reap(tenant_id)
        started = time.monotonic()
        newest = await self._pipeline.newest_fence(tenant_id)
        lease = await self._mutex.acquire(tenant_id, holder, fence_floor=newest)
        now = time.monotonic()
        self._metrics.lease_tried(str(tenant_id), lease is not None, now - started)
        if lease is None:
            return None
        await self._pipeline.record_fence(tenant_id, lease.fence, lease.holder)
        return LeaseInfo(
            tenant_id=lease.tenant_id,
            token=lease.token,
            fence=lease.fence,
            holder=lease.holder,
            granted_at_ms=_epoch_ms(),
        )

    async def renew(self, info: LeaseInfo) -> bool:
        """False once the lease is lost."""
        return await self._mutex.renew(self._lease(info))

    async def release(self, info: LeaseInfo) -> None:
        """Release the lease and observe how long it was held, whichever worker took it (the
        grant time travels in the lease; wall clocks, so workers' clocks are assumed close,
        and a negative span counts as 0). A lease of an older history, with no grant time, is
        released without an observation."""
        await self._mutex.release(self._lease(info))
        if info.granted_at_ms is not None:
            held = (_epoch_ms() - info.granted_at_ms) / 1000
            self._metrics.lease_released(str(info.tenant_id), held)

    def _lease(self, info: LeaseInfo) -> Lease:
        return Lease(
            tenant_id=info.tenant_id,
            token=info.token,
            fence=info.fence,
            holder=info.holder,
            ttl=self._mutex.ttl,
        )
