"""``rai keys``: the platform key, device key pairs, and a tenant's key registry."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from cli.common import STACK_HINT, app_database, parse_tenant
from cli.errors import CommandError, NotFound, ServiceUnavailable
from cli.output import add_json_flag, print_json
from domain.signing import KeyMaterialError, Signer
from services.errors import NotFoundError
from services.keys import (
    AdministrativeDatabaseUnavailable,
    PlatformKeyError,
    load_platform_signer,
    register_key,
    register_platform_key,
    revoke_key,
    write_private_key,
)
from settings import Settings


def register(groups: Any) -> None:
    parser = groups.add_parser("keys", help="Ed25519 signing keys")
    commands = parser.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    p = commands.add_parser(
        "platform", help="show the platform key id (creating the key file if there is none)"
    )
    add_json_flag(p)
    p.set_defaults(handler=run_platform)
    platform_commands = p.add_subparsers(dest="platform_command", metavar="COMMAND")
    r = platform_commands.add_parser(
        "register",
        help="register the platform's public key for a tenant (administrative login only)",
    )
    r.add_argument("--tenant", required=True, type=parse_tenant)
    r.add_argument(
        "--public-key",
        help="raw Ed25519 public key, 64 hex chars (default: the configured platform key's)",
    )
    add_json_flag(r)
    r.set_defaults(handler=run_platform_register)

    p = commands.add_parser("generate", help="make a device key pair; the seed goes to --out")
    p.add_argument("--out", required=True, type=Path, help="file for the private seed (0600)")
    add_json_flag(p)
    p.set_defaults(handler=run_generate)

    p = commands.add_parser("register", help="register a public key for a tenant")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--public-key", required=True, help="raw Ed25519 public key, 64 hex chars")
    p.add_argument(
        "--purpose",
        choices=["device", "platform"],
        default="device",
        help="platform keys: the database refuses them here; use `rai keys platform register`",
    )
    add_json_flag(p)
    p.set_defaults(handler=run_register)

    p = commands.add_parser(
        "revoke", help="revoke a tenant's key (exit 1 if it has no such active key)"
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("key_id")
    add_json_flag(p)
    p.set_defaults(handler=run_revoke)


def run_platform(args: argparse.Namespace, settings: Settings) -> int:
    try:
        signer = load_platform_signer(settings, create=True)
    except (PlatformKeyError, KeyMaterialError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print_json({"key_id": signer.key_id, "public_key": signer.public_key.hex()})
        return 0
    print(f"platform key id  {signer.key_id}")
    print(f"public key       {signer.public_key.hex()}")
    return 0


def run_platform_register(args: argparse.Namespace, settings: Settings) -> int:
    if args.public_key is None:
        try:
            public_key = load_platform_signer(settings).public_key
        except (PlatformKeyError, KeyMaterialError, OSError) as exc:
            raise CommandError(str(exc)) from exc
    else:
        public_key = _public_key(args.public_key)
    try:
        kid = asyncio.run(register_platform_key(settings.database_url, args.tenant, public_key))
    except AdministrativeDatabaseUnavailable as exc:
        raise ServiceUnavailable(f"{exc} (is the stack up? {STACK_HINT})") from exc
    except NotFoundError as exc:
        raise NotFound(str(exc)) from exc
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print_json({"key_id": kid, "tenant_id": args.tenant, "purpose": "platform"})
    else:
        print(f"platform key {kid} registered for tenant {args.tenant}")
    return 0


def _public_key(text: str) -> bytes:
    try:
        public_key = bytes.fromhex(text)
    except ValueError:
        raise CommandError("--public-key must be hex") from None
    if len(public_key) != 32:
        raise CommandError("--public-key must be 32 bytes (64 hex characters)")
    return public_key


def run_generate(args: argparse.Namespace, settings: Settings) -> int:
    signer = Signer.generate()
    try:
        write_private_key(args.out, signer)
    except FileExistsError:
        raise CommandError(f"{args.out} exists; a key file is never overwritten") from None
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc}") from exc
    if args.json:
        print_json(
            {"key_id": signer.key_id, "public_key": signer.public_key.hex(), "seed_file": args.out}
        )
        return 0
    print(f"key id      {signer.key_id}")
    print(f"public key  {signer.public_key.hex()}")
    print(f"seed        {args.out} (keep it on the device)")
    return 0


def run_register(args: argparse.Namespace, settings: Settings) -> int:
    public_key = _public_key(args.public_key)

    async def register_it() -> str:
        async with app_database(settings) as db:
            return await register_key(db, args.tenant, public_key, args.purpose)

    try:
        key_id = asyncio.run(register_it())
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    if args.json:
        print_json({"key_id": key_id, "tenant_id": args.tenant, "purpose": args.purpose})
    else:
        print(key_id)
    return 0


def run_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke_it() -> bool:
        async with app_database(settings) as db:
            return await revoke_key(db, args.tenant, args.key_id)

    if not asyncio.run(revoke_it()):
        raise CommandError(f"tenant {args.tenant} has no active key {args.key_id}")
    if args.json:
        print_json({"key_id": args.key_id, "tenant_id": args.tenant, "revoked": True})
    else:
        print(f"revoked {args.key_id}")
    return 0
