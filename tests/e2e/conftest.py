"""End-to-end fixtures: the run's Redis lease keys are cleaned up at the end (the Temporal dev
server is the run's one, from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from settings import Settings
from tests.e2e.support import REDIS_KEY_PREFIX


@pytest.fixture(scope="session", autouse=True)
async def forget_test_leases() -> AsyncIterator[None]:
    """Delete the lease and fencing keys the run's pipelines left in Redis."""
    yield
    client: Redis = Redis.from_url(Settings().redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{REDIS_KEY_PREFIX}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
