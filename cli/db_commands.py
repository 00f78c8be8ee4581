"""``rai db migrate`` and ``rai db verify-chain``.

``verify-chain`` recomputes a tenant's hash-chained audit log and holds it against its newest
signed checkpoints (``services.checkpoints``, written by ``rai audit checkpoint``), naming the
checkpoint and the position where it no longer holds: an edited row, a suffix rewritten and
recomputed by a superuser, or a cut tail.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING, Any

from cli.common import (
    app_database,
    checkpoint_service,
    migrate_database,
    object_store,
    parse_tenant,
    trusted_keys,
)
from cli.output import add_json_flag, print_json
from db.integrity import ChainVerdict, verify_chain
from settings import Settings, redacted_dsn

if TYPE_CHECKING:
    from services.checkpoints import ChainAssessment


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
        help="recompute a tenant's hash-chained audit log (integrity_checks) and hold it against"
        " its signed checkpoints; exit 1 if it is broken, empty or a checkpoint does not hold",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    p.add_argument(
        "--require-checkpoint",
        action="store_true",
        help="fail unless a signed checkpoint was checked (S3 reachable, one written)",
    )
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
    """The chain recomputed, then held against its signed checkpoints. Without S3 credentials
    only the chain is checked (and said so)."""
    s3_configured = bool(settings.s3_access_key and settings.s3_secret_key)

    async def assess() -> tuple[ChainVerdict, ChainAssessment | None]:
        if not s3_configured:
            async with app_database(settings) as db:
                return await verify_chain(db, args.tenant), None
        trusted = trusted_keys(settings)
        async with app_database(settings) as db, object_store(settings) as store:
            assessment = await checkpoint_service(settings, db, store, trusted).assess(args.tenant)
            return assessment.verdict, assessment

    verdict, assessment = asyncio.run(assess())
    # An empty log fails the check: a tenant always has at least its creation recorded.
    ok = assessment.ok if assessment else (verdict.ok and verdict.rows > 0)
    if args.require_checkpoint and (assessment is None or assessment.newest_holding is None):
        ok = False
    if args.json:
        print_json(
            {
                "tenant_id": verdict.tenant_id,
                "ok": ok,
                "rows": verdict.rows,
                "head_seq": verdict.head_seq,
                "head_hash": verdict.head_hash,
                "problems": verdict.problems,
                "checkpoints": _checkpoints_json(assessment),
            }
        )
        return 0 if ok else 1
    if verdict.rows == 0:
        print(f"tenant {verdict.tenant_id}: no audit log rows (unknown tenant or empty log)")
        return 1
    for problem in verdict.problems:
        print(f"BROKEN  {problem}")
    _print_checkpoints(assessment, require=args.require_checkpoint)
    state = "intact" if ok else "BROKEN"
    print(
        f"tenant {verdict.tenant_id}: chain {state}, {verdict.rows} rows,"
        f" head seq {verdict.head_seq} {verdict.head_hash}"
    )
    return 0 if ok else 1


def _checkpoints_json(assessment: ChainAssessment | None) -> dict[str, Any]:
    if assessment is None:
        return {"checked": False, "found": None, "findings": [], "uncovered_rows": None}
    return {
        "checked": True,
        "found": assessment.checkpoints,
        "findings": [
            {
                "key": finding.key,
                "holds": finding.holds,
                "detail": finding.detail,
                "size": finding.checkpoint.size if finding.checkpoint else None,
                "head_hash": finding.checkpoint.head_hash if finding.checkpoint else None,
                "time": finding.checkpoint.time if finding.checkpoint else None,
            }
            for finding in assessment.findings
        ],
        "uncovered_rows": assessment.uncovered_rows,
    }


def _print_checkpoints(assessment: ChainAssessment | None, *, require: bool) -> None:
    if assessment is None:
        label = "BROKEN " if require else "NOTE   "
        print(
            f"{label} checkpoints not checked: no S3 credentials (RAI_S3_ACCESS_KEY,"
            " RAI_S3_SECRET_KEY); a rewritten suffix or a cut tail cannot be detected without them"
        )
        return
    if not assessment.findings:
        label = "BROKEN " if require else "NOTE   "
        print(f"{label} no checkpoint yet: run `rai audit checkpoint --tenant T`")
        return
    for finding in assessment.findings:
        print(f"{'ok     ' if finding.holds else 'BROKEN '} checkpoint {finding.detail}")
    holding = assessment.newest_holding
    failing = [f for f in assessment.findings if not f.holds and f.checkpoint is not None]
    if holding is not None and holding.checkpoint is not None and failing:
        print(
            f"NOTE    the change lies after seq {holding.checkpoint.size} (the newest checkpoint"
            " that still holds)"
        )
    if assessment.uncovered_rows:
        print(
            f"NOTE    {assessment.uncovered_rows} row(s) after the newest holding checkpoint are"
            " not covered yet"
        )
