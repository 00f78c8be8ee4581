"""Scenario 7, load (M31): ``rai bench ingest --rate 1000 --seconds N`` against a ``rai api``
it starts on the scenario's database (N = ``--load-seconds``), then the same as fast as the API
answers for min(N, 30) s for the maximum rate. Expected at 1000/s: p99 <= 50 ms per batch,
0 lost, 0 5xx. ``lost`` is recounted here: events the bench says it sent minus the rows the
database gained during the run (the scenario's database holds nothing else).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from tests.acceptance.report import ScenarioResult
from tests.acceptance.stack import Stack, World
from tests.environment import rai_environment

NAME = "7-load"
P99_LIMIT_MS = 50.0


async def stored_events(world: World) -> int:
    conn = await world.admin()
    try:
        n: int = await conn.fetchval("SELECT count(*) FROM rai.learning_events")
        return n
    finally:
        await conn.close()


async def bench(world: World, seconds: int, rate: int | None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "cli.main", "bench", "ingest", "--seconds", str(seconds)]
    if rate is not None:
        argv += ["--rate", str(rate)]
    before = await stored_events(world)
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
    result["stored (recounted)"] = gained
    result["lost (recounted)"] = result["sent"] - gained
    result["exit code"] = process.returncode
    return result


async def run(stack: Stack, options: dict[str, Any]) -> ScenarioResult:
    started = time.monotonic()
    seconds = int(options["load_seconds"])
    async with stack.world("load") as world:
        steady = await bench(world, seconds, 1000)
        fastest = await bench(world, min(seconds, 30), None)
    keys = ("events_per_s", "p50_ms", "p99_ms", "sent", "stored (recounted)", "lost (recounted)")
    passed = (
        steady["p99_ms"] <= P99_LIMIT_MS
        and steady["lost (recounted)"] == 0
        and steady["errors_5xx"] == 0
        and fastest["lost (recounted)"] == 0
        and fastest["errors_5xx"] == 0
    )
    return ScenarioResult(
        name=NAME,
        passed=passed,
        expected={
            "1000/s: p99_ms": f"<= {P99_LIMIT_MS}",
            "1000/s: lost (recounted)": 0,
            "1000/s: 5xx": 0,
            "max rate: lost (recounted)": 0,
            "max rate: 5xx": 0,
        },
        observed={
            **{f"1000/s: {k}": steady[k] for k in keys},
            "1000/s: 5xx": steady["errors_5xx"],
            **{f"max rate: {k}": fastest[k] for k in keys},
            "max rate: 5xx": fastest["errors_5xx"],
            "seconds at 1000/s": seconds,
            "api workers": steady["api_workers"],
        },
        seconds=time.monotonic() - started,
        key_figure=f"p99 {steady['p99_ms']} ms at 1000/s, lost {steady['lost (recounted)']};"
        f" max {fastest['events_per_s']:.0f}/s",
        figures={
            "p99_ms": steady["p99_ms"],
            "lost": steady["lost (recounted)"],
            "events_per_s": steady["events_per_s"],
            "max_events_per_s": fastest["events_per_s"],
        },
        details=[
            {
                "run": "1000/s",
                "p99_ms": steady["p99_ms"],
                "lost": steady["lost (recounted)"],
                "events_per_s": steady["events_per_s"],
            },
            {
                "run": "max rate",
                "p99_ms": fastest["p99_ms"],
                "lost": fastest["lost (recounted)"],
                "events_per_s": fastest["events_per_s"],
            },
        ],
    )
