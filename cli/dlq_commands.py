"""``rai dlq list | resolve``: the dead-letter store (``training-queue-failed``)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.common import app_database, parse_tenant, uuid_argument
from cli.output import add_json_flag, print_json
from services.pipeline import DeadLetter, list_dead_letters, resolve_dead_letter
from settings import Settings


def register(groups: Any) -> None:
    dlq = groups.add_parser("dlq", help="the dead-letter store (training-queue-failed)")
    commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="COMMAND")
    p = commands.add_parser("list", help="unresolved dead letters of a tenant")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--all", action="store_true", help="include resolved ones")
    add_json_flag(p)
    p.set_defaults(handler=run_list)
    p = commands.add_parser("resolve", help="mark a dead letter resolved (exit 3 if unknown)")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("id", type=uuid_argument("dead letter id"), metavar="ID")
    add_json_flag(p)
    p.set_defaults(handler=run_resolve)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing() -> list[DeadLetter]:
        async with app_database(settings) as db:
            return await list_dead_letters(db, args.tenant, include_resolved=args.all)

    letters = asyncio.run(listing())
    if args.json:
        print_json({"dead_letters": letters})
        return 0
    for letter in letters:
        state = f"resolved {letter.resolved_at:%Y-%m-%d %H:%M}" if letter.resolved_at else "open"
        print(
            f"{letter.id}  {letter.queue}  {letter.workflow_id}  attempts={letter.attempts}"
            f"  {letter.created_at:%Y-%m-%d %H:%M}  {state}\n    {letter.error}"
        )
    print(f"{len(letters)} dead letter(s)")
    return 0


def run_resolve(args: argparse.Namespace, settings: Settings) -> int:
    async def resolve() -> None:
        async with app_database(settings) as db:
            await resolve_dead_letter(db, args.tenant, args.id)

    asyncio.run(resolve())
    if args.json:
        print_json({"id": args.id, "resolved": True})
    else:
        print(f"resolved {args.id}")
    return 0
