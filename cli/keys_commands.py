"""``rai keys``: the platform key, device key pairs, and a tenant's key registry."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from cli.common import open_app_database, parse_tenant
from cli.errors import CommandError
from domain.signing import KeyMaterialError, Signer
from services.keys import (
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
    r.set_defaults(handler=run_platform_register)

    p = commands.add_parser("generate", help="make a device key pair; the seed goes to --out")
    p.add_argument("--out", required=True, type=Path, help="file for the private seed (0600)")
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
    p.set_defaults(handler=run_register)

    p = commands.add_parser("revoke", help="revoke a tenant's key")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("key_id")
    p.set_defaults(handler=run_revoke)


def run_platform(args: argparse.Namespace, settings: Settings) -> int:
    try:
        signer = load_platform_signer(settings, create=True)
    except (PlatformKeyError, KeyMaterialError, OSError) as exc:
        raise CommandError(str(exc)) from exc
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
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
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
    print(f"key id      {signer.key_id}")
    print(f"public key  {signer.public_key.hex()}")
    print(f"seed        {args.out} (keep it on the device)")
    return 0


def run_register(args: argparse.Namespace, settings: Settings) -> int:
    public_key = _public_key(args.public_key)

    async def register_it() -> str:
        db = await open_app_database(settings)
        try:
            return await register_key(db, args.tenant, public_key, args.purpose)
        finally:
            await db.close()

    try:
        print(asyncio.run(register_it()))
    except ValueError as exc:
        raise CommandError(str(exc)) from exc
    return 0


def run_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async def revoke_it() -> bool:
        db = await open_app_database(settings)
        try:
            return await revoke_key(db, args.tenant, args.key_id)
        finally:
            await db.close()

    if not asyncio.run(revoke_it()):
        raise CommandError(f"tenant {args.tenant} has no active key {args.key_id}")
    print(f"revoked {args.key_id}")
    return 0
