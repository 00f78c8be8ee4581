"""The tenant mutex's rules that need no Redis: building a client does no I/O."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import uuid4

import pytest
from redis.asyncio import Redis

from adapters.redis_mutex import Lease, TenantMutex

pytestmark = pytest.mark.unit


@pytest.fixture
async def unconnected_client() -> AsyncIterator[Redis]:
    client = Redis.from_url("redis://127.0.0.1:1/0")
    try:
        yield client
    finally:
        await client.aclose()


@pytest.mark.parametrize("ttl", [timedelta(0), timedelta(microseconds=999), timedelta(hours=-1)])
def test_a_ttl_under_one_millisecond_is_refused(unconnected_client: Redis, ttl: timedelta) -> None:
    with pytest.raises(ValueError, match="at least 1 ms"):
        TenantMutex(unconnected_client, ttl=ttl)


def test_the_default_ttl_is_one_hour(unconnected_client: Redis) -> None:
    assert TenantMutex(unconnected_client).ttl == timedelta(hours=1)


async def test_a_holder_needs_a_name(unconnected_client: Redis) -> None:
    with pytest.raises(ValueError, match="needs a name"):
        await TenantMutex(unconnected_client).acquire(uuid4(), "")


def test_a_lease_keeps_its_token_out_of_its_repr() -> None:
    token = "ab" * 16
    lease = Lease(uuid4(), token, 7, "worker-a", timedelta(hours=1))

    assert token not in repr(lease)
    assert "fence=7" in repr(lease)
