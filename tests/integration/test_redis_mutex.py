"""The tenant mutex against a real Redis (``Settings().redis_url``).

Each test uses key names of its own (a random prefix) and deletes them at the end. An
unreachable Redis fails the test: it is never skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.redis_mutex import Lease, MutexUnavailableError, TenantMutex
from settings import Settings

pytestmark = pytest.mark.integration

SHORT_TTL = timedelta(milliseconds=300)
RENEWAL_TTL = timedelta(milliseconds=750)
RENEW_EVERY = 0.05  # seconds


@pytest.fixture
def key_prefix() -> str:
    return f"rai-test:{uuid4()}:"


@pytest.fixture
async def redis_client(key_prefix: str) -> AsyncIterator[Redis]:
    url = Settings().redis_url
    client = Redis.from_url(url)
    try:
        try:
            await client.ping()
        except (RedisError, OSError) as exc:
            pytest.fail(f"these tests need the Redis at {url} (RAI_REDIS_URL): {exc}")
        yield client
    finally:
        try:
            stale = [key async for key in client.scan_iter(match=f"{key_prefix}*")]
            if stale:
                await client.delete(*stale)
        finally:
            await client.aclose()


@pytest.fixture
def mutex(redis_client: Redis, key_prefix: str) -> TenantMutex:
    return TenantMutex(redis_client, key_prefix=key_prefix)


async def _wait_until_expired(mutex: TenantMutex, tenant: UUID) -> None:
    """Poll until Redis has expired the tenant's lock (Redis decides when, not our clock)."""
    for _ in range(200):
        if await mutex.inspect(tenant) is None:
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"the lock of {tenant} never expired")


async def _acquired(mutex: TenantMutex, tenant: UUID, holder: str) -> Lease:
    lease = await mutex.acquire(tenant, holder)
    assert lease is not None, f"{holder} could not acquire the free lock of {tenant}"
    return lease


async def test_acquire_then_release_frees_the_lock(mutex: TenantMutex) -> None:
    tenant = uuid4()

    lease = await _acquired(mutex, tenant, "worker-a")

    assert (lease.tenant_id, lease.holder, lease.fence, lease.ttl) == (
        tenant,
        "worker-a",
        1,
        timedelta(hours=1),
    )
    state = await mutex.inspect(tenant)
    assert state is not None
    assert (state.holder, state.fence) == ("worker-a", 1)
    assert timedelta(0) < state.remaining_ttl <= timedelta(hours=1)

    assert await mutex.release(lease) is True
    assert await mutex.inspect(tenant) is None
    assert await mutex.release(lease) is False, "a second release found something to delete"
    again = await _acquired(mutex, tenant, "worker-b")
    assert again.fence == 2


async def test_a_held_lock_refuses_a_second_acquire(mutex: TenantMutex) -> None:
    tenant = uuid4()
    first = await _acquired(mutex, tenant, "worker-a")

    assert await mutex.acquire(tenant, "worker-b") is None

    state = await mutex.inspect(tenant)
    assert state is not None
    assert (state.holder, state.fence) == ("worker-a", first.fence)
    assert await mutex.current_fence(tenant) == first.fence, "a refused acquire took a fence"


async def test_a_stale_lease_cannot_release_or_renew_the_new_holders_lock(
    redis_client: Redis, key_prefix: str
) -> None:
    mutex = TenantMutex(redis_client, key_prefix=key_prefix, ttl=SHORT_TTL)
    tenant = uuid4()
    stale = await _acquired(mutex, tenant, "paused-worker")
    await _wait_until_expired(mutex, tenant)
    fresh = await _acquired(mutex, tenant, "new-worker")

    assert await mutex.release(stale) is False
    assert await mutex.renew(stale) is False

    state = await mutex.inspect(tenant)
    assert state is not None
    assert (state.holder, state.fence) == ("new-worker", fresh.fence)
    assert stale.fence < fresh.fence == await mutex.current_fence(tenant)
    assert await mutex.release(fresh) is True


async def test_a_lease_lost_to_expiry_stays_lost(redis_client: Redis, key_prefix: str) -> None:
    mutex = TenantMutex(redis_client, key_prefix=key_prefix, ttl=SHORT_TTL)
    tenant = uuid4()
    lease = await _acquired(mutex, tenant, "paused-worker")
    await _wait_until_expired(mutex, tenant)

    assert await mutex.renew(lease) is False, "renew revived an expired lease"
    assert await mutex.inspect(tenant) is None


