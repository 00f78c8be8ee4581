"""The whole local stack: Temporal, PostgreSQL, Redis and S3, brought up and down together.

State lives in ``settings.state_dir`` (``.rai`` by default), one directory per part, each with
the ``process.json`` record of the process we started there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from devstack.errors import StackError
from devstack.parts import External, Owner, Part, PartStatus, Plan
from devstack.postgres import PrivatePostgres, postgres_problem
from devstack.redis import PrivateRedis, redis_database, redis_problem
from devstack.seaweed import S3Credentials, SeaweedS3
from devstack.temporal import TemporalDevServer
from settings import Settings

DEFAULT_START_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class StackInfo:
    """Where the running stack's parts are, as the ``RAI_*`` settings name them."""

    database_url: str
    redis_url: str
    temporal_address: str
    temporal_ui_url: str
    s3_endpoint_url: str
    s3_access_key: str
    s3_secret_key: str = field(repr=False)
    # Absolute: the keys, the local runner's jobs and its slots live there, so a `rai worker`
    # started in another directory from `rai dev env` still finds the same ones.
    state_dir: str
    # Our own redis-server runs with the append-only file (M5); a Redis found running on the
    # machine and reused is a development one we did not configure, so ``rai worker`` started
    # from ``rai dev env`` does not refuse it (the demo's in-process worker never checks).
    redis_require_aof: bool = True

    def environment(self) -> dict[str, str]:
        """The ``RAI_*`` variables that point the services at this stack."""
        return {
            "RAI_REDIS_REQUIRE_AOF": "true" if self.redis_require_aof else "false",
            "RAI_DATABASE_URL": self.database_url,
            "RAI_REDIS_URL": self.redis_url,
            "RAI_TEMPORAL_ADDRESS": self.temporal_address,
            "RAI_TEMPORAL_UI_URL": self.temporal_ui_url,
            "RAI_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "RAI_S3_ACCESS_KEY": self.s3_access_key,
            "RAI_S3_SECRET_KEY": self.s3_secret_key,
            "RAI_STATE_DIR": self.state_dir,
        }


@dataclass(frozen=True)
class StackStatus:
    parts: tuple[PartStatus, ...]

    @property
    def healthy(self) -> bool:
        return all(part.healthy for part in self.parts)

    def part(self, name: str) -> PartStatus:
        return next(part for part in self.parts if part.name == name)

    def lines(self) -> list[str]:
        return [part.line() for part in self.parts]


class StackStartError(StackError):
    """Some parts did not come up. ``status`` has a line per part; ``failures`` the error of
    each part that failed (with its log tail)."""

    def __init__(self, status: StackStatus, failures: dict[str, StackError]) -> None:
        message = "; ".join(str(error) for error in failures.values())
        super().__init__(f"{message} (`rai dev down` stops the parts that did start)")
        self.status = status
        self.failures = failures


def configured_credentials(settings: Settings) -> S3Credentials | None:
    """The S3 keys given as RAI_S3_ACCESS_KEY / RAI_S3_SECRET_KEY, if any."""
    access_key, secret_key = settings.s3_access_key, settings.s3_secret_key
    if access_key and secret_key:
        return S3Credentials(access_key, secret_key.get_secret_value())
    if access_key or secret_key:
        raise StackError(
            "set both RAI_S3_ACCESS_KEY and RAI_S3_SECRET_KEY, or neither (the stack then "
            "generates a pair)"
        )
    return None


