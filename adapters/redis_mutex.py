"""The per-tenant mutex of the retraining pipeline (MISSION M21, M25), in Redis.

    mutex = TenantMutex(redis)                      # a redis.asyncio.Redis built by the caller
    lease = await mutex.acquire(tenant_id, holder="retrain/<tenant>/<run>")
    if lease is None:
        ...                                         # someone else holds it: SKIPPED_LOCKED
    try:
        ...                                         # every write carries lease.fence
        if not await mutex.renew(lease):            # well before lease.ttl has passed
            ...                                     # lost it: stop writing at once
    finally:
        await mutex.release(lease)                  # False if it was no longer ours

Semantics. At most one lease per tenant exists in Redis at a time. ``acquire`` is ``SET key
value NX PX ttl``: it succeeds only when nobody holds the tenant's lock, and the lock expires
by itself after ``ttl`` (one hour by default) unless its holder renews it, so a holder that died
without releasing blocks the tenant for one TTL at most. Each lease carries a random token
(``secrets.token_hex``); ``renew`` and ``release`` act only when the lock still holds that
token (compare-and-PEXPIRE, compare-and-DEL, each one Lua script), so a holder whose lease
expired and was taken by someone else can never extend or delete the new holder's lock. A lost
lease is lost for good, even if nobody has taken the lock since: the holder must acquire again
and gets a new fence.

Why a fencing token. Expiry is what makes a crashed holder harmless, and also what makes a live
one dangerous: a holder can be paused (a long GC or event-loop stall, a suspended VM, a network
partition) for longer than its TTL. Meanwhile the lock expires, a second holder acquires it and
starts writing; then the first wakes up still believing it holds the lock, and nothing it can
check locally tells it otherwise, since any check can be followed by another pause before the
write lands. Every successful ``acquire`` therefore also returns a fence: the value of a
per-tenant counter incremented by that acquisition, so fences strictly increase across holders.
Whoever stores the work (the database, for training runs) remembers the highest fence it has
seen for the tenant and refuses a write carrying a lower one: the stale holder's writes are
rejected however long it slept. ``current_fence`` reports the latest fence issued.

Keys. For tenant T the lock is ``{prefix}{T}`` and the counter ``{prefix}{T}:fence``, with the
braces written literally: they are a Redis Cluster hash tag, so both keys of a tenant live in
one slot and the acquire script, which touches both, runs on a cluster as well as on a single
server. The lock's value is JSON ``{"token", "holder", "fence"}`` (the fence as a decimal
string, exact at any size) so that ``inspect`` can say who holds a tenant. The counter has no
TTL and must never be lost: run Redis with ``maxmemory-policy noeviction`` and AOF (as the
DESIGN asks). Were it reset, fences would restart at 1 and a store that checks them would
refuse writes (safe, but stuck) until the counter is set above the highest fence it has seen.

Everything Redis raises (refused connections, timeouts, script errors) leaves this module as a
``MutexUnavailableError``. Cancellation is not caught.

Retries. An ``acquire`` by the holder that already holds the lock returns that lease (same
token, same fence, expiry reset): a caller whose first acquire succeeded in Redis but whose
answer was lost (a worker killed in between) does not lock itself out. Holder names must
therefore be unique per would-be holder (the pipeline uses ``{workflow id}/{run id}``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

#: How many random bytes a lease token has (``secrets.token_hex`` doubles it in characters).
TOKEN_BYTES = 16
_ONE_MILLISECOND = timedelta(milliseconds=1)

# Shared by the compare-and-act scripts: is the lock at KEYS[1] held by the token ARGV[1]?
# A value this module did not write (not our JSON) belongs to nobody we know, so is not ours.
_HELD_BY_LUA = """
local function held_by(key, token)
    local value = redis.call('GET', key)
    if not value then
        return false
    end
    local decoded, lock = pcall(cjson.decode, value)
    return decoded and type(lock) == 'table' and lock.token == token
end
"""

# KEYS: lock, fence counter. ARGV: token, holder, ttl in ms, fence floor. Returns {fence,
# token}: a new fence (above the counter and the floor) with the new token, or, when the lock
# is already held by this very holder (a retried acquire whose first answer was lost), that
# lease again, its expiry reset; nil when someone else holds it.
# Checks first and writes last, so no error can leave one write done without the other: the
# fence is incremented only by the acquisition that sets the lock, and never by a refused one.
_ACQUIRE_LUA = """
local value = redis.call('GET', KEYS[1])
if value then
    local decoded, lock = pcall(cjson.decode, value)
    if decoded and type(lock) == 'table' and lock.holder == ARGV[2]
       and type(lock.token) == 'string' and type(lock.fence) == 'string' then
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        return {lock.fence, lock.token}
    end
    return false
