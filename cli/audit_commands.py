"""``rai audit checkpoint``: signed checkpoints of the audit chain.

A checkpoint is the platform key's signature over a tenant's audit-chain head (size, head row
hash, time), written to the WORM datasets bucket under a COMPLIANCE retention
(``services.checkpoints``); ``rai db verify-chain`` holds the chain against them.

Exit codes: 0 ok; 1 a chain is broken (no checkpoint is signed over it); 3 no such tenant;
4 Postgres or S3 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from uuid import UUID

import asyncpg

from cli.common import (
    app_database,
    checkpoint_service,
    object_store,
    one_line,
    parse_tenant,
    platform_signer,
    trusted_keys,
)
from cli.errors import CommandError, ServiceUnavailable
from cli.output import add_json_flag, print_json
from db.integrity import TenantListError, all_tenant_ids
from services.checkpoints import ChainBrokenError
from services.errors import NotFoundError
from settings import Settings, redacted_dsn


def register(groups: Any) -> None:
    parser = groups.add_parser("audit", help="signed checkpoints of the audit chain")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "checkpoint",
        help="verify a tenant's audit chain and sign its head into the WORM bucket;"
        " exit 1 if a chain is broken, 3 if there is no such tenant",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--tenant", type=parse_tenant, help="tenant id (UUID)")
    which.add_argument(
        "--all",
        action="store_true",
        help="every tenant (lists them with the administrative login, RAI_DATABASE_URL)",
    )
    add_json_flag(p)
    p.set_defaults(handler=run_checkpoint)


async def selected_tenants(args: argparse.Namespace, settings: Settings) -> list[UUID]:
    """``--tenant T``, or every tenant (listed with the administrative login)."""
    if args.tenant is not None:
        return [args.tenant]
    try:
        return await all_tenant_ids(settings.database_url)
    except TenantListError as exc:
        raise CommandError(str(exc)) from exc
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(
            f"cannot list tenants at {redacted_dsn(settings.database_url)}: {one_line(str(exc))}"
        ) from exc


def run_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    trusted = trusted_keys(settings)
    platform = platform_signer(settings, trusted)

    async def checkpoint_all() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        written: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        async with app_database(settings) as db, object_store(settings) as store:
            checkpoints = checkpoint_service(settings, db, store, trusted, platform)
            for tenant in await selected_tenants(args, settings):
                try:
                    stored = await checkpoints.checkpoint(tenant)
                except NotFoundError as exc:
                    if args.tenant is not None:
                        raise  # the one tenant named does not exist: exit 3
                    failed.append({"tenant_id": tenant, "error": str(exc)})
                    continue
                except ChainBrokenError as exc:
                    failed.append({"tenant_id": tenant, "error": str(exc)})
                    continue
                written.append(
                    {
                        "tenant_id": tenant,
                        "size": stored.checkpoint.size,
                        "head_hash": stored.checkpoint.head_hash,
                        "time": stored.checkpoint.time,
                        "key": stored.key,
                        "bucket": settings.s3_datasets_bucket,
                        "signed_by": stored.signed_by,
                        "written": stored.written,
                    }
                )
        return written, failed

    written, failed = asyncio.run(checkpoint_all())
    if args.json:
        print_json({"checkpoints": written, "failed": failed})
    else:
        for item in written:
            state = "written" if item["written"] else "already current"
            print(
                f"ok    tenant {item['tenant_id']}: seq {item['size']} head"
                f" {item['head_hash'][:16]}… {state}"
                f"  s3://{item['bucket']}/{item['key']}"
            )
        for item in failed:
            print(f"FAIL  tenant {item['tenant_id']}: {item['error']}")
        print(f"{len(written)} checkpoint(s), {len(failed)} failure(s)")
    return 1 if failed else 0
