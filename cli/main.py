"""Entry point of the ``rai`` console script.

Exit codes (``cli.errors.ExitCode``): 0 ok; 1 a check or an operation failed; 2 usage; 3 not
found; 4 a required service (Postgres, Redis, S3, Temporal) cannot be reached. With ``--json``
a reporting command prints exactly one JSON document on stdout, and an error (usage errors
included) is ``{"error": "..."}`` on stderr with the same exit code.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

from cli.errors import CommandError, ExitCode
from settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]

# Command group -> the module that registers it, in the order of ``rai --help``. A command line
# naming one group imports only that module: the others pull in Temporal, S3 or scipy, which
# take seconds to import, and scripts call rai often.
GROUPS = {
    "dev": "cli.dev_commands",
    "db": "cli.db_commands",
    "tenant": "cli.tenant_commands",
    "keys": "cli.keys_commands",
    "token": "cli.token_commands",
    "storage": "cli.storage_commands",
    "drift": "cli.drift_commands",
    "bench": "cli.bench_commands",
    "verify": "cli.verify_commands",
    "provenance": "cli.provenance_commands",
    "audit": "cli.audit_commands",
    "worker": "cli.worker_commands",
    "api": "cli.api_commands",
    "pipeline": "cli.pipeline_commands",
    "dlq": "cli.dlq_commands",
    "schedule": "cli.schedule_commands",
    "model": "cli.model_commands",
    "evaluation": "cli.evaluation_commands",
    "demo": "cli.demo_commands",
}


class JsonErrorParser(argparse.ArgumentParser):
    """Reports a usage error as ``{"error": ...}`` (used when the command line asks for
    ``--json``); subcommand parsers inherit the class."""

    def error(self, message: str) -> NoReturn:
        print(json.dumps({"error": f"{self.prog}: {message}"}), file=sys.stderr)
        sys.exit(ExitCode.USAGE)


def build_parser(
    parser_class: type[argparse.ArgumentParser] = argparse.ArgumentParser,
    only: str | None = None,
) -> argparse.ArgumentParser:
    """The whole ``rai`` parser, or (``only``) one with just that command group."""
    parser = parser_class(
        prog="rai",
        description="RAI Level D: governed, self-retraining models.",
        epilog="exit codes: 0 ok, 1 a check or operation failed, 2 usage, 3 not found,"
        " 4 a required service (Postgres, Redis, S3, Temporal) unreachable",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    names: Iterable[str] = [only] if only in GROUPS else GROUPS
    for name in names:
        importlib.import_module(GROUPS[name]).register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    group = next((word for word in arguments if not word.startswith("-")), None)
    parser = build_parser(
        JsonErrorParser if "--json" in arguments else argparse.ArgumentParser, only=group
    )
    args = parser.parse_args(arguments)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args, Settings())
    except CommandError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc)}), file=sys.stderr)
        else:
            print(f"rai: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    finally:
        # Temporal clients hold a native connection that only the cyclic garbage collector
        # releases; one still alive while the interpreter shuts down can abort the process.
        # Commands run their Temporal work through cli.common.run_with_temporal, which
        # releases (and checks) their client; this collection is the safety net for the rest.
        gc.collect()


if __name__ == "__main__":
    sys.exit(main())
