"""``rai tenant create``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from uuid import UUID

from cli.common import app_database, parse_tenant
from cli.errors import CommandError
from cli.output import add_json_flag, print_json
from db.tenants import Tenant, create_tenant
from settings import Settings


def register(groups: Any) -> None:
    parser = groups.add_parser("tenant", help="tenants")
    commands = parser.add_subparsers(dest="tenant_command", required=True, metavar="COMMAND")
    p = commands.add_parser("create", help="create a tenant and print its id")
    p.add_argument("name", help="display name")
    p.add_argument("--id", type=parse_tenant, help="tenant id to use (default: a new UUID)")
    add_json_flag(p)
    p.set_defaults(handler=run_create)


def run_create(args: argparse.Namespace, settings: Settings) -> int:
    tenant_id: UUID | None = args.id
    name: str = args.name
    if not name.strip():
        raise CommandError("tenant name must not be blank")

    async def create() -> Tenant:
        async with app_database(settings) as db:
            return await create_tenant(db, name, tenant_id)

    try:
        created = asyncio.run(create())
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print_json({"id": created.id, "name": created.name, "created_at": created.created_at})
    else:
        print(created.id)
    return 0
