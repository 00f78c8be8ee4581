"""``rai audit checkpoint`` and the checkpoint half of ``rai db verify-chain``.

A checkpoint is the platform key's signature over a tenant's audit-chain head (size, head row
hash, time), written to the WORM datasets bucket under a COMPLIANCE retention
(``services.checkpoints``). ``rai db verify-chain`` recomputes the chain and holds it against its
newest checkpoints, naming the checkpoint and the position where it no longer holds.

Exit codes: 0 ok; 1 a chain is broken or a checkpoint does not hold; 3 no such tenant;
4 Postgres or S3 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from adapters.objectstore import (
    ObjectStore,
    ObjectStoreConfigError,
    ObjectStoreError,
    ObjectStoreUnavailableError,
)
from cli.common import open_app_database, parse_tenant
from cli.errors import CommandError
from db.integrity import ChainVerdict, TenantListError, all_tenant_ids, verify_chain
from db.repository import Database
from domain.checkpoint import CheckpointFinding
from domain.signing import KeyMaterialError
from services.checkpoints import ChainAssessment, ChainBrokenError, CheckpointService
from services.errors import NotFoundError
from services.keys import PlatformKeyError, load_platform_signer
from services.trust import TrustConfigError, trusted_platform_keys
from settings import Settings, redacted_dsn

T = TypeVar("T")

EXIT_FAILED = 1
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4


def register(groups: Any) -> None:
    parser = groups.add_parser("audit", help="signed checkpoints of the audit chain")
    commands = parser.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    p = commands.add_parser(
        "checkpoint",
        help="verify a tenant's audit chain and sign its head into the WORM bucket;"
        " exit 1 if a chain is broken",
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


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON document on stdout")


def add_verify_chain_arguments(parser: argparse.ArgumentParser) -> None:
    """``rai db verify-chain``'s checkpoint options (the command lives in ``db_commands``)."""
    parser.add_argument(
        "--require-checkpoint",
        action="store_true",
        help="fail unless a signed checkpoint was checked (S3 reachable, one written)",
    )
    add_json_flag(parser)


def print_json(document: dict[str, Any]) -> None:
    print(json.dumps(document, default=str), flush=True)


def finding_json(finding: CheckpointFinding) -> dict[str, Any]:
    checkpoint = finding.checkpoint
    return {
        "key": finding.key,
        "holds": finding.holds,
        "detail": finding.detail,
        "size": checkpoint.size if checkpoint else None,
        "head_hash": checkpoint.head_hash if checkpoint else None,
        "time": checkpoint.time.isoformat() if checkpoint else None,
    }


@dataclass(frozen=True)
class AuditServices:
    db: Database
    store: ObjectStore
    checkpoints: CheckpointService