end
local floor = tonumber(ARGV[4])
if tonumber(redis.call('GET', KEYS[2]) or '0') < floor then
    redis.call('SET', KEYS[2], ARGV[4])
end
local fence = redis.call('INCR', KEYS[2])
local lock = cjson.encode({token = ARGV[1], holder = ARGV[2], fence = string.format('%d', fence)})
redis.call('SET', KEYS[1], lock, 'NX', 'PX', ARGV[3])
return {string.format('%d', fence), ARGV[1]}
"""

# KEYS: lock. ARGV: holder, fence. Deletes the lock if it is still that holder's lease with
# that fence (a holder known to be gone); returns 1 if it did, else 0.
_BREAK_LUA = """
local value = redis.call('GET', KEYS[1])
if not value then
    return 0
end
local decoded, lock = pcall(cjson.decode, value)
if decoded and type(lock) == 'table' and lock.holder == ARGV[1] and lock.fence == ARGV[2] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: lock. ARGV: token, ttl in ms. Returns 1 if renewed, 0 if the lock is not ours.
_RENEW_LUA = (
    _HELD_BY_LUA
    + """
if held_by(KEYS[1], ARGV[1]) then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
)

# KEYS: lock. ARGV: token. Returns 1 if released, 0 if the lock is not ours.
_RELEASE_LUA = (
    _HELD_BY_LUA
    + """
if held_by(KEYS[1], ARGV[1]) then
    return redis.call('DEL', KEYS[1])
end
return 0
"""
)

# KEYS: lock. Returns {value, remaining ms}, read together, or nil if nobody holds the lock.
_INSPECT_LUA = """
local value = redis.call('GET', KEYS[1])
if not value then
    return false
end
return {value, redis.call('PTTL', KEYS[1])}
"""


class MutexUnavailableError(Exception):
    """Redis could not be asked, or did not answer as this mutex expects. Whether the lock is
    held is unknown: treat it as not acquired (and, for a holder, as possibly lost)."""


@dataclass(frozen=True)
class Lease:
    """One successful acquisition. ``fence`` goes with every write made under the lease."""

    tenant_id: UUID
    token: str = field(repr=False)  # whoever has it can release the lock: keep it out of logs
    fence: int
    holder: str
    ttl: timedelta


@dataclass(frozen=True)
class LockState:
    """Who holds a tenant's lock, under which fence, and for how much longer unless renewed."""

    tenant_id: UUID
    holder: str
    fence: int
    remaining_ttl: timedelta


class TenantMutex:
    """A per-tenant lock with fencing tokens over a caller-owned ``redis.asyncio.Redis``.

    Building one does no I/O (the scripts are loaded on first use). The client may decode
    responses or not; the mutex reads both. It never closes the client.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        key_prefix: str = "rai:lock:",
        ttl: timedelta = timedelta(hours=1),
    ) -> None:
        if ttl < _ONE_MILLISECOND:
            raise ValueError(f"the lock TTL must be at least 1 ms, not {ttl}")
        self._key_prefix = key_prefix
        self._ttl = ttl
        self._acquire = redis.register_script(_ACQUIRE_LUA)
        self._renew = redis.register_script(_RENEW_LUA)
        self._release = redis.register_script(_RELEASE_LUA)
        self._inspect = redis.register_script(_INSPECT_LUA)
        self._break = redis.register_script(_BREAK_LUA)
        self._redis = redis

    @property
    def ttl(self) -> timedelta:
        return self._ttl

    async def acquire(self, tenant_id: UUID, holder: str, *, fence_floor: int = 0) -> Lease | None:
        """Take the tenant's lock for ``ttl``, or return None if someone else holds it.

        The new fence is above ``fence_floor`` too: callers pass the newest fence their store
        has seen, so a counter lost with a Redis that keeps nothing on disk cannot hand out a
        token the store would refuse as stale."""
        if not holder:
            raise ValueError("a lock holder needs a name")
        if fence_floor < 0:
            raise ValueError("fence_floor must not be negative")
        token = secrets.token_hex(TOKEN_BYTES)
        answer = await self._run(
            self._acquire,
            "acquire the lock",
            tenant_id,
            keys=[self._lock_key(tenant_id), self._fence_key(tenant_id)],
            args=[token, holder, _milliseconds(self._ttl), fence_floor],
        )
        if answer is None:
            return None
        if not (isinstance(answer, list) and len(answer) == 2):
            raise MutexUnavailableError(f"unexpected answer to acquire: {answer!r}")
        fence, granted = answer
        return Lease(
            tenant_id=tenant_id,
            token=granted.decode() if isinstance(granted, bytes) else str(granted),
            fence=_integer(fence, "the acquire script's fence"),
            holder=holder,
            ttl=self._ttl,
        )

    async def renew(self, lease: Lease) -> bool:
        """Reset the lock's expiry to ``lease.ttl`` from now, if the lock is still this lease's.

        False means the lease is lost (it expired, and maybe someone else holds the lock now):
        the holder must stop writing."""
        renewed = await self._run(
            self._renew,
            "renew the lock",
            lease.tenant_id,
            keys=[self._lock_key(lease.tenant_id)],
            args=[lease.token, _milliseconds(lease.ttl)],
        )
        return _integer(renewed, "the renew script's answer") == 1

    async def release(self, lease: Lease) -> bool:
        """Delete the lock if it is still this lease's. False if it was not (any more): another
        holder's lock is never touched."""
        released = await self._run(
            self._release,
            "release the lock",
            lease.tenant_id,
            keys=[self._lock_key(lease.tenant_id)],
            args=[lease.token],
        )
        return _integer(released, "the release script's answer") == 1

    async def inspect(self, tenant_id: UUID) -> LockState | None:
        """Who holds the tenant's lock now, or None if nobody does."""
        answer = await self._run(
            self._inspect,
            "inspect the lock",
            tenant_id,
            keys=[self._lock_key(tenant_id)],
            args=[],
        )
        if answer is None:
            return None
        if not (isinstance(answer, list) and len(answer) == 2):
            raise MutexUnavailableError(f"unexpected answer to inspect: {answer!r}")
        value, remaining_ms = answer
        try:
            lock = json.loads(value)
            holder, fence = lock["holder"], int(lock["fence"])
        except (ValueError, TypeError, KeyError) as exc:
            raise MutexUnavailableError(
                f"the lock key {self._lock_key(tenant_id)!r} holds a value this mutex did not "
                f"write: {value!r}"
            ) from exc
        if not isinstance(holder, str):
            raise MutexUnavailableError(f"the lock's holder is not a name: {holder!r}")
        remaining = _integer(remaining_ms, "the lock's PTTL")
        return LockState(
            tenant_id=tenant_id,
            holder=holder,
            fence=fence,
            # PTTL -1 (no expiry) cannot come from this module; show it as nothing left.
            remaining_ttl=max(remaining, 0) * _ONE_MILLISECOND,
        )

    async def break_lease(self, tenant_id: UUID, holder: str, fence: int) -> bool:
        """Delete the tenant's lock if it is still ``holder``'s lease under ``fence``: for a
        holder known to be gone (its workflow execution closed), so the tenant is not blocked
        until the TTL. True if it was broken; another or a newer lease is never touched."""
        broken = await self._run(
            self._break,
            "break the lock",
            tenant_id,
            keys=[self._lock_key(tenant_id)],
            args=[holder, str(fence)],
        )
        return _integer(broken, "the break script's answer") == 1

    async def current_fence(self, tenant_id: UUID) -> int:
        """The latest fence issued for the tenant (0 before its first acquisition). A holder
        whose lease fence is lower is stale and must not write."""
        try:
            value = await self._redis.get(self._fence_key(tenant_id))
        except (RedisError, OSError) as exc:
            raise _unavailable("read the fence", tenant_id, exc) from exc
        if value is None:
            return 0
        return _integer(value, f"the fence counter {self._fence_key(tenant_id)!r}")

    def _lock_key(self, tenant_id: UUID) -> str:
        return f"{self._key_prefix}{{{tenant_id}}}"

    def _fence_key(self, tenant_id: UUID) -> str:
        return f"{self._lock_key(tenant_id)}:fence"

    async def _run(
        self,
        script: AsyncScript,
        action: str,
        tenant_id: UUID,
        *,
        keys: list[str],
        args: list[str | int],
    ) -> object:
        try:
            answer: object = await script(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            raise _unavailable(action, tenant_id, exc) from exc
        return answer


def _unavailable(action: str, tenant_id: UUID, exc: Exception) -> MutexUnavailableError:
    return MutexUnavailableError(
        f"could not {action} of tenant {tenant_id}: Redis failed "
        f"({type(exc).__name__}: {str(exc) or 'no detail'})"
    )


def _milliseconds(ttl: timedelta) -> int:
    return ttl // _ONE_MILLISECOND


def _integer(value: object, what: str) -> int:
    """An integer from Redis: an integer reply, or a decimal string (bytes unless decoded)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, bytes | str):
        try:
            return int(value)
        except ValueError:
            pass
    raise MutexUnavailableError(f"{what} is not an integer: {value!r}")
