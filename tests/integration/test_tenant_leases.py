"""The pipeline's tenant lease (services.leases.TenantLeases) on a real Redis and Postgres:
the hold time is observed by whichever worker releases the lease, since the grant time travels
in the lease (LeaseInfo, a workflow payload), and a lease of an older history, without one, is
still released."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.metrics import Metrics
from adapters.redis_mutex import TenantMutex
from domain.pipeline import LeaseInfo
from services.leases import TenantLeases
from services.pipeline import PipelineService
from settings import Settings
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration

HOLD = "rai_lease_hold_duration_seconds"


@pytest.fixture
async def mutex() -> AsyncIterator[TenantMutex]:
    prefix = f"rai-test:{uuid4()}:"
    url = Settings().redis_url
    client = Redis.from_url(url)
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            pytest.fail(f"these tests need the Redis at {url} (RAI_REDIS_URL): {exc}")
        yield TenantMutex(client, key_prefix=prefix)
    finally:
        try:
            stale = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if stale:
                await client.delete(*stale)
        finally:
            await client.aclose()


async def test_the_worker_that_releases_observes_the_hold_time(
    services_env: ServicesEnv, mutex: TenantMutex
) -> None:
    tenant = await services_env.tenant()
    pipeline = PipelineService(services_env.db, services_env.store, datasets_bucket="unused")
    taker_metrics, releaser_metrics = Metrics(), Metrics()
    taker = TenantLeases(mutex, pipeline, metrics=taker_metrics)
    releaser = TenantLeases(mutex, pipeline, metrics=releaser_metrics)  # another worker

    lease = await taker.acquire(tenant, "retrain/x/run-1")
    assert lease is not None
    assert lease.granted_at_ms is not None
    # As the workflow carries it: through its history, to whichever worker runs the release.
    carried = LeaseInfo.model_validate_json(lease.model_dump_json())
    await asyncio.sleep(0.2)
    await releaser.release(carried)

    labels = {"tenant": str(tenant)}
    assert releaser_metrics.registry.get_sample_value(f"{HOLD}_count", labels) == 1
    held = releaser_metrics.registry.get_sample_value(f"{HOLD}_sum", labels)
    assert held is not None
    assert held >= 0.1  # slept 0.2 s in between (a margin for clock rounding)
    assert taker_metrics.registry.get_sample_value(f"{HOLD}_count", labels) is None
    assert await mutex.inspect(tenant) is None  # released for real


async def test_a_lease_of_an_older_history_is_released_without_a_hold_time(
    services_env: ServicesEnv, mutex: TenantMutex
) -> None:
    tenant = await services_env.tenant()
    pipeline = PipelineService(services_env.db, services_env.store, datasets_bucket="unused")
    metrics = Metrics()
    leases = TenantLeases(mutex, pipeline, metrics=metrics)
    lease = await leases.acquire(tenant, "retrain/x/run-1")
    assert lease is not None
    # What a history recorded before granted_at_ms existed holds.
    old = LeaseInfo.model_validate(lease.model_dump(exclude={"granted_at_ms"}))
    assert old.granted_at_ms is None
    await leases.release(old)
    assert await mutex.inspect(tenant) is None
    labels = {"tenant": str(tenant)}
    assert metrics.registry.get_sample_value(f"{HOLD}_count", labels) is None
