"""Composition root of the HTTP API (``rai api``).

Builds the database pool, the Temporal client and the services once, serves the app with
uvicorn on a socket bound here (so a busy port fails with a clear ``OSError`` before anything
is served, and port 0 picks a free one), and stops gracefully on SIGTERM/SIGINT: no new
connections, requests in flight get ``ApiConfig.graceful_seconds``, then the pool closes.
The process owns its signals (uvicorn's own handlers are switched off: they would re-raise the
signal after shutting down, skipping the cleanup).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import asyncpg
import uvicorn
from fastapi import FastAPI
from temporalio.client import Client

from adapters.metrics import DatabaseState, Metrics
from adapters.objectstore import ObjectStore, ObjectStoreConfigError
from api.app import ApiDependencies, create_app
from db.repository import Database, UnsafeDatabaseRoleError
from services.callbacks import CallbackHandler
from services.drift_reports import DriftReportReader
from services.events import LearningEventService
from services.trust import TrustConfigError, trusted_platform_keys
from settings import Settings, redacted_dsn
from starter import TemporalSignaller, TemporalUnavailable, connect_temporal

log = logging.getLogger(__name__)

TRAINING_CALLBACK_PATH = "/v1/callbacks/training"


class ApiStartupError(Exception):
    """The API cannot start: the database, Temporal or the listening socket is unavailable."""


class ApiDependencyUnavailable(ApiStartupError):
    """The database or Temporal cannot be reached."""


@dataclass(frozen=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8088
    graceful_seconds: int = 10


def training_callback_url(base_url: str) -> str:
    """What the worker gives training jobs as ``--callback-url`` for an API at ``base_url``."""
    return base_url.rstrip("/") + TRAINING_CALLBACK_PATH


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The composition root owns the process's signals (see the module docstring).
        yield


@asynccontextmanager
async def api_dependencies(
    settings: Settings, *, client: Client | None = None
) -> AsyncIterator[ApiDependencies]:
    """The app's dependencies, built once; the pool is closed on exit."""
    async with AsyncExitStack() as stack:
        dsn = settings.resolved_app_database_url()
        try:
            db = await Database.connect(dsn)
        except UnsafeDatabaseRoleError as exc:
            raise ApiStartupError(str(exc)) from exc
        except (OSError, asyncpg.PostgresError) as exc:
            raise ApiDependencyUnavailable(f"cannot connect to {redacted_dsn(dsn)}: {exc}") from exc
        stack.push_async_callback(db.close)
        if client is None:
            try:
                client = await connect_temporal(settings)
            except TemporalUnavailable as exc:
                raise ApiDependencyUnavailable(str(exc)) from exc
        metrics = Metrics()
        # Drift report pages need S3 and a pinned platform key; the rest of the API does not.
        reports: DriftReportReader | None = None
        try:
            trusted = trusted_platform_keys(settings)
            store = await stack.enter_async_context(ObjectStore.from_settings(settings))
            reports = DriftReportReader(db, store, trusted)
        except (TrustConfigError, ObjectStoreConfigError) as exc:
            log.warning("drift report pages are off: %s", exc)
        yield ApiDependencies(
            db=db,
            callbacks=CallbackHandler(db, TemporalSignaller(client)),
            events=LearningEventService(db, metrics=metrics),
            metrics=metrics,
            state=DatabaseState(settings.resolved_metrics_database_url()),
            drift_reports=reports,
        )


async def _bind(host: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        return socket.create_server(address, family=family, backlog=2048)
    except OSError as exc:
        raise ApiStartupError(f"cannot listen on {host}:{port}: {exc}") from exc


@asynccontextmanager
async def serving(app: FastAPI, config: ApiConfig) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields the base URL (``http://host:port``)."""
    sock = await _bind(config.host, config.port)
    try:
        host, port = sock.getsockname()[:2]
        server = _Server(
            uvicorn.Config(
                app,
                lifespan="off",
                log_config=None,
                server_header=False,
                timeout_graceful_shutdown=config.graceful_seconds,
            )
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    await task  # raises what stopped it
                    raise RuntimeError("the HTTP server stopped while starting")
                await asyncio.sleep(0.01)
            shown = f"[{host}]" if ":" in host else host
            yield f"http://{shown}:{port}"
        finally:
            server.should_exit = True
            await task
    finally:
        sock.close()


@asynccontextmanager
async def running_api(
    settings: Settings, config: ApiConfig, *, client: Client | None = None
) -> AsyncIterator[str]:
    """The API, serving with every dependency it needs; yields its base URL."""
    async with AsyncExitStack() as stack:
        deps = await stack.enter_async_context(api_dependencies(settings, client=client))
        yield await stack.enter_async_context(serving(create_app(deps), config))


async def run_api(settings: Settings, config: ApiConfig) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_api(settings, config) as url:
            log.info("API serving at %s", url)
            print(
                f"rai api: serving {url} (OpenAPI: {url}/docs; training callbacks:"
                f" {training_callback_url(url)})",
                flush=True,
            )
            await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    print("rai api: stopped", flush=True)
