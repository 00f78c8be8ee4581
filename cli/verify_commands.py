"""``rai verify model``: a model version's whole provenance, recomputed."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from uuid import UUID

from cli.common import app_database, object_store, parse_model_id, parse_tenant
from cli.errors import NotFound
from cli.output import add_json_flag, print_json
from services.verify import Check, ProvenanceVerifier
from settings import Settings


def register(groups: Any) -> None:
    parser = groups.add_parser("verify", help="verify provenance")
    commands = parser.add_subparsers(dest="verify_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "model",
        help="check a model version's artifact hash, signature, lineage, drift report and"
        " bias audit; exit 1 on any failure, 3 if the tenant has no such version",
    )
    p.add_argument("model_version_id", type=parse_model_id, metavar="MODEL_VERSION_ID")
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    add_json_flag(p)
    p.set_defaults(handler=run_verify_model)


def run_verify_model(args: argparse.Namespace, settings: Settings) -> int:
    async def verify_it() -> list[Check]:
        async with app_database(settings) as db, object_store(settings) as store:
            return await ProvenanceVerifier(db, store).verify_model(
                args.tenant, args.model_version_id
            )

    checks = asyncio.run(verify_it())
    model: UUID = args.model_version_id
    # The verifier's first check finds the version; it fails only when there is none.
    if checks[0].name == "model version" and not checks[0].ok:
        raise NotFound(f"model version {model}: {checks[0].detail}")
    failed = [check.name for check in checks if not check.ok]
    if args.json:
        print_json(
            {
                "model_version_id": model,
                "tenant_id": args.tenant,
                "verified": not failed,
                "checks": checks,
            }
        )
        return 1 if failed else 0
    width = max(len(check.name) for check in checks)
    for check in checks:
        print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name.ljust(width)}  {check.detail}")
    print(f"model version {model}: " + ("VERIFIED" if not failed else "NOT VERIFIED"))
    return 1 if failed else 0
