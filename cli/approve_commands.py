"""``rai model approve --model-version ID --reason TEXT [--approver NAME] [--json]``.

A challenger whose model has no PRODUCTION version is not promoted on the evaluation's say-so:
it waits in SHADOW for this approval (or for enough outcomes no worse than the baseline, see
``domain/promotion.py``). The approval goes to the version's ``ShadowEvaluation`` as its
validated ``approve`` update; the evaluation moves the version to CANARY with "approved by
NAME: TEXT" in the status history and the audit chain, and answers.

Exit codes: 0 approved (the version is in CANARY), 1 refused (not waiting for an approval,
blank reason...), 3 no running evaluation for that version, 4 Temporal unreachable. With
``--json`` the one line printed is ``{"model_version_id", "approved_by", "reason", "ok",
"detail"}`` whatever the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
from typing import Any
from uuid import UUID

from pydantic import ValidationError

from cli.common import parse_model_id
from cli.errors import CommandError
from domain.promotion import Approval
from settings import Settings

EXIT_REFUSED = 1
EXIT_NOT_FOUND = 3
EXIT_UNREACHABLE = 4


def register(groups: Any) -> None:
    """Adds ``approve`` to the ``rai model`` group (registered before this module)."""
    model: argparse.ArgumentParser = groups.choices["model"]
    # argparse offers no public way back to a parser's subcommands once added.
    commands = next(
        action for action in model._actions if isinstance(action, argparse._SubParsersAction)
    )
    p = commands.add_parser(
        "approve",
        help="approve a SHADOW model version that has no PRODUCTION champion (-> CANARY)",
    )
    p.add_argument("--model-version", required=True, type=parse_model_id, metavar="ID")
    p.add_argument("--reason", required=True, help="why; recorded with the approval")
    p.add_argument(
        "--approver",
        default=None,
        help="who approves (default: the login name of this process)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(handler=run_approve)


def run_approve(args: argparse.Namespace, settings: Settings) -> int:
    approver = args.approver if args.approver is not None else getpass.getuser()
    try:
        approval = Approval(approver=approver, reason=args.reason)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _fail(args, approver, f"invalid approval: {problems}", EXIT_REFUSED)

    # Temporal's client is imported here: the other `rai model` commands do not need it.
    from starter import ApprovalRefused, EvaluationNotFound, approve_model, connect_temporal

    async def approve() -> str:
        client = await connect_temporal(settings)
        return await approve_model(client, args.model_version, approval)

    try:
        detail = asyncio.run(approve())
    except EvaluationNotFound as exc:
        return _fail(args, approver, str(exc), EXIT_NOT_FOUND)
    except ApprovalRefused as exc:
        return _fail(args, approver, f"approval refused: {exc}", EXIT_REFUSED)
    except RuntimeError as exc:  # temporalio raises RuntimeError when it cannot connect
        return _fail(
            args,
            approver,
            f"cannot reach Temporal at {settings.temporal_address}: {exc}",
            EXIT_UNREACHABLE,
        )
    _report(args.json, args.model_version, approval.approver, approval.reason, True, detail)
    return 0


def _fail(args: argparse.Namespace, approver: str, detail: str, exit_code: int) -> int:
    if args.json:
        _report(True, args.model_version, approver, args.reason, False, detail)
        return exit_code
    raise CommandError(detail, exit_code=exit_code)


def _report(
    as_json: bool, model_version_id: UUID, approver: str, reason: str, ok: bool, detail: str
) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "model_version_id": str(model_version_id),
                    "approved_by": approver,
                    "reason": reason,
                    "ok": ok,
                    "detail": detail,
                }
            )
        )
    else:
        print(detail)
