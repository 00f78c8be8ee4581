"""``rai model list | rollback | download | approve``: a tenant's model versions, rollback with
its cooldown (M23), a version's artifact at its pinned S3 version, and the approval of a
challenger that has no champion. The shadow evaluation is ``rai evaluation``; a version's signed
provenance is ``rai provenance``.

``rai model approve --model-version ID --reason TEXT [--approver NAME]``: a challenger whose
model has no PRODUCTION version is not promoted on the evaluation's say-so; it waits in SHADOW
for this approval (or for enough outcomes no worse than the baseline, see
``domain/promotion.py``). The approval goes to the version's ``ShadowEvaluation`` as its
validated ``approve`` update (``starter.approve_model``); the evaluation moves the version to
CANARY with "approved by NAME: TEXT" in the status history and the audit chain, and answers.
Exit 0 approved (the version is in CANARY), 1 refused (not waiting for an approval, a blank
reason...), 3 no running evaluation of that version, 4 Temporal unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from cli.common import (
    app_database,
    object_store,
    parse_model_id,
    parse_tenant,
    temporal,
    trusted_keys,
)
from cli.errors import CommandError
from cli.output import add_json_flag, print_json
from domain.policies import ROLLBACK_COOLDOWN, cooldown_ends_at
from domain.promotion import Approval
from services.keys import PlatformKeyError, load_platform_signer
from services.promotion import ModelVersionSummary, list_model_versions
from services.provenance import DownloadedArtifact, download_artifact
from services.registry import ModelRegistryService, Rollback
from settings import Settings


def register(groups: Any) -> None:
    model = groups.add_parser("model", help="model versions: list, rollback, download, approve")
    commands = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    p = commands.add_parser("list", help="a tenant's model versions and their status")
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--model", help="only this model name")
    add_json_flag(p)
    p.set_defaults(handler=run_list)
    p = commands.add_parser(
        "rollback",
        help="PRODUCTION -> ROLLED_BACK, the previous version back to PRODUCTION;"
        " starts the 7-day retraining cooldown (exit 3 if there is no PRODUCTION version)",
    )
    p.add_argument("--tenant", required=True, type=parse_tenant)
    p.add_argument("--model", required=True, help="model name")
    p.add_argument("--reason", default="manual rollback", help="recorded with the move")
    add_json_flag(p)
    p.set_defaults(handler=run_rollback)
    p = commands.add_parser(
        "download",
        help="fetch a model version's artifact at its pinned S3 version; kept only if it hashes"
        " to the record signed by a pinned platform key (exit 3 if the tenant has no such"
        " version)",
    )
    p.add_argument("model_version_id", type=parse_model_id, metavar="MODEL_VERSION_ID")
    p.add_argument("--tenant", required=True, type=parse_tenant, help="tenant id (UUID)")
    p.add_argument("--out", required=True, type=Path, help="where to write the artifact")
    add_json_flag(p)
    p.set_defaults(handler=run_download)
    p = commands.add_parser(
        "approve",
        help="approve a SHADOW model version that has no PRODUCTION champion (-> CANARY;"
        " exit 3 if no evaluation of it is running)",
    )
    p.add_argument("--model-version", required=True, type=parse_model_id, metavar="ID")
    p.add_argument("--reason", required=True, help="why; recorded with the approval")
    p.add_argument(
        "--approver", default=None, help="who approves (default: the login name of this process)"
    )
    add_json_flag(p)
    p.set_defaults(handler=run_approve)


def run_list(args: argparse.Namespace, settings: Settings) -> int:
    async def listing() -> list[ModelVersionSummary]:
        async with app_database(settings) as db:
            return await list_model_versions(db, args.tenant, args.model)

    versions = asyncio.run(listing())
    if args.json:
        print_json({"model_versions": versions})
        return 0
    for v in versions:
        print(
            f"{v.id}  {v.model_name} v{v.version}  {v.status.value:<11}"
            f"  since {v.status_changed_at:%Y-%m-%d %H:%M:%S %Z}"
        )
    print(f"{len(versions)} model version(s)")
    return 0


def run_rollback(args: argparse.Namespace, settings: Settings) -> int:
    try:
        platform = load_platform_signer(settings)
    except PlatformKeyError as exc:
        raise CommandError(str(exc)) from exc

    async def rollback() -> Rollback:
        # The registry service is built whole, as the worker builds it; rollback itself only
        # touches the database.
        async with app_database(settings) as db, object_store(settings) as store:
            registry = ModelRegistryService(db, store, platform)
            return await registry.rollback(args.tenant, args.model, reason=args.reason)

    done = asyncio.run(rollback())
    ends = cooldown_ends_at(done.at)
    if args.json:
        print_json(
            {
                "rolled_back": done.rolled_back,
                "restored": done.restored,
                "at": done.at,
                "cooldown_ends_at": ends,
            }
        )
        return 0
    print(f"rolled back    {done.rolled_back} (PRODUCTION -> ROLLED_BACK)")
    if done.restored is not None:
        print(f"restored       {done.restored} (ARCHIVED -> PRODUCTION)")
    else:
        print(f"restored       nothing: model {args.model} has no archived version to restore")
    print(
        f"cooldown       {ROLLBACK_COOLDOWN.days} days: no retraining of this tenant until"
        f" {ends:%Y-%m-%d %H:%M:%S %Z}"
    )
    return 0


def run_download(args: argparse.Namespace, settings: Settings) -> int:
    out: Path = args.out
    if out.is_dir():
        raise CommandError(f"--out {out} is a directory; name the file to write")
    if not out.parent.is_dir():
        raise CommandError(f"--out {out}: no directory {out.parent}")
    trusted = trusted_keys(settings)

    async def download() -> DownloadedArtifact:
        async with app_database(settings) as db, object_store(settings) as store:
            return await download_artifact(
                db, store, trusted, args.tenant, args.model_version_id, out
            )

    done = asyncio.run(download())
    if args.json:
        print_json(
            {
                "out": done.path,
                "model_version_id": args.model_version_id,
                "artifact_uri": done.artifact_uri,
                "sha256": done.sha256,
                "size": done.size,
            }
        )
        return 0
    print(f"wrote     {done.path} ({done.size} bytes)")
    print(f"from      {done.artifact_uri}")
    print(f"sha256    {done.sha256} (matches the signed record)")
    return 0


def run_approve(args: argparse.Namespace, settings: Settings) -> int:
    approver = args.approver if args.approver is not None else getpass.getuser()
    try:
        approval = Approval(approver=approver, reason=args.reason)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise CommandError(f"invalid approval: {problems}") from None

    # Temporal's client is imported here: the other `rai model` commands do not need it.
    from starter import ApprovalRefused, approve_model

    async def approve() -> str:
        async with temporal(settings) as client:
            try:
                return await approve_model(client, args.model_version, approval)
            except ApprovalRefused as exc:
                raise CommandError(f"approval refused: {exc}") from exc

    detail = asyncio.run(approve())
    if args.json:
        print_json(
            {
                "model_version_id": args.model_version,
                "approved_by": approval.approver,
                "reason": approval.reason,
                "detail": detail,
            }
        )
    else:
        print(detail)
    return 0