@pytest.mark.parametrize("stall", [0.0, 0.2], ids=["steady-loop", "loop-stalls-200ms"])
async def test_renew_keeps_the_lock_past_its_original_ttl(
    redis_client: Redis, key_prefix: str, stall: float
) -> None:
    """Renewals keep the lock for twice its TTL, also when the event loop stalls between them
    (a busy worker). Only the gap between two renewals matters: Redis expires the lock, as it
    must, if a gap exceeds the TTL; renewing every 50 ms against a 750 ms TTL leaves room for
    stalls of several hundred milliseconds on a loaded machine."""
    mutex = TenantMutex(redis_client, key_prefix=key_prefix, ttl=RENEWAL_TTL)
    tenant = uuid4()
    loop = asyncio.get_running_loop()
    ttl = RENEWAL_TTL.total_seconds()
    lease = await _acquired(mutex, tenant, "worker-a")
    # Redis set the expiry before acquire returned: from here on, 2 x TTL without renewals
    # would certainly have expired the lock.
    taken = previous = loop.time()
    renewals = 0
    while loop.time() - taken < 2 * ttl:
        await asyncio.sleep(RENEW_EVERY)
        if stall:  # the loop blocks (as CPU-bound work would block it) just as renewal is due
            loop.call_soon(time.sleep, stall)
            await asyncio.sleep(0)
        gap = loop.time() - previous
        renewed = await mutex.renew(lease)
        previous = loop.time()
        renewals += 1
        assert renewed, (
            f"renewal {renewals} found the lock gone {gap * 1000:.0f} ms after the previous "
            f"renewal (TTL {ttl * 1000:.0f} ms)"
        )
        state = await mutex.inspect(tenant)
        assert state is not None, f"the lock vanished right after renewal {renewals}"
        assert (state.holder, state.fence) == ("worker-a", lease.fence)

    assert loop.time() - taken >= 2 * ttl
    assert await mutex.acquire(tenant, "worker-b") is None, "the renewed lock was free"
    assert await mutex.release(lease) is True


async def test_fences_strictly_increase_across_acquisitions(mutex: TenantMutex) -> None:
    tenant = uuid4()
    assert await mutex.current_fence(tenant) == 0

    fences = []
    for n in range(5):
        lease = await _acquired(mutex, tenant, f"worker-{n}")
        fences.append(lease.fence)
        assert await mutex.current_fence(tenant) == lease.fence
        assert await mutex.release(lease) is True

    assert fences == [1, 2, 3, 4, 5]
    assert await mutex.current_fence(tenant) == 5, "releasing moved the fence"


async def test_a_lost_counter_resumes_above_the_floor(
    mutex: TenantMutex, redis_client: Redis, key_prefix: str
) -> None:
    """A Redis that lost its counter (no persistence, restart) must not hand out a fence the
    database has already seen: the caller's floor lifts the counter first."""
    tenant = uuid4()
    first = await mutex.acquire(tenant, "worker", fence_floor=41)
    assert first is not None
    assert first.fence == 42
    assert await mutex.release(first)
    lower = await mutex.acquire(tenant, "worker", fence_floor=3)  # a floor never lowers it
    assert lower is not None
    assert lower.fence == 43
    assert await mutex.release(lower)
    with pytest.raises(ValueError, match="negative"):
        await mutex.acquire(tenant, "worker", fence_floor=-1)


async def test_fifty_concurrent_acquires_yield_exactly_one_lease(key_prefix: str) -> None:
    """T-D1-05's Redis path: 50 acquisitions at once, from five clients with pools of their
    own (as five workers would), for one tenant."""
    url = Settings().redis_url
    clients = [Redis.from_url(url) for _ in range(5)]
    try:
        mutexes = [TenantMutex(client, key_prefix=key_prefix) for client in clients]
        tenant = uuid4()

        results = await asyncio.gather(
            *(mutexes[n % len(mutexes)].acquire(tenant, f"starter-{n}") for n in range(50))
        )

        leases = [lease for lease in results if lease is not None]
        assert len(leases) == 1, f"{len(leases)} of 50 concurrent acquires succeeded"
        (winner,) = leases
        assert winner.fence == 1
        assert await mutexes[0].current_fence(tenant) == 1, "a refused acquire took a fence"
        state = await mutexes[0].inspect(tenant)
        assert state is not None
        assert state.holder == winner.holder
    finally:
        stale = [key async for key in clients[0].scan_iter(match=f"{key_prefix}*")]
        if stale:
            await clients[0].delete(*stale)
        for client in clients:
            await client.aclose()


