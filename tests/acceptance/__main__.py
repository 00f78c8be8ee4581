"""``python -m tests.acceptance [--only NAME...] [--load-seconds N] [--out DIR]``: start the
stack, run the scenarios, write the report, stop everything; exit 1 if any scenario failed."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tests.acceptance.report import ScenarioResult, write_report
from tests.acceptance.scenarios import (
    faults,
    happy_path,
    hostile,
    kill_api_trainer,
    kill_worker,
    load,
    races,
    rls,
)
from tests.acceptance.stack import Stack, running_stack

Scenario = Callable[[Stack, dict[str, Any]], Awaitable[ScenarioResult]]

# In the order they run (issue 13's order); names are what --only takes.
SCENARIOS: dict[str, Scenario] = {
    happy_path.NAME: happy_path.run,
    kill_worker.NAME: kill_worker.run,
    kill_api_trainer.NAME: kill_api_trainer.run,
    faults.NAME: faults.run,
    races.NAME: races.run,
    rls.NAME: rls.run,
    load.NAME: load.run,
    hostile.NAME: hostile.run,
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.acceptance", description=__doc__)
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only these scenarios: " + ", ".join(SCENARIOS),
    )
    parser.add_argument("--load-seconds", type=int, default=600, help="load scenario duration")
    parser.add_argument("--tenants", type=int, default=100, help="tenants of the parallel race")
    parser.add_argument(
        "--latency-advisory",
        action="store_true",
        help="report the load scenario's p99 against its limit without letting it decide the"
        " verdict (CI on a shared machine; lost events and 5xx still do)",
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="where the report goes")
    args = parser.parse_args(argv)
    unknown = [name for name in args.only or [] if name not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    if args.load_seconds <= 0 or args.tenants <= 0:
        parser.error("--load-seconds and --tenants must be positive")
    return args


def mismatches(result: ScenarioResult) -> list[str]:
    """What a failed scenario expected and saw instead, so a CI log alone says why it failed."""
    lines = [
        f"expected {key} = {want!r}, observed {result.observed.get(key, '(missing)')!r}"
        for key, want in result.expected.items()
        if result.observed.get(key) != want
    ]
    if result.error:
        lines.append(f"error: {result.error}")
    if not lines:  # the verdict rests on figures beyond the expected table: show them all
        lines = [f"observed {key} = {value!r}" for key, value in result.observed.items()]
    # And every row of the details that failed (a step, a part, an attack), whole.
    lines += [
        "failed: " + ", ".join(f"{key} = {value!r}" for key, value in row.items())
        for row in result.details
        if row.get("passed") is False
    ]
    return lines


async def run_battery(args: argparse.Namespace) -> list[ScenarioResult]:
    chosen = args.only or list(SCENARIOS)
    options = {
        "load_seconds": args.load_seconds,
        "tenants": args.tenants,
        "latency_advisory": args.latency_advisory,
    }
    root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="rai-acceptance-"))
    await asyncio.to_thread(root.chmod, 0o711)
    results = []
    try:
        async with running_stack(root) as stack:
            for name in chosen:
                print(f"acceptance: {name} ...", file=sys.stderr, flush=True)
                started = time.monotonic()
                try:
                    result = await SCENARIOS[name](stack, options)
                except Exception as exc:  # a crashed scenario is a failed one, the rest still run
                    traceback.print_exc()
                    result = ScenarioResult(
                        name=name,
                        passed=False,
                        expected={},
                        observed={},
                        seconds=time.monotonic() - started,
                        key_figure="crashed",
                        error=f"{type(exc).__name__}: {exc}",
                    )
                verdict = "PASS" if result.passed else "FAIL"
                print(
                    f"acceptance: {name} {verdict} ({result.key_figure}, {result.seconds:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
                if not result.passed:
                    for line in mismatches(result):
                        print(f"acceptance: {name}   {line}", file=sys.stderr, flush=True)
                results.append(result)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    results = asyncio.run(run_battery(args))
    options = {
        "only": args.only or "all",
        "load_seconds": args.load_seconds,
        "tenants": args.tenants,
        "latency_advisory": args.latency_advisory,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    write_report(results, args.out, options=options)
    failed = [r.name for r in results if not r.passed]
    print(
        f"acceptance: {len(results) - len(failed)}/{len(results)} passed;"
        f" report in {args.out / 'acceptance-report.md'}",
        file=sys.stderr,
    )
    # Once more at the very end, where a log cut in the middle (a CI summary) still shows it.
    for result in results:
        if not result.passed:
            print(f"acceptance: FAILED {result.name} ({result.key_figure})", file=sys.stderr)
            for line in mismatches(result):
                print(f"acceptance: FAILED {result.name}   {line}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
