"""What the ingest scenarios share: the ``rai`` CLI as a subprocess (``--json``), a tenant set
up the way an operator sets one up for a field gateway (``rai tenant create``, ``rai keys
generate`` / ``register``, ``rai token create``), a ``rai api`` process, and a client that
delivers signed batches with the retry rule a gateway follows.

The retry rule: a batch answered 5xx is sent again after its ``Retry-After`` (seconds); a batch
whose connection failed (refused, reset, closed before the answer) is sent again after a short
pause; until it is answered 200 or the batch's deadline passes. The events are idempotent by
(season, field), so a batch that was stored before its answer was lost comes back DUPLICATE:
nothing lost, nothing doubled.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp

from domain.documents import event_document
from domain.signing import DocumentKind, Signer
from services.events import IncomingEvent
from settings import Settings
from tests.acceptance.stack import World
from tests.environment import rai_environment

CONNECTION_RETRY_SECONDS = 0.25
API_START_SECONDS = 120.0


class RaiFailed(Exception):
    """A ``rai`` command exited non-zero."""


async def rai_json(settings: Settings, *args: str, env: dict[str, str] | None = None) -> Any:
    """``rai ARGS --json`` against the scenario's stack; its JSON document."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *args,
        "--json",
        env=env if env is not None else rai_environment(settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RaiFailed(
            f"rai {' '.join(args)} exited {process.returncode}: {err.decode().strip()[-500:]}"
        )
    return json.loads(out)


@dataclass(frozen=True)
class GatewayTenant:
    """A tenant, the device key its gateway signs with, and the gateway's API token."""

    id: UUID
    device: Signer
    token: str


async def gateway_tenant(world: World, name: str) -> GatewayTenant:
    settings = world.settings
    tenant = UUID((await rai_json(settings, "tenant", "create", name))["id"])
    seed_file = world.state / f"device-{tenant}.key"
    key = await rai_json(settings, "keys", "generate", "--out", str(seed_file))
    await rai_json(
        settings, "keys", "register", "--tenant", str(tenant), "--public-key", key["public_key"]
    )
    token = (await rai_json(settings, "token", "create", "--tenant", str(tenant)))["token"]
    device = Signer.from_hex(seed_file.read_text(encoding="ascii").strip())
    return GatewayTenant(tenant, device, str(token))


def event_body(event: IncomingEvent) -> dict[str, Any]:
    return {
        "season_id": event.season_id,
        "field_id": event.field_id,
        "payload": dict(event.payload),
        "signature": event.signature.hex(),
        "key_id": event.key_id,
    }


def numbered_events(tenant: GatewayTenant, season: str, count: int) -> list[dict[str, Any]]:
    """``count`` signed events with distinct fields (every one new)."""
    events = []
    for index in range(count):
        ndvi = round(0.3 + (index % 997) / 2000, 6)
        payload = {"features": {"ndvi": ndvi, "soil": "loam"}, "outcome": round(ndvi * 10, 6)}
        field_id = f"f-{index:06d}"
        document = event_document(tenant.id, season, field_id, payload)
        signature = tenant.device.sign(DocumentKind.EVENT, document)
        events.append(
            event_body(IncomingEvent(season, field_id, payload, signature, tenant.device.key_id))
        )
    return events


def batches(events: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [events[start : start + size] for start in range(0, len(events), size)]


async def start_api(
    settings: Settings, port: int, log: Path, *, workers: int = 1
) -> tuple[asyncio.subprocess.Process, str]:
    """``rai api --port PORT --workers N`` until it announces itself; the process and URL."""
    with log.open("ab") as handle:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "cli.main",
            "api",
            "--port",
            str(port),
            "--workers",
            str(workers),
            env=rai_environment(settings),
            stdout=asyncio.subprocess.PIPE,
            stderr=handle,
        )
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), API_START_SECONDS)).decode()
    if not line.startswith("rai api: serving "):
        await process.wait()
        raise RuntimeError(f"rai api did not start (exit {process.returncode}): {line!r}")
    return process, line.split()[3]