async def test_tenants_do_not_block_each_other(mutex: TenantMutex) -> None:
    first_tenant, second_tenant = uuid4(), uuid4()

    first = await _acquired(mutex, first_tenant, "worker-a")
    second = await _acquired(mutex, second_tenant, "worker-b")

    assert first.fence == second.fence == 1, "tenants share a fence counter"
    assert await mutex.release(first) is True
    state = await mutex.inspect(second_tenant)
    assert state is not None
    assert state.holder == "worker-b"
    assert await mutex.release(second) is True


async def test_a_decoding_client_works_the_same(key_prefix: str) -> None:
    client = Redis.from_url(Settings().redis_url, decode_responses=True)
    try:
        mutex = TenantMutex(client, key_prefix=key_prefix)
        tenant = uuid4()
        lease = await _acquired(mutex, tenant, "wörker-ü")  # a non-ASCII name survives JSON

        state = await mutex.inspect(tenant)
        assert state is not None
        assert (state.holder, state.fence) == ("wörker-ü", 1)
        assert await mutex.current_fence(tenant) == 1
        assert await mutex.renew(lease) is True
        assert await mutex.release(lease) is True
    finally:
        stale = [key async for key in client.scan_iter(match=f"{key_prefix}*")]
        if stale:
            await client.delete(*stale)
        await client.aclose()


async def test_a_foreign_value_in_the_lock_key_is_never_taken_for_ours(
    redis_client: Redis, key_prefix: str
) -> None:
    mutex = TenantMutex(redis_client, key_prefix=key_prefix)
    tenant = uuid4()
    lease = await _acquired(mutex, tenant, "worker-a")
    lock_key = f"{key_prefix}{{{tenant}}}"
    await redis_client.set(lock_key, "not json", keepttl=True)

    assert await mutex.renew(lease) is False
    assert await mutex.release(lease) is False
    assert await redis_client.get(lock_key) == b"not json"
    with pytest.raises(MutexUnavailableError, match="did not write"):
        await mutex.inspect(tenant)


async def test_an_unreachable_redis_raises_mutex_unavailable() -> None:
    client = Redis.from_url("redis://127.0.0.1:1/0")
    try:
        mutex = TenantMutex(client)
        tenant = uuid4()
        lease = Lease(tenant, "0" * 32, 1, "worker-a", timedelta(hours=1))

        with pytest.raises(MutexUnavailableError, match="could not acquire the lock") as caught:
            await mutex.acquire(tenant, "worker-a")
        assert str(tenant) in str(caught.value)
        assert "127.0.0.1:1" in str(caught.value)
        with pytest.raises(MutexUnavailableError, match="could not renew"):
            await mutex.renew(lease)
        with pytest.raises(MutexUnavailableError, match="could not release"):
            await mutex.release(lease)
        with pytest.raises(MutexUnavailableError, match="could not inspect"):
            await mutex.inspect(tenant)
        with pytest.raises(MutexUnavailableError, match="could not read the fence"):
            await mutex.current_fence(tenant)
    finally:
        await client.aclose()


async def test_a_retried_acquire_by_the_same_holder_gets_its_own_lease_back(
    mutex: TenantMutex,
) -> None:
    """The first answer was lost (the worker died after Redis granted the lease): the retry
    of the same holder gets the same lease, not a lock-out; anyone else is still refused."""
    tenant = uuid4()
    granted = await _acquired(mutex, tenant, "retrain/t/run-1")
    retried = await _acquired(mutex, tenant, "retrain/t/run-1")
    assert (retried.token, retried.fence) == (granted.token, granted.fence)
    assert await mutex.current_fence(tenant) == granted.fence, "the retry took a new fence"
    assert await mutex.acquire(tenant, "retrain/t/run-2") is None
    assert await mutex.renew(retried) is True
    assert await mutex.release(granted) is True
    assert await mutex.inspect(tenant) is None


async def test_break_lease_removes_only_that_holders_lease(mutex: TenantMutex) -> None:
    tenant = uuid4()
    lease = await _acquired(mutex, tenant, "gone")
    assert await mutex.break_lease(tenant, "other", lease.fence) is False
    assert await mutex.break_lease(tenant, "gone", lease.fence + 1) is False
    assert await mutex.inspect(tenant) is not None
    assert await mutex.break_lease(tenant, "gone", lease.fence) is True
    assert await mutex.inspect(tenant) is None
    assert await mutex.break_lease(tenant, "gone", lease.fence) is False
    assert (await _acquired(mutex, tenant, "next")).fence == lease.fence + 1
