"""``rai storage init`` and ``rai storage check``: the S3 buckets (MISSION M1-M4)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from adapters.objectstore import ObjectStore
from adapters.storage_setup import check_storage, init_storage
from cli.common import object_store
from cli.output import add_json_flag, print_json
from settings import Settings

T = TypeVar("T")


def register(groups: Any) -> None:
    parser = groups.add_parser("storage", help="the S3 buckets: configure and verify")
    commands = parser.add_subparsers(dest="storage_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "init",
        help="create and configure the registry and datasets buckets (idempotent)",
    )
    add_json_flag(p)
    p.set_defaults(handler=run_init)
    p = commands.add_parser(
        "check",
        help="verify versioning, encryption, Object Lock, lifecycle and access live;"
        " exit 1 if any check fails",
    )
    add_json_flag(p)
    p.set_defaults(handler=run_check)


def with_store(settings: Settings, work: Callable[[ObjectStore], Awaitable[T]]) -> T:
    async def run() -> T:
        async with object_store(settings) as store:
            return await work(store)

    return asyncio.run(run())


def run_init(args: argparse.Namespace, settings: Settings) -> int:
    steps = with_store(settings, lambda store: init_storage(store, settings))
    changed = sum(step.changed for step in steps)
    where = settings.s3_endpoint_url
    if args.json:
        print_json({"endpoint": where, "changed": changed, "settings": steps})
        return 0
    for step in steps:
        print(step.line())
    print(f"storage ready at {where}: {changed} of {len(steps)} settings set now")
    return 0


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    results = with_store(settings, lambda store: check_storage(store, settings))
    failed = [result for result in results if not result.ok]
    if args.json:
        print_json({"endpoint": settings.s3_endpoint_url, "ok": not failed, "checks": results})
        return 1 if failed else 0
    for result in results:
        print(result.line())
    if failed:
        print(f"{len(failed)} of {len(results)} checks FAILED")
        return 1
    print(f"all {len(results)} checks passed at {settings.s3_endpoint_url}")
    return 0