@asynccontextmanager
async def audit_services(settings: Settings, *, sign: bool) -> AsyncIterator[AuditServices]:
    """The checkpoint service over the rai_app pool and the S3 store of ``settings``;
    ``sign``: with the platform key, to write checkpoints."""
    try:
        trusted = trusted_platform_keys(settings)
        platform = load_platform_signer(settings) if sign else None
    except (TrustConfigError, PlatformKeyError, KeyMaterialError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    if platform is not None and platform.key_id not in trusted:
        raise CommandError(
            f"the platform key {platform.key_id} is not among the trusted keys"
            f" ({trusted.describe()}): its checkpoints would not verify;"
            " set RAI_TRUSTED_PLATFORM_KEY to include it"
        )
    try:
        store = ObjectStore.from_settings(settings)
    except ObjectStoreConfigError as exc:
        raise CommandError(f'{exc} (is the stack up? eval "$(rai dev env)")') from exc
    db = await open_app_database(settings)
    try:
        async with store:
            yield AuditServices(
                db,
                store,
                CheckpointService(
                    db,
                    store,
                    trusted,
                    bucket=settings.s3_datasets_bucket,
                    retention_days=settings.dataset_retention_days,
                    platform=platform,
                ),
            )
    finally:
        await db.close()


def run_async(work: Callable[[], Coroutine[Any, Any, T]], settings: Settings) -> T:
    """Run ``work``; S3 and Postgres trouble become one line with its exit code."""
    try:
        return asyncio.run(work())
    except ObjectStoreUnavailableError as exc:
        raise CommandError(
            f"cannot reach S3 at {settings.s3_endpoint_url}: {exc}", exit_code=EXIT_UNAVAILABLE
        ) from exc
    except ObjectStoreError as exc:
        raise CommandError(f"S3: {exc}") from exc
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        raise CommandError(f"lost the database: {exc}", exit_code=EXIT_UNAVAILABLE) from exc


def run_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    async def tenants() -> list[UUID]:
        if args.tenant is not None:
            return [args.tenant]
        try:
            return await all_tenant_ids(settings.database_url)
        except TenantListError as exc:
            raise CommandError(str(exc)) from exc
        except (OSError, asyncpg.PostgresError) as exc:
            raise CommandError(
                f"cannot list tenants at {redacted_dsn(settings.database_url)}: {exc}",
                exit_code=EXIT_UNAVAILABLE,
            ) from exc

    async def checkpoint_all() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        written, failed = [], []
        async with audit_services(settings, sign=True) as services:
            for tenant in await tenants():
                try:
                    stored = await services.checkpoints.checkpoint(tenant)
                except NotFoundError as exc:
                    if args.tenant is not None:
                        raise CommandError(str(exc), exit_code=EXIT_NOT_FOUND) from exc
                    failed.append({"tenant_id": str(tenant), "error": str(exc)})
                    continue
                except ChainBrokenError as exc:
                    failed.append({"tenant_id": str(tenant), "error": str(exc)})
                    continue
                written.append(
                    {
                        "tenant_id": str(tenant),
                        "size": stored.checkpoint.size,
                        "head_hash": stored.checkpoint.head_hash,
                        "time": stored.checkpoint.time.isoformat(),
                        "key": stored.key,
                        "bucket": settings.s3_datasets_bucket,
                        "signed_by": stored.signed_by,
                        "written": stored.written,
                    }
                )
        return written, failed

    written, failed = run_async(checkpoint_all, settings)
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
    return EXIT_FAILED if failed else 0


def run_verify_chain(args: argparse.Namespace, settings: Settings) -> int:
    """``rai db verify-chain --tenant T``: the chain recomputed, then held against its signed
    checkpoints. Without S3 credentials only the chain is checked (and said so)."""
    s3_configured = bool(settings.s3_access_key and settings.s3_secret_key)

    async def assess() -> ChainAssessment | ChainVerdict:
        if not s3_configured:
            db = await open_app_database(settings)
            try:
                return await verify_chain(db, args.tenant)
            finally:
                await db.close()
        async with audit_services(settings, sign=False) as services:
            return await services.checkpoints.assess(args.tenant)

    result = run_async(assess, settings)
    assessment: ChainAssessment | None
    if isinstance(result, ChainAssessment):
        assessment, verdict = result, result.verdict
    else:
        assessment, verdict = None, result
    ok = assessment.ok if assessment else (verdict.ok and verdict.rows > 0)
    if args.require_checkpoint and (assessment is None or assessment.newest_holding is None):
        ok = False
    if args.json:
        print_json(
            {
                "tenant_id": str(verdict.tenant_id),
                "ok": ok,
                "rows": verdict.rows,
                "head_seq": verdict.head_seq,
                "head_hash": verdict.head_hash,
                "problems": list(verdict.problems),
                "checkpoints": _checkpoints_json(assessment),
            }
        )
        return 0 if ok else EXIT_FAILED
    if verdict.rows == 0:
        print(f"tenant {verdict.tenant_id}: no audit log rows (unknown tenant or empty log)")
        return EXIT_FAILED
    for problem in verdict.problems:
        print(f"BROKEN  {problem}")
    _print_checkpoints(assessment, require=args.require_checkpoint)
    state = "intact" if ok else "BROKEN"
    print(
        f"tenant {verdict.tenant_id}: chain {state}, {verdict.rows} rows,"
        f" head seq {verdict.head_seq} {verdict.head_hash}"
    )
    return 0 if ok else EXIT_FAILED


def _checkpoints_json(assessment: ChainAssessment | None) -> dict[str, Any]:
    if assessment is None:
        return {"checked": False, "found": None, "findings": [], "uncovered_rows": None}
    return {
        "checked": True,
        "found": assessment.checkpoints,
        "findings": [finding_json(f) for f in assessment.findings],
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
