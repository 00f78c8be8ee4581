"""A private SeaweedFS S3 server for one test run: its own directory, free ports, generated
keys; stopped (and its directory removed) at the end."""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pydantic import SecretStr

from devstack.errors import BinaryNotFoundError, StackError
from devstack.seaweed import SeaweedS3, generate_credentials
from settings import Settings

REGION = "us-east-1"
START_ATTEMPTS = 3
log = logging.getLogger(__name__)


def _distinct_free_ports(count: int) -> list[int]:
    """``count`` different ports nobody listens on (all held at once while choosing)."""
    held = [socket.socket() for _ in range(count)]
    try:
        for sock in held:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


@asynccontextmanager
async def private_s3() -> AsyncIterator[Settings]:
    """Settings whose ``s3_*`` fields point at a SeaweedFS server of our own.

    Its ports are free when chosen, but another pytest process starting its own servers, or an
    outgoing connection, may take one before weed binds it: the start-up check finds it in
    use, or weed exits during start-up. A failed start is retried on newly chosen ports
    (``START_ATTEMPTS`` in all), with a warning that carries weed's log tail; a missing
    ``weed`` binary, or the last attempt's failure, is raised."""
    credentials = generate_credentials()
    for attempt in range(1, START_ATTEMPTS + 1):
        root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rai-test-s3-"))
        s3, master, volume, filer = _distinct_free_ports(4)
        server = SeaweedS3(
            root,
            http_ports={"s3": s3, "master": master, "volume": volume, "filer": filer},
            credentials=credentials,
            region=REGION,
            start_timeout=60,
            stop_grace=3,
        )
        try:
            record = await server.ensure_running()
        except StackError as exc:
            await server.stop()
            await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
            if attempt == START_ATTEMPTS or isinstance(exc, BinaryNotFoundError):
                raise
            log.warning(
                "SeaweedFS start %d of %d failed (%s); log tail:\n%s\nstarting it on other ports",
                attempt,
                START_ATTEMPTS,
                exc,
                exc.log_tail,
            )
            continue
        break
    try:
        yield Settings(
            s3_endpoint_url=server.url(record),
            s3_region=REGION,
            s3_access_key=credentials.access_key,
            s3_secret_key=SecretStr(credentials.secret_key),
        )
    finally:
        await server.stop()
        await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
