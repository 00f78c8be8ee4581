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
import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import uvicorn
import uvloop
from fastapi import FastAPI
from temporalio.client import Client

from adapters.metrics import Metrics
from adapters.objectstore import ObjectStore, ObjectStoreConfigError
from adapters.processes import freeze_start_up_heap
from api.app import ApiDependencies, create_app
from api.ingest import IngestLimits
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
    #: share the port with sibling worker processes (SO_REUSEPORT: the kernel spreads
    #: connections over them)
    reuse_port: bool = False


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
        events = LearningEventService(db, metrics=metrics)
        stack.callback(events.close)
        yield ApiDependencies(
            db=db,
            callbacks=CallbackHandler(db, TemporalSignaller(client)),
            events=events,
            metrics=metrics,
            drift_reports=reports,
            limits=IngestLimits(
                max_body_bytes=settings.api_max_body_bytes,
                max_events=settings.api_max_events_per_batch,
            ),
        )


def _bind_now(host: str, port: int, *, reuse_port: bool, listen: bool = True) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, address = infos[0]
        if listen:
            return socket.create_server(address, family=family, backlog=2048, reuse_port=reuse_port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        return sock
    except OSError as exc:
        raise ApiStartupError(f"cannot listen on {host}:{port}: {exc}") from exc


async def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    return await asyncio.to_thread(_bind_now, host, port, reuse_port=reuse_port)


@asynccontextmanager
async def serving(app: FastAPI, config: ApiConfig) -> AsyncIterator[str]:
    """Serve ``app`` until the block ends; yields the base URL (``http://host:port``)."""
    sock = await _bind(config.host, config.port, reuse_port=config.reuse_port)
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


async def run_api(settings: Settings, config: ApiConfig, *, announce: bool = True) -> None:
    """Serve until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        async with running_api(settings, config) as url:
            frozen = freeze_start_up_heap()
            log.info("API serving at %s (%d start-up objects frozen)", url, frozen)
            if announce:
                _announce(url)
            await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)
    if announce:
        print("rai api: stopped", flush=True)


def _announce(url: str, workers: int = 1) -> None:
    processes = f", {workers} worker processes" if workers > 1 else ""
    print(
        f"rai api: serving {url} (OpenAPI: {url}/docs; training callbacks:"
        f" {training_callback_url(url)}{processes})",
        flush=True,
    )


# One process per core this process may run on, but not dozens on a big node whose cgroup
# quota (which neither count sees) gives the pod a few cores: scale pods, not processes.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), MAX_DEFAULT_WORKERS))


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _stop_with(parent: int) -> None:
    """Have the kernel SIGTERM this process when ``parent`` dies (Linux): a parent killed
    outright (SIGKILL) could not stop its workers, which would serve on, holding the port and
    the parent's output pipes."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request took effect
        sys.exit(1)


def _worker_main(settings: Settings, config: ApiConfig, ready: Any, parent: int) -> None:
    """One of ``serve_workers``' processes: the whole API on the shared port."""
    _stop_with(parent)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with running_api(settings, config):
            freeze_start_up_heap()
            ready.release()
            await stop.wait()

    try:
        uvloop.run(serve())
    except ApiStartupError as exc:
        print(f"rai api: worker {os.getpid()}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


def serve_workers(settings: Settings, config: ApiConfig, workers: int) -> None:
    """Serve with ``workers`` processes sharing one port (SO_REUSEPORT) until SIGTERM/SIGINT.

    This process reserves the port (bound, never listening, so the kernel hands it no
    connections), starts the workers, waits until each serves, and stops them all when told
    to -- or as soon as one of them dies, so a half-working API never looks healthy."""
    reserved = _bind_now(config.host, config.port, reuse_port=True, listen=False)
    host, port = reserved.getsockname()[:2]
    shared = dataclasses.replace(config, port=port, reuse_port=True)
    context = multiprocessing.get_context("spawn")
    ready = context.Semaphore(0)
    children = [
        context.Process(
            target=_worker_main, args=(settings, shared, ready, os.getpid()), daemon=False
        )
        for _ in range(workers)
    ]
    stopping = threading.Event()
    previous = {
        signum: signal.signal(signum, lambda *_: stopping.set())
        for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        for child in children:
            child.start()
        started = 0
        while started < workers:
            if ready.acquire(timeout=0.2):
                started += 1
            elif stopping.is_set() or any(not c.is_alive() for c in children):
                raise ApiStartupError("an API worker process stopped while starting")
        shown = f"[{host}]" if ":" in host else host
        _announce(f"http://{shown}:{port}", workers)
        while not stopping.wait(0.5):
            if any(not child.is_alive() for child in children):
                raise ApiStartupError("an API worker process died; stopping the others")
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: each worker stops gracefully
        for child in children:
            child.join(config.graceful_seconds + 5)
            if child.is_alive():
                child.kill()
                child.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        reserved.close()
    print("rai api: stopped", flush=True)
