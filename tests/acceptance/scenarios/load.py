"""Scenario 7, load (M31): ``rai bench ingest --rate 1000 --seconds N --batch 50`` against a
``rai api`` it starts on the scenario's database (N = ``--load-seconds``), then the bench with its
own defaults (batches of 500, 4 connections) as fast as the API answers for min(N, 30) s for the
maximum rate. Expected at 1000/s: p99 <= 50 ms per batch, 0 lost, 0 5xx.

The steady run sends batches of 50 events (4 connections, the bench's default), as M31 is
measured in the README: field devices send small batches, and at 1000 events/s the batch size
sets the latency (README: batches of 50 keep p99 under 50 ms, batches of 100 sit at it, the
default 500 is a throughput setting). ``lost`` is recounted here:
events the bench says it sent minus the rows the database gained during the run (the scenario's
database holds nothing else). Before each run the scenario waits (at most 120 s) until the
CPUs were 80% idle over 5 s, so what the scenario before left behind (a database being dropped,
processes stopping) is not counted as the API's latency; the wait and the idle fraction are in
the report, and a machine that does not settle is reported, not waited on for ever. The
machine's load average at the start and end of each run is
in the report, since a p99 above the limit on a shared machine says more about the machine than
about the API. With ``--latency-advisory`` (CI, on a shared and noisy machine) the p99 is
measured and reported against the limit but does not decide the verdict; lost events and 5xx
still do.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from tests.acceptance.report import ScenarioResult
from tests.acceptance.stack import Stack, World
from tests.environment import rai_environment

NAME = "7-load"
P99_LIMIT_MS = 50.0
STEADY_RATE = 1000
# Events per request of the steady run: M31's figure in the README is measured with --batch 50.
STEADY_BATCH = 50
# Before each run: wait (at most SETTLE_SECONDS) for the CPUs to be this idle over 5 s.
SETTLED_IDLE = 0.8
SETTLE_SECONDS = 120.0


async def stored_events(world: World) -> int:
    conn = await world.admin()
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM rai.learning_events")
        return n
    finally:
        await conn.close()


def _cpu_times() -> tuple[int, int]:
    """(all, idle) clock ticks of every CPU since boot, from the first line of /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]  # idle + iowait


async def settle(
    *, idle_at_least: float = SETTLED_IDLE, window: float = 5.0, within: float = SETTLE_SECONDS
) -> tuple[float, float]:
    """Wait until the machine's CPUs were at least ``idle_at_least`` idle over ``window``
    seconds (what the scenario before left running has finished), for at most ``within``
    seconds; returns (seconds waited, idle fraction of the last window). Not settling in
    time is reported, not an error: the run goes ahead and the figures say so."""
    started = time.monotonic()
    while True:
        total, idle = _cpu_times()
        await asyncio.sleep(window)
        total_after, idle_after = _cpu_times()
        fraction = (idle_after - idle) / max(total_after - total, 1)
        waited = time.monotonic() - started
        if fraction >= idle_at_least or waited >= within:
            return round(waited, 1), round(fraction, 3)


def load_average() -> str:
    """The 1/5/15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


async def bench(
    world: World, seconds: int, rate: int | None, batch: int | None = None
) -> dict[str, Any]:
    argv = [sys.executable, "-m", "cli.main", "bench", "ingest", "--seconds", str(seconds)]
    if rate is not None:
        argv += ["--rate", str(rate)]
    if batch is not None:
        argv += ["--batch", str(batch)]
    before = await stored_events(world)
    waited, idle = await settle()
    load_before = load_average()
    process = await asyncio.create_subprocess_exec(
        *argv,
        "--json",
        env=rai_environment(world.settings),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if not out.strip():
        raise RuntimeError(f"rai bench ingest printed nothing: {err.decode()[-300:]}")
    result: dict[str, Any] = json.loads(out)
    gained = await stored_events(world) - before
    result["settled: seconds waited, CPU idle"] = f"{waited} s, {idle:.0%}"
    result["load average at start"] = load_before
    result["load average at end"] = load_average()
    result["stored (recounted)"] = gained
    result["lost (recounted)"] = result["sent"] - gained
    result["exit code"] = process.returncode
    return result


def verdict(steady: dict[str, Any], fastest: dict[str, Any], *, held: int, advisory: bool) -> bool:
    """Pass: nothing lost, no 5xx, every event sent held once, and (unless ``advisory``) the
    steady run's p99 within the limit."""
    return bool(
        (advisory or steady["p99_ms"] <= P99_LIMIT_MS)
        and steady["lost (recounted)"] == 0
        and steady["errors_5xx"] == 0
        and fastest["lost (recounted)"] == 0
        and fastest["errors_5xx"] == 0
        and held == steady["sent"] + fastest["sent"]
    )