@dataclass
class Delivery:
    """What the client saw while delivering its batches."""

    batches: int = 0
    events: int = 0
    delivered_batches: int = 0
    requests: int = 0
    # Connections refused (nobody listening), and requests whose connection broke before the
    # answer (reset, closed: the server died with the request in flight).
    refused: int = 0
    broken: int = 0
    answers: Counter[int] = field(default_factory=Counter)
    retry_after: Counter[str] = field(default_factory=Counter)
    outcomes: Counter[str] = field(default_factory=Counter)
    undelivered: list[str] = field(default_factory=list)

    @property
    def retries(self) -> int:
        return self.requests - self.delivered_batches - len(self.undelivered)

    def summary(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "events sent": self.events,
            "requests": self.requests,
            "retries": self.retries,
            "refused connections": self.refused,
            "broken connections": self.broken,
            "answers": {str(code): n for code, n in sorted(self.answers.items())},
            "Retry-After on 5xx": dict(self.retry_after),
            "outcomes": dict(self.outcomes),
            "undelivered batches": len(self.undelivered),
        }


async def deliver(
    url: str,
    tenant: GatewayTenant,
    to_send: list[list[dict[str, Any]]],
    *,
    connections: int = 4,
    batch_deadline: float = 120.0,
    on_delivered: Callable[[int], None] | None = None,
) -> Delivery:
    """Send every batch over ``connections`` concurrent connections (a fresh one per request, so
    ``rai api --workers N`` spreads them) with the retry rule above. ``on_delivered(n)`` is
    called after the n-th batch is delivered."""
    report = Delivery(batches=len(to_send), events=sum(len(b) for b in to_send))
    queue: asyncio.Queue[list[dict[str, Any]]] = asyncio.Queue()
    for batch in to_send:
        queue.put_nowait(batch)
    endpoint = f"{url}/v1/tenants/{tenant.id}/events"
    headers = {"Authorization": f"Bearer {tenant.token}"}

    async def send_one(session: aiohttp.ClientSession, batch: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + batch_deadline
        body = {"events": batch}
        while True:
            report.requests += 1
            pause = CONNECTION_RETRY_SECONDS
            try:
                async with session.post(endpoint, json=body, headers=headers) as response:
                    report.answers[response.status] += 1
                    if response.status == 200:
                        answer = await response.json()
                        report.outcomes.update({k: v for k, v in answer["counts"].items() if v})
                        report.delivered_batches += 1
                        if on_delivered is not None:
                            on_delivered(report.delivered_batches)
                        return
                    text = await response.text()
                    if response.status < 500:
                        report.undelivered.append(f"{response.status}: {text[:200]}")
                        return
                    retry_after = response.headers.get("Retry-After")
                    report.retry_after[str(retry_after)] += 1
                    if retry_after is not None and retry_after.isdigit():
                        pause = float(retry_after)
            except aiohttp.ClientConnectorError:
                report.refused += 1
            except (aiohttp.ClientError, OSError):
                report.broken += 1
            if time.monotonic() + pause > deadline:
                report.undelivered.append(f"no 200 within {batch_deadline:.0f} s")
                return
            await asyncio.sleep(pause)

    async def connection(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                batch = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await send_one(session, batch)

    connector = aiohttp.TCPConnector(limit=connections, force_close=True)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(connection(session) for _ in range(connections)))
    return report


async def stored_counts(world: World, tenant: UUID, season: str) -> dict[str, int]:
    """Rows and distinct (season, field)s the database holds for the tenant's season."""
    conn = await world.admin()
    try:
        row = await conn.fetchrow(
            "SELECT count(*) AS rows, count(DISTINCT field_id) AS distinct_fields"
            " FROM rai.learning_events WHERE tenant_id = $1 AND season_id = $2",
            tenant,
            season,
        )
    finally:
        await conn.close()
    assert row is not None
    return {"rows": row["rows"], "distinct fields": row["distinct_fields"]}
