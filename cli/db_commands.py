"""``rai db migrate`` and ``rai db verify-chain``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from cli.common import app_database, migrate_database, parse_tenant
from cli.output import add_json_flag, print_json
from db.integrity import ChainVerdict, verify_chain
from settings import Settings, redacted_dsn


def register(groups: Any) -> None:
    parser = groups.add_parser("db", help="database schema, laws and audit log")
    commands = parser.add_subparsers(dest="db_command", required=True, metavar="COMMAND")

    p = commands.add_parser("migrate", help="create roles and database, apply pending migrations")
    p.add_argument(
        "--database-url",
        help="administrative DSN of the target database (default: RAI_DATABASE_URL)",
    )
    add_json_flag(p)
    p.set_defaults(handler=run_migrate)

    p = commands.add_parser(
        "verify-chain",
        help="recompute a tenant's hash-chained audit log (integrity_checks); exit 1 if it is"
        " broken or empty",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    add_json_flag(p)
    p.set_defaults(handler=run_verify_chain)


def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    dsn = args.database_url or settings.database_url
    report = asyncio.run(migrate_database(dsn, settings))
    if args.json:
        print_json(
            {
                "database": report.database,
                "current_version": report.current_version,
                "applied": report.applied,
                "database_url": redacted_dsn(dsn),
            }
        )
        return 0
    applied = ", ".join(map(str, report.applied)) or "none (already current)"
    print(f"database {report.database} at version {report.current_version}; applied: {applied}")
    print(f"  {redacted_dsn(dsn)}")
    return 0


def run_verify_chain(args: argparse.Namespace, settings: Settings) -> int:
    async def verify() -> ChainVerdict:
        async with app_database(settings) as db:
            return await verify_chain(db, args.tenant)

    verdict = asyncio.run(verify())
    # An empty log fails the check: a tenant always has at least its creation recorded.
    ok = verdict.ok and verdict.rows > 0
    if args.json:
        print_json(
            {
                "tenant_id": verdict.tenant_id,
                "ok": ok,
                "rows": verdict.rows,
                "head_seq": verdict.head_seq,
                "head_hash": verdict.head_hash,
                "problems": verdict.problems,
            }
        )
        return 0 if ok else 1
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
    return 0 if ok else 1
