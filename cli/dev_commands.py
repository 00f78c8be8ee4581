"""``rai dev up | status | down | env``: the embedded local stack (see ``devstack``)."""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from cli.errors import CommandError
from cli.output import add_json_flag, print_json
from devstack import Stack, StackError, StackInfo, StackStartError
from devstack.stack import DEFAULT_START_TIMEOUT_SECONDS, StackStatus
from settings import Settings


def register(groups: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = groups.add_parser(
        "dev",
        help="the local stack: Temporal, PostgreSQL, Redis, S3",
        description="Run the embedded local stack. State (data, logs, keys, PIDs) lives in "
        "RAI_STATE_DIR (.rai); ports come from the RAI_DEV_* settings.",
    )
    actions = dev.add_subparsers(dest="dev_action", required=True, metavar="ACTION")

    up = actions.add_parser(
        "up",
        help="start what is not running and wait until every part is healthy",
        description="Start the parts that are not running, reusing the PostgreSQL of "
        "RAI_DATABASE_URL and the Redis of RAI_REDIS_URL when they answer, and wait until "
        "everything is healthy. Running it again is harmless.",
    )
    up.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT_SECONDS,
        help="seconds to wait for each part to become healthy (%(default)s)",
    )
    add_json_flag(up)
    up.set_defaults(handler=run_up)

    status = actions.add_parser("status", help="one line per part; exit 1 unless all are healthy")
    add_json_flag(status)
    status.set_defaults(handler=run_status)

    down = actions.add_parser(
        "down", help="stop what `rai dev up` started (external servers are left alone)"
    )
    add_json_flag(down)
    down.set_defaults(handler=run_down)

    env = actions.add_parser(
        "env",
        help="print `export RAI_...` lines for the running stack",
        description='Print shell lines that point rai at the running stack: eval "$(rai dev env)"',
    )
    add_json_flag(env)
    env.set_defaults(handler=run_env)


def format_environment(info: StackInfo) -> str:
    """``export NAME=value`` lines, each value quoted for a POSIX shell."""
    return "\n".join(
        f"export {name}={shlex.quote(value)}" for name, value in info.environment().items()
    )


def status_json(status: StackStatus) -> dict[str, Any]:
    return {
        "healthy": status.healthy,
        "parts": [
            {
                "name": part.name,
                "state": part.state,
                "owner": part.owner,
                "url": part.display,
                "pid": part.pid,
                "note": part.note,
            }
            for part in status.parts
        ],
    }


def report(status: StackStatus, args: argparse.Namespace) -> None:
    if args.json:
        print_json(status_json(status))
    else:
        print("\n".join(status.lines()))


def _run(work: Callable[[], Coroutine[Any, Any, int]]) -> int:
    try:
        return asyncio.run(work())
    except StackError as exc:
        raise CommandError(str(exc)) from exc


def run_up(args: argparse.Namespace, settings: Settings) -> int:
    async def work() -> int:
        stack = Stack(settings, start_timeout=args.timeout)
        try:
            status = await stack.start()
        except StackStartError as exc:
            if args.json:
                raise
            print("\n".join(exc.status.lines()))
            for name, failure in exc.failures.items():
                if failure.log_tail:
                    print(f"--- end of the {name} log ---", file=sys.stderr)
                    print(failure.log_tail, file=sys.stderr)
            raise
        except StackError as exc:
            if exc.log_tail and not args.json:
                print(exc.log_tail, file=sys.stderr)
            raise
        report(status, args)
        return 0

    return _run(work)


def run_status(args: argparse.Namespace, settings: Settings) -> int:
    async def work() -> int:
        status = await Stack(settings).status()
        report(status, args)
        return 0 if status.healthy else 1

    return _run(work)


def run_down(args: argparse.Namespace, settings: Settings) -> int:
    async def work() -> int:
        report(await Stack(settings).down(), args)
        return 0

    return _run(work)


def run_env(args: argparse.Namespace, settings: Settings) -> int:
    async def work() -> int:
        info = await Stack(settings).info()
        if args.json:
            print_json({"environment": info.environment()})
        else:
            print(format_environment(info))
        return 0

    return _run(work)