def _raise_bugs(outcomes: Sequence[object]) -> None:
    """Re-raise anything that is not a StackError: that is a bug, not a failed part."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and not isinstance(outcome, StackError):
            raise outcome


class Stack:
    """``await Stack(settings).up()`` starts what is missing and returns where it all is."""

    def __init__(
        self, settings: Settings, *, start_timeout: float = DEFAULT_START_TIMEOUT_SECONDS
    ) -> None:
        state = settings.state_dir.absolute()
        self.state_dir = state
        grace = settings.dev_stop_grace_seconds
        self.temporal = TemporalDevServer(
            state / "temporal",
            port=settings.dev_temporal_port,
            ui_port=settings.dev_temporal_ui_port,
            start_timeout=start_timeout,
            stop_grace=grace,
        )
        self.postgres = PrivatePostgres.for_settings(settings, start_timeout=start_timeout)
        self.redis = PrivateRedis(
            state / "redis",
            port=settings.dev_redis_port,
            database=redis_database(settings.redis_url),
            start_timeout=start_timeout,
            stop_grace=grace,
        )
        self.s3 = SeaweedS3(
            state / "s3",
            http_ports={
                "s3": settings.dev_s3_port,
                "master": settings.dev_weed_master_port,
                "volume": settings.dev_weed_volume_port,
                "filer": settings.dev_weed_filer_port,
            },
            credentials=configured_credentials(settings),
            region=settings.s3_region,
            start_timeout=start_timeout,
            stop_grace=grace,
        )
        self.parts = (
            Part(self.temporal),
            Part(self.postgres, External(settings.database_url, postgres_problem)),
            Part(self.redis, External(settings.redis_url, redis_problem)),
            Part(self.s3),
        )

    async def start(self) -> StackStatus:
        """Bring every part up (in parallel) and wait until all are healthy.

        Nothing is started unless every part can be: a missing program or a taken port is
        reported first. Raises StackStartError if a part fails to come up.
        """
        planned = await asyncio.gather(
            *(part.plan() for part in self.parts), return_exceptions=True
        )
        _raise_bugs(planned)
        refusals = [outcome for outcome in planned if isinstance(outcome, StackError)]
        if refusals:
            raise refusals[0]
        plans = [plan for plan in planned if isinstance(plan, Plan)]

        outcomes = await asyncio.gather(
            *(part.up(plan) for part, plan in zip(self.parts, plans, strict=True)),
            return_exceptions=True,
        )
        _raise_bugs(outcomes)
        failures = {
            part.name: outcome
            for part, outcome in zip(self.parts, outcomes, strict=True)
            if isinstance(outcome, StackError)
        }
        if failures:
            now = await self.status()
            raise StackStartError(now, failures)
        return StackStatus(
            tuple(outcome for outcome in outcomes if isinstance(outcome, PartStatus))
        )

    async def up(self) -> StackInfo:
        """Start what is not running; where everything is."""
        return self._info(await self.start())

    async def status(self) -> StackStatus:
        return StackStatus(tuple(await asyncio.gather(*(part.status() for part in self.parts))))

    async def info(self) -> StackInfo:
        """Where the running stack is; StackError if a part is not healthy."""
        status = await self.status()
        if not status.healthy:
            down = ", ".join(part.name for part in status.parts if not part.healthy)
            raise StackError(f"the local stack is not running ({down} not healthy): `rai dev up`")
        return self._info(status)

    async def down(self) -> StackStatus:
        """Stop every process ``up`` started; external servers are left alone."""
        outcomes = await asyncio.gather(
            *(part.down() for part in self.parts), return_exceptions=True
        )
        _raise_bugs(outcomes)
        for outcome in outcomes:
            if isinstance(outcome, StackError):
                raise outcome
        return StackStatus(
            tuple(outcome for outcome in outcomes if isinstance(outcome, PartStatus))
        )

    def _info(self, status: StackStatus) -> StackInfo:
        credentials = self.s3.credentials()
        return StackInfo(
            database_url=status.part("postgres").url,
            redis_url=status.part("redis").url,
            temporal_address=status.part("temporal").url,
            temporal_ui_url=self.temporal.ui_url(self.temporal.live()),
            s3_endpoint_url=status.part("s3").url,
            s3_access_key=credentials.access_key,
            s3_secret_key=credentials.secret_key,
            state_dir=str(self.state_dir),
            redis_require_aof=status.part("redis").owner is Owner.OURS,
        )
