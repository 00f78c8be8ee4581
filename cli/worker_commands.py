"""``rai worker [--queue all|training|drift]``: the Temporal worker."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.api_commands import parse_port
from cli.errors import CommandError, ServiceUnavailable
from settings import Settings
from starter import TemporalUnavailable, WorkerQueue


def register(groups: Any) -> None:
    p = groups.add_parser(
        "worker",
        help="run the Temporal worker until SIGTERM (both task queues, or one)",
        description="Poll the training queue (the workflows and every pipeline step but drift)"
        " and the drift-analysis queue; --queue picks one of them, so each can scale on its own.",
    )
    p.add_argument(
        "--queue",
        choices=[queue.value for queue in WorkerQueue],
        default=WorkerQueue.ALL.value,
        help="which task queues to poll (default: %(default)s)",
    )
    p.add_argument(
        "--metrics-port",
        type=parse_port,
        help="port of the Prometheus endpoint /metrics, the Temporal SDK's metrics included"
        " (default: RAI_WORKER_METRICS_PORT, 9464; 0 picks a free one)",
    )
    p.set_defaults(handler=run_worker_command)


def run_worker_command(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.metrics import MetricsEndpointError
    from services.startup import WorkerStartRefused
    from worker import run_worker  # the worker's imports are heavy; only this command needs them

    try:
        asyncio.run(run_worker(settings, WorkerQueue(args.queue), metrics_port=args.metrics_port))
    except MetricsEndpointError as exc:
        raise CommandError(str(exc)) from None
    except TemporalUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    except WorkerStartRefused as exc:
        raise CommandError(str(exc)) from None
    return 0
