"""``rai bench ingest``: signed events per second through the HTTP API, end to end.

Set-up (not timed): a new tenant, a device key and an API token (through the services, as
``rai tenant create`` / ``rai keys register`` / ``rai token create`` would), an API started as
``rai api --workers N`` on a free port (or ``--url`` of one already running against the same
database), and the Ed25519 ceiling of this machine: verifications per second with one
process per core, measured in the same run.

Then ``min(C, cores)`` client processes each sign their share of the events (unique fields, so
every event is new) and serialise their batches, wait until all are ready, and send for
``--seconds`` over ``C`` connections in all: as fast as the server answers, or at ``--rate``
events/s on a fixed schedule (a batch late because the server was slow is sent at once, and
its round trip counts from when it was sent). Afterwards the events are counted in the
database: ``stored``; ``lost = sent - stored`` (must be 0).
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from adapters.processes import freeze_start_up_heap
from cli.common import app_database
from cli.errors import CommandError
from settings import Settings

READY_TIMEOUT_SECONDS = 120.0
CEILING_SECONDS = 2.0


@dataclass(frozen=True)
class BenchPlan:
    url: str
    tenant_id: str
    token: str
    device_seed_hex: str
    seconds: float
    rate: float | None
    batch: int
    connections: int
    events: int
    season: str


@dataclass
class ClientReport:
    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    conflicts: int = 0
    errors_5xx: int = 0
    errors_other: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    first_sent: float = 0.0
    last_done: float = 0.0


def _sign_batches(plan: BenchPlan, client: int, count: int) -> list[bytes]:
    from domain.documents import event_document
    from domain.signing import DocumentKind, Signer

    device = Signer.from_hex(plan.device_seed_hex)
    tenant = UUID(plan.tenant_id)
    bodies: list[bytes] = []
    events: list[dict[str, Any]] = []
    for index in range(count):
        ndvi = round(0.3 + (index % 997) / 2000, 6)
        payload = {"features": {"ndvi": ndvi, "soil": "loam"}, "outcome": round(ndvi * 10, 6)}
        field_id = f"c{client}-{index}"
        document = event_document(tenant, plan.season, field_id, payload)
        events.append(
            {
                "season_id": plan.season,
                "field_id": field_id,
                "payload": payload,
                "signature": device.sign(DocumentKind.EVENT, document).hex(),
                "key_id": device.key_id,
            }
        )
        if len(events) == plan.batch:
            bodies.append(json.dumps({"events": events}).encode())
            events = []
    if events:
        bodies.append(json.dumps({"events": events}).encode())
    return bodies


async def _send(
    plan: BenchPlan, bodies: list[bytes], connections: int, rate: float | None, start_at: float
) -> ClientReport:
    import aiohttp

    report = ClientReport()
    queue: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
    for number, body in enumerate(bodies):
        queue.put_nowait((number, body))
    deadline = start_at + plan.seconds
    interval = plan.batch / rate if rate else 0.0
    headers = {"Authorization": f"Bearer {plan.token}", "Content-Type": "application/json"}
    url = f"{plan.url}/v1/tenants/{plan.tenant_id}/events"

    async def connection(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                number, body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            due = start_at + number * interval
            now = time.perf_counter()
            if due >= deadline or now >= deadline:
                return
            if due > now:
                await asyncio.sleep(due - now)
            sent = time.perf_counter()
            report.first_sent = report.first_sent or sent
            size = body.count(b'"season_id"')
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    answer = await response.read()
                    code = response.status
            except aiohttp.ClientError:
                report.errors_other += 1
                report.sent += size
                continue
            done = time.perf_counter()
            report.latencies_ms.append((done - sent) * 1000)
            report.last_done = done
            report.sent += size
            if code >= 500:
                report.errors_5xx += 1
            elif code != 200:
                report.errors_other += 1
            else:
                counts = json.loads(answer)["counts"]
                report.accepted += counts["ACCEPTED"]
                report.duplicates += counts["DUPLICATE"]
                report.rejected += counts["REJECTED"]
                report.conflicts += counts["CONFLICT"]

    # A new connection per batch: `rai api --workers N` shares its port with SO_REUSEPORT, and
    # the kernel spreads *connections* over the workers; a few long-lived ones would pin the
    # whole load on whichever workers their hashes picked.
    connector = aiohttp.TCPConnector(limit=connections, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(connection(session) for _ in range(connections)))
    return report


def _client_main(
    plan: BenchPlan,
    client: int,
    count: int,
    connections: int,
    rate: float | None,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    bodies = _sign_batches(plan, client, count)
    # A full collection over this process' start-up objects would stall the client for tens
    # of ms and count as the server's latency.
    freeze_start_up_heap()
    ready.release()
    start_at = go.get()
    results.put((client, asyncio.run(_send(plan, bodies, connections, rate, start_at))))


def _verify_loop(seconds: float, results: Any) -> None:
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    message = b"rai-level-d/event/v1\n" + b"x" * 200
    signed = key.sign(message)
    verify_key = key.verify_key
    done = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(200):
            verify_key.verify(signed)
        done += 200
    results.put(done)


def verify_ceiling(processes: int, seconds: float = CEILING_SECONDS) -> float:
    """Ed25519 verifications per second with ``processes`` processes verifying at once."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    workers = [
        context.Process(target=_verify_loop, args=(seconds, results)) for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(results.get(timeout=seconds + 60) for _ in workers)
    for worker in workers:
        worker.join()
    return float(total) / seconds


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _setup(settings: Settings) -> tuple[str, str, str]:
    from db.tenants import create_tenant
    from domain.signing import Signer
    from services.keys import register_key
    from services.tokens import create_token

    device = Signer.generate()
    async with app_database(settings) as db:
        tenant = await create_tenant(db, f"bench {secrets.token_hex(4)}")
        await register_key(db, tenant.id, device.public_key, "device")
        issued = await create_token(db, tenant.id, "rai bench ingest")
    return str(tenant.id), issued.secret, device.seed_hex()


