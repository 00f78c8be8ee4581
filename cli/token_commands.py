"""``rai token create|list|revoke``: a tenant's API tokens (``Authorization: Bearer ...``)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.common import app_database, parse_tenant, uuid_argument
from cli.errors import CommandError
from cli.output import add_json_flag, print_json
from services.tokens import ApiToken, IssuedToken, create_token, list_tokens, revoke_token
from settings import Settings


def register(groups: Any) -> None:
    parser = groups.add_parser("token", help="per-tenant API tokens for the HTTP API")
    commands = parser.add_subparsers(dest="token_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "create", help="issue a token for a tenant and print it (once: only its hash is stored)"
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--name", default="default", help="what the token is for (default: default)")
    p.add_argument(
        "--expires", type=_days, metavar="DAYS", help="expire after DAYS days (default: never)"
    )
    add_json_flag(p)
    p.set_defaults(handler=run_create)

    p = commands.add_parser("list", help="a tenant's tokens (never the tokens themselves)")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    add_json_flag(p)
    p.set_defaults(handler=run_list)

    p = commands.add_parser("revoke", help="revoke a token by id (exit 3 if there is none)")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("token_id", type=uuid_argument("token id"))
    add_json_flag(p)
    p.set_defaults(handler=run_revoke)


def _days(value: str) -> int:
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of days: {value!r}") from None
    if not 1 <= days <= 36_500:
        raise argparse.ArgumentTypeError(f"--expires is 1 to 36500 days, not {days}")
    return days


def _described(token: ApiToken) -> dict[str, Any]:
    return {
        "id": token.id,
        "tenant_id": token.tenant_id,
        "name": token.name,
        "created_at": token.created_at,
        "expires_at": token.expires_at,
        "revoked_at": token.revoked_at,
    }


def run_create(args: argparse.Namespace, settings: Settings) -> int:
    async def create() -> IssuedToken:
        async with app_database(settings) as db:
            return await create_token(db, args.tenant, args.name, expires_days=args.expires)

    try:
        issued = asyncio.run(create())
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print_json({"token": issued.secret, "id": issued.token.id, **_described(issued.token)})
    else:
        print(issued.secret)
        print(f"(token id {issued.token.id}; shown once, only its hash is stored)")
    return 0


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def list_them() -> list[ApiToken]:
        async with app_database(settings) as db:
            return await list_tokens(db, args.tenant)

    tokens = asyncio.run(list_them())
    if args.json:
        print_json({"tenant_id": args.tenant, "tokens": [_described(t) for t in tokens]})
        return 0
    for token in tokens:
        state = (
            f"revoked {token.revoked_at:%Y-%m-%d %H:%M}"
            if token.revoked_at
            else (f"expires {token.expires_at:%Y-%m-%d}" if token.expires_at else "no expiry")
        )
        print(f"{token.id}  {token.name:<20} created {token.created_at:%Y-%m-%d}  {state}")
    return 0


def run_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke_it() -> ApiToken:
        async with app_database(settings) as db:
            return await revoke_token(db, args.tenant, args.token_id)

    token = asyncio.run(revoke_it())
    if args.json:
        print_json(_described(token))
    else:
        print(f"revoked {token.id}")
    return 0
