"""``rai model approve --model-version ID --reason TEXT [--approver NAME] [--json]``, a command
of the ``rai model`` group (``cli.model_commands`` adds it).

A challenger whose model has no PRODUCTION version is not promoted on the evaluation's say-so:
it waits in SHADOW for this approval (or for enough outcomes no worse than the baseline, see
``domain/promotion.py``). The approval goes to the version's ``ShadowEvaluation`` as its
validated ``approve`` update (``starter.approve_model``); the evaluation moves the version to
CANARY with "approved by NAME: TEXT" in the status history and the audit chain, and answers.

Exit codes: 0 approved (the version is in CANARY), 1 refused (not waiting for an approval,
blank reason...), 3 no running evaluation for that version, 4 Temporal unreachable. With
``--json`` an approval prints ``{"model_version_id", "approved_by", "reason", "detail"}``; a
refusal is ``{"error": ...}`` on stderr, as for every command.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
from typing import Any

from pydantic import ValidationError

from cli.common import parse_model_id, temporal
from cli.errors import CommandError
from cli.output import add_json_flag, print_json
from domain.promotion import Approval
from settings import Settings


def add_approve(commands: Any) -> None:
    """Add ``approve`` to the ``rai model`` group's subcommands."""
    p = commands.add_parser(
        "approve",
        help="approve a SHADOW model version that has no PRODUCTION champion (-> CANARY;"
        " exit 3 if no evaluation of it is running)",
    )
    p.add_argument("--model-version", required=True, type=parse_model_id, metavar="ID")
    p.add_argument("--reason", required=True, help="why; recorded with the approval")
    p.add_argument(
        "--approver",
        default=None,
        help="who approves (default: the login name of this process)",
    )
    add_json_flag(p)
    p.set_defaults(handler=run_approve)


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