async def run(stack: Stack, options: dict[str, Any]) -> ScenarioResult:
    started = time.monotonic()
    seconds = int(options["load_seconds"])
    async with stack.world("load") as world:
        steady = await bench(world, seconds, STEADY_RATE, STEADY_BATCH)
        fastest = await bench(world, min(seconds, 30), None)
        # What the database holds once both runs are over: every event sent, once.
        held = await stored_events(world)
    sent_in_all = steady["sent"] + fastest["sent"]
    keys = (
        "events_per_s",
        "p50_ms",
        "p99_ms",
        "sent",
        "stored (recounted)",
        "lost (recounted)",
        "batch",
        "concurrency",
        "settled: seconds waited, CPU idle",
        "load average at start",
        "load average at end",
    )
    advisory = bool(options.get("latency_advisory", False))
    within = steady["p99_ms"] <= P99_LIMIT_MS
    passed = verdict(steady, fastest, held=held, advisory=advisory)
    return ScenarioResult(
        name=NAME,
        passed=passed,
        expected={
            "1000/s: batch": STEADY_BATCH,
            "1000/s: p99_ms": f"<= {P99_LIMIT_MS}"
            + (" (advisory in this run: reported, not judged)" if advisory else ""),
            "1000/s: lost (recounted)": 0,
            "1000/s: 5xx": 0,
            "max rate: lost (recounted)": 0,
            "max rate: 5xx": 0,
            "events in the database at the end": sent_in_all,
        },
        observed={
            **{f"1000/s: {k}": steady[k] for k in keys},
            "1000/s: 5xx": steady["errors_5xx"],
            **{f"max rate: {k}": fastest[k] for k in keys},
            "max rate: 5xx": fastest["errors_5xx"],
            "events in the database at the end": held,
            "seconds at 1000/s": seconds,
            "api workers": steady["api_workers"],
        },
        seconds=time.monotonic() - started,
        key_figure=f"p99 {steady['p99_ms']} ms at 1000/s in batches of {steady['batch']}"
        + ("" if within or not advisory else f" (over {P99_LIMIT_MS:.0f} ms; advisory)")
        + f" (load {steady['load average at start']}), lost {steady['lost (recounted)']};"
        f" max {fastest['events_per_s']:.0f}/s",
        figures={
            "p99_ms": steady["p99_ms"],
            "p99_limit_ms": P99_LIMIT_MS,
            "p99_judged": not advisory,
            "lost": steady["lost (recounted)"],
            "events_per_s": steady["events_per_s"],
            "batch": steady["batch"],
            "max_events_per_s": fastest["events_per_s"],
        },
        details=[
            {
                "run": f"1000/s, batches of {steady['batch']}",
                "load average": steady["load average at start"],
                "p99_ms": steady["p99_ms"],
                "lost": steady["lost (recounted)"],
                "events_per_s": steady["events_per_s"],
            },
            {
                "run": f"max rate, batches of {fastest['batch']}",
                "load average": fastest["load average at start"],
                "p99_ms": fastest["p99_ms"],
                "lost": fastest["lost (recounted)"],
                "events_per_s": fastest["events_per_s"],
            },
        ],
    )
