"""End-to-end tests: a longer time limit, and the run's Redis lease keys cleaned up at the end
(the Temporal dev server is the run's one, from tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from settings import Settings
from tests.e2e.support import REDIS_KEY_PREFIX
from tests.rai_process import FORK_SERVER

# Seconds an end-to-end test may take: some train real models several times over, on two cores
# shared with whatever else runs (pyproject.toml's 300 s is for everything else).
E2E_TIMEOUT = 600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(E2E_TIMEOUT))


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


@pytest.fixture(scope="session", autouse=True)
async def stop_the_rai_fork_server() -> AsyncIterator[None]:
    """Stop the fork server of ``rai`` commands (tests/rai_process.py) if a test started it."""
    yield
    await FORK_SERVER.close()