async def _stored(settings: Settings, tenant_id: str, season: str) -> int:
    async with app_database(settings) as db, db.transaction(UUID(tenant_id)) as conn:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM rai.learning_events WHERE tenant_id = $1 AND season_id = $2",
            UUID(tenant_id),
            season,
        )
    return count


def _start_api(workers: int) -> tuple[subprocess.Popen[str], str]:
    rai = [sys.executable, "-m", "cli.main"]
    process = subprocess.Popen(  # noqa: S603 -- our own CLI, arguments we built
        [*rai, "api", "--port", "0", "--workers", str(workers)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    assert process.stdout is not None  # noqa: S101 -- stdout=PIPE above
    line = process.stdout.readline()
    if not line.startswith("rai api: serving "):
        process.wait(30)
        raise CommandError(f"the API did not start (exit {process.returncode}): {line.strip()}")
    return process, line.split()[3]


def _stop_api(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_ingest_bench(
    settings: Settings,
    *,
    seconds: float,
    rate: float | None,
    batch: int,
    concurrency: int,
    workers: int,
    url: str | None,
    progress: Any,
) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    progress("measuring the Ed25519 ceiling of this machine (all cores)")
    ceiling = verify_ceiling(cores)
    progress("creating a tenant, a device key and an API token")
    tenant_id, token, seed = asyncio.run(_setup(settings))
    season = f"bench-{secrets.token_hex(3)}"
    api: subprocess.Popen[str] | None = None
    if url is None:
        progress(f"starting the API with {workers} worker processes")
        api, url = _start_api(workers)
    try:
        processes = max(1, min(concurrency, cores))
        # Enough events for the whole run: the rate's worth, or (as fast as possible) a
        # generous guess at this machine's ceiling.
        total = int(seconds * (rate if rate else min(ceiling, 40_000.0)))
        total = max(total, batch * processes)
        plan = BenchPlan(
            url=url.rstrip("/"),
            tenant_id=tenant_id,
            token=token,
            device_seed_hex=seed,
            seconds=seconds,
            rate=rate,
            batch=batch,
            connections=concurrency,
            events=total,
            season=season,
        )
        context = multiprocessing.get_context("spawn")
        ready, go, results = context.Semaphore(0), context.Queue(), context.Queue()
        clients = []
        for client in range(processes):
            connections = concurrency // processes + (1 if client < concurrency % processes else 0)
            share = total // processes
            client_rate = rate / processes if rate else None
            clients.append(
                context.Process(
                    target=_client_main,
                    args=(plan, client, share, connections, client_rate, ready, go, results),
                )
            )
        progress(f"{processes} client processes pre-sign {total} events")
        for process in clients:
            process.start()
        for _ in clients:
            if not ready.acquire(timeout=READY_TIMEOUT_SECONDS):
                raise CommandError("the bench's client processes did not get ready in time")
        progress(f"sending for {seconds:g} s")
        start_at = time.perf_counter() + 0.5
        for _ in clients:
            go.put(start_at)
        reports = [results.get(timeout=seconds + 180)[1] for _ in clients]
        for process in clients:
            process.join()
    finally:
        if api is not None:
            _stop_api(api)
    progress("counting what the database stored")
    stored = asyncio.run(_stored(settings, tenant_id, season))
    latencies = [ms for report in reports for ms in report.latencies_ms]
    sent = sum(r.sent for r in reports)
    accepted = sum(r.accepted for r in reports)
    started = min((r.first_sent for r in reports if r.first_sent), default=start_at)
    ended = max((r.last_done for r in reports), default=started)
    elapsed = max(ended - started, 1e-9)
    events_per_s = accepted / elapsed
    return {
        "events_per_s": round(events_per_s, 1),
        "p50_ms": round(_percentile(latencies, 0.50), 2),
        "p99_ms": round(_percentile(latencies, 0.99), 2),
        "sent": sent,
        "stored": stored,
        "lost": sent - stored,
        "duplicates": sum(r.duplicates for r in reports),
        "errors_5xx": sum(r.errors_5xx for r in reports),
        "verify_ceiling_per_s": round(ceiling, 1),
        "ratio": round(events_per_s / ceiling, 3) if ceiling else 0.0,
        "rejected": sum(r.rejected for r in reports),
        "errors_other": sum(r.errors_other for r in reports),
        "batches": len(latencies),
        "seconds": round(elapsed, 2),
        "batch": batch,
        "concurrency": concurrency,
        "rate": rate,
        "api_workers": workers if api is not None else None,
        "client_processes": processes,
    }
