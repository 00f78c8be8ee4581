"""``rai storage init`` and ``rai storage check``: the S3 buckets (MISSION M1-M4)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from adapters.objectstore import (
    AccessDeniedError,
    CredentialsRejectedError,
    ObjectStore,
    ObjectStoreConfigError,
    ObjectStoreError,
    ObjectStoreUnavailableError,
)
from adapters.storage_setup import check_storage, init_storage
from cli.errors import CommandError
from settings import Settings

STACK_HINT = '`rai dev up`, then `eval "$(rai dev env)"`'

T = TypeVar("T")


def register(groups: Any) -> None:
    parser = groups.add_parser("storage", help="the S3 buckets: configure and verify")
    commands = parser.add_subparsers(dest="storage_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "init",
        help="create and configure the registry and datasets buckets (idempotent)",
    )
    p.set_defaults(handler=run_init)
    p = commands.add_parser(
        "check",
        help="verify versioning, encryption, Object Lock, lifecycle and access live",
    )
    p.set_defaults(handler=run_check)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def with_store(settings: Settings, work: Callable[[ObjectStore], Awaitable[T]]) -> T:
    """Run ``work`` with the open store of ``settings``; store trouble becomes one line."""
    endpoint = settings.s3_endpoint_url
    try:
        store = ObjectStore.from_settings(settings)
    except ObjectStoreConfigError as exc:
        raise CommandError(f"{exc}; for the local stack: {STACK_HINT}") from exc

    async def run() -> T:
        async with store:
            return await work(store)

    try:
        return asyncio.run(run())
    except ObjectStoreUnavailableError as exc:
        raise CommandError(
            f"cannot reach S3 at {endpoint} ({_one_line(str(exc))}); is the stack up? {STACK_HINT}"
        ) from exc
    except CredentialsRejectedError as exc:
        raise CommandError(
            f"S3 at {endpoint} refuses the key {store.access_key} ({exc.code}); RAI_S3_ACCESS_KEY"
            f" and RAI_S3_SECRET_KEY must be the stack's: {STACK_HINT}"
        ) from exc
    except AccessDeniedError as exc:
        raise CommandError(
            f"S3 at {endpoint} refused the key {store.access_key}: {_one_line(str(exc))};"
            " the key needs full access to both buckets"
        ) from exc
    except ObjectStoreError as exc:
        raise CommandError(_one_line(str(exc))) from exc


def run_init(args: argparse.Namespace, settings: Settings) -> int:
    steps = with_store(settings, lambda store: init_storage(store, settings))
    for step in steps:
        print(step.line())
    changed = sum(step.changed for step in steps)
    where = settings.s3_endpoint_url
    print(f"storage ready at {where}: {changed} of {len(steps)} settings set now")
    return 0


def run_check(args: argparse.Namespace, settings: Settings) -> int:
    results = with_store(settings, lambda store: check_storage(store, settings))
    for result in results:
        print(result.line())
    failed = [result for result in results if not result.ok]
    if failed:
        print(f"{len(failed)} of {len(results)} checks FAILED")
        return 1
    print(f"all {len(results)} checks passed at {settings.s3_endpoint_url}")
    return 0
