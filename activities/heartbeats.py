"""Heartbeats for the pipeline's steps (issue 11, item 3b).

The pipeline gives drift analysis, the snapshot, registration and the bias audit a heartbeat
timeout of about ten seconds (``PipelineInput.step_heartbeat_seconds``), and since
``heartbeat-short-steps`` the short steps too (lock, preconditions, promotion, dead letter,
outcome, checkpoint, cancel), whose 2-minute start-to-close timeout was otherwise what a worker
killed in them cost: while such a step runs, :func:`heartbeating` heartbeats every second from
the worker's event loop, so a worker killed mid-step is noticed within the heartbeat timeout
and the step is retried on another worker (each of them resumes or restarts idempotently),
instead of at its start-to-close timeout (30 minutes for the long steps, 2 for the short
ones). The SDK throttles what it sends to the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from temporalio import activity

HEARTBEAT_EVERY = 1.0  # seconds


@contextlib.asynccontextmanager
async def heartbeating(every: float = HEARTBEAT_EVERY) -> AsyncIterator[None]:
    async def beat() -> None:
        while True:
            activity.heartbeat()
            await asyncio.sleep(every)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
