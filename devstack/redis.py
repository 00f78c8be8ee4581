"""Redis: the configured server if it answers PING, otherwise a private ``redis-server``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from redis.asyncio import Redis
from redis.exceptions import RedisError

from devstack.binaries import find_binary
from devstack.net import LOCALHOST
from devstack.process import ProcessRecord, spawn_detached
from devstack.server import DetachedServer

REDIS_HINT = "apt-get install redis-server"
PROBE_TIMEOUT_SECONDS = 2.0


async def redis_problem(url: str) -> str | None:
    """None if the Redis at ``url`` answers PING, else why not."""
    client = Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS
    )
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


def redis_database(url: str) -> int:
    """The database number a redis URL selects (0 when it names none)."""
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def redis_server_argv(redis_server: Path, *, data_dir: Path, port: int) -> list[str]:
    """A loopback-only server with the append-only file on, running in the foreground (we
    detach it ourselves)."""
    return [
        str(redis_server),
        "--port",
        str(port),
        "--bind",
        LOCALHOST,
        "--appendonly",
        "yes",
        "--dir",
        str(data_dir),
        "--daemonize",
        "no",
    ]


class PrivateRedis(DetachedServer):
    """A ``redis-server`` of our own: data (RDB + AOF) in ``<root>/data``."""

    name = "redis"
    port_setting = "RAI_DEV_REDIS_PORT"

    def __init__(
        self, root: Path, *, port: int, database: int, start_timeout: float, stop_grace: float
    ) -> None:
        super().__init__(root, start_timeout=start_timeout, stop_grace=stop_grace)
        self.port = port
        self.database = database

    def configured_ports(self) -> dict[str, int]:
        return {"Redis": self.port}

    def url(self, record: ProcessRecord | None) -> str:
        return (
            f"redis://{LOCALHOST}:{record.ports['port'] if record else self.port}/{self.database}"
        )

    def _require_programs(self) -> None:
        find_binary("redis-server", REDIS_HINT)

    async def _launch(self) -> ProcessRecord:
        redis_server = find_binary("redis-server", REDIS_HINT)
        data_dir = self.root / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = redis_server_argv(redis_server, data_dir=data_dir, port=self.port)
        return await spawn_detached(
            argv, log=self.log_path, cwd=self.root, ports={"port": self.port}
        )

    async def _check(self, record: ProcessRecord) -> str | None:
        return await redis_problem(self.url(record))
