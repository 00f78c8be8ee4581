"""``rai api``: serve the HTTP API (event ingest, training/drift callbacks, health)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.errors import CommandError, ServiceUnavailable
from settings import Settings


def register(groups: Any) -> None:
    p = groups.add_parser(
        "api", help="serve the HTTP API (events, training/drift callbacks, health) until SIGTERM"
    )
    p.add_argument("--host", help="address to bind (default: RAI_API_HOST, 127.0.0.1)")
    p.add_argument("--port", type=parse_port, help="port (default: RAI_API_PORT, 8088)")
    p.set_defaults(handler=run_api_command)


def parse_port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {value!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def run_api_command(args: argparse.Namespace, settings: Settings) -> int:
    # The server's imports (FastAPI, uvicorn, Temporal) are heavy; only this command needs them.
    from adapters.metrics import clear_multiprocess_dir
    from api.server import ApiConfig, ApiDependencyUnavailable, ApiStartupError, run_api

    try:
        clear_multiprocess_dir()  # before any API process records: no stale counts
        config = ApiConfig(
            host=args.host or settings.api_host,
            port=settings.api_port if args.port is None else args.port,
        )
        asyncio.run(run_api(settings, config))
    except ApiDependencyUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    except ApiStartupError as exc:
        raise CommandError(str(exc)) from exc
    return 0
