"""``rai db migrate`` and ``rai db verify-chain`` (its checkpoint half: ``audit_commands``)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli import audit_commands
from cli.common import parse_tenant
from cli.errors import CommandError
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
        "verify-chain",
        help="recompute a tenant's hash-chained audit log (integrity_checks) and hold it against"
        " its signed checkpoints; exit 1 if it is broken, empty or a checkpoint does not hold",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    audit_commands.add_verify_chain_arguments(p)
    p.set_defaults(handler=audit_commands.run_verify_chain)


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
