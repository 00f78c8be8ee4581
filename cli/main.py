"""Entry point of the ``rai`` console script."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from cli import (
    api_commands,
    approve_commands,
    bench_commands,
    db_commands,
    demo_commands,
    dev_commands,
    drift_commands,
    keys_commands,
    model_commands,
    pipeline_commands,
    schedule_commands,
    storage_commands,
    tenant_commands,
    verify_commands,
)
from cli.errors import CommandError
from settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rai", description="RAI Level D: governed, self-retraining models."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    groups = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    dev_commands.register(groups)
    db_commands.register(groups)
    tenant_commands.register(groups)
    keys_commands.register(groups)
    drift_commands.register(groups)
    bench_commands.register(groups)
    verify_commands.register(groups)
    storage_commands.register(groups)
    pipeline_commands.register(groups)
    api_commands.register(groups)
    model_commands.register(groups)
    approve_commands.register(groups)  # adds `rai model approve`: after model_commands
    schedule_commands.register(groups)
    demo_commands.register(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    handler: Handler = args.handler
    try:
        return handler(args, Settings())
    except CommandError as exc:
        print(f"rai: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
