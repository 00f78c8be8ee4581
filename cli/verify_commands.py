"""``rai verify model``: a model version's whole provenance, recomputed."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from uuid import UUID

from adapters.objectstore import ObjectStore, ObjectStoreError
from cli.common import open_app_database, parse_model_id, parse_tenant
from cli.errors import CommandError
from services.trust import TrustConfigError, trusted_platform_keys
from services.verify import Check, ProvenanceVerifier
from settings import Settings


def register(groups: Any) -> None:
    parser = groups.add_parser("verify", help="verify provenance")
    commands = parser.add_subparsers(dest="verify_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "model",
        help="check a model version's artifact hash, signature, lineage, drift report, bias"
        " audit and dataset snapshot against the pinned platform key; exits non-zero on any"
        " failure",
    )
    p.add_argument("model_version_id", type=parse_model_id, metavar="MODEL_VERSION_ID")
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    p.set_defaults(handler=run_verify_model)


def run_verify_model(args: argparse.Namespace, settings: Settings) -> int:
    try:
        trusted = trusted_platform_keys(settings)
    except TrustConfigError as exc:
        raise CommandError(str(exc)) from exc

    async def verify_it() -> list[Check]:
        db = await open_app_database(settings)
        try:
            async with ObjectStore.from_settings(settings) as store:
                return await ProvenanceVerifier(db, store, trusted).verify_model(
                    args.tenant, args.model_version_id
                )
        finally:
            await db.close()

    try:
        checks = asyncio.run(verify_it())
    except ObjectStoreError as exc:
        raise CommandError(f'{exc} (is the stack up? eval "$(rai dev env)")') from exc
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name.ljust(width)}  {check.detail}")
    failed = [check.name for check in checks if not check.ok]
    model: UUID = args.model_version_id
    print(f"model version {model}: " + ("VERIFIED" if not failed else "NOT VERIFIED"))
    return 1 if failed else 0
