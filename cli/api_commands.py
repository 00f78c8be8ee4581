"""``rai api``: serve the HTTP API (event ingest, training/drift callbacks, health)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
from typing import Any

from cli.errors import CommandError, ServiceUnavailable
from settings import Settings


def register(groups: Any) -> None:
    p = groups.add_parser(
        "api", help="serve the HTTP API (events, training/drift callbacks, health) until SIGTERM"
    )
    p.add_argument("--host", help="address to bind (default: RAI_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=parse_port, help="port (default: RAI_API_PORT, 8088)")
    p.add_argument(
        "--workers",
        type=parse_workers,
        help="server processes sharing the port"
        " (default: RAI_API_WORKERS, or one per core, at most 8)",
    )
    p.set_defaults(handler=run_api_command)


def parse_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def parse_workers(value: str) -> int:
    try:
        workers = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of processes: {value!r}") from None
    if not 1 <= workers <= 64:
        raise argparse.ArgumentTypeError(f"--workers is 1 to 64, not {workers}")
    return workers


def run_api_command(args: argparse.Namespace, settings: Settings) -> int:
    # The server's imports (FastAPI, uvicorn, Temporal) are heavy; only this command needs them.
    from adapters.metrics import MULTIPROC_ENV
    from api.server import default_workers

    workers = args.workers or settings.api_workers or default_workers()
    with contextlib.ExitStack() as cleanup:
        if workers > 1 and MULTIPROC_ENV not in os.environ:
            # Several processes answer /metrics in turn: each must report the totals of all,
            # so they share prometheus-client's multiprocess directory (the workers inherit
            # the environment), removed when the API stops.
            shared = cleanup.enter_context(tempfile.TemporaryDirectory(prefix="rai-api-metrics-"))
            os.environ[MULTIPROC_ENV] = shared
        return _serve(settings, args, workers)


def _serve(settings: Settings, args: argparse.Namespace, workers: int) -> int:
    from adapters.metrics import clear_multiprocess_dir
    from api.server import (
        ApiConfig,
        ApiDependencyUnavailable,
        ApiStartupError,
        run_api,
        serve_workers,
    )

    try:
        clear_multiprocess_dir()  # before any API process records: no stale counts
        config = ApiConfig(
            host=args.host or settings.api_host,
            port=settings.api_port if args.port is None else args.port,
        )
        if workers > 1:
            serve_workers(settings, config, workers)
        else:
            asyncio.run(run_api(settings, config))
    except ApiDependencyUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    except ApiStartupError as exc:
        raise CommandError(str(exc)) from exc
    return 0
