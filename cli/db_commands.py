"""``rai db migrate`` and ``rai db verify-chain``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.common import open_app_database, parse_tenant
from cli.errors import CommandError
from db.integrity import verify_chain
from db.migrate import MigrationError, migrate
from settings import Settings, redacted_dsn


def register(groups: Any) -> None:
    parser = groups.add_parser("db", help="database schema, laws and audit log")
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")

    p = commands.add_parser("migrate", help="create roles and database, apply pending migrations")
    p.add_argument(
        "--database-url",
        help="administrative DSN of the target database (default: RAI_DATABASE_URL)",
    )
    p.set_defaults(handler=run_migrate)

    p = commands.add_parser(
        "verify-chain", help="recompute a tenant's hash-chained audit log (integrity_checks)"
    )
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    p.set_defaults(handler=run_verify_chain)


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    dsn = args.database_url or settings.database_url
    password = settings.app_db_password.get_secret_value() if settings.app_db_password else None
    try:
        report = asyncio.run(migrate(dsn, app_password=password))
    except MigrationError as exc:
        raise CommandError(str(exc)) from exc
    applied = ", ".join(map(str, report.applied)) or "none (already current)"
    print(f"database {report.database} at version {report.current_version}; applied: {applied}")
    print(f"  {redacted_dsn(dsn)}")
    return 0


def run_verify_chain(args: argparse.Namespace, settings: Settings) -> int:
    async def verify() -> int:
        db = await open_app_database(settings)
        try:
            verdict = await verify_chain(db, args.tenant)
        finally:
            await db.close()
        if verdict.rows == 0:
            print(f"tenant {verdict.tenant_id}: no audit log rows (unknown tenant or empty log)")
            return 1
        for problem in verdict.problems:
            print(f"BROKEN  {problem}")
        state = "intact" if verdict.ok else "BROKEN"
        print(
            f"tenant {verdict.tenant_id}: chain {state}, {verdict.rows} rows,"
            f" head seq {verdict.head_seq} {verdict.head_hash}"
        )
        return 0 if verdict.ok else 1

    return asyncio.run(verify())
