"""How a subcommand stops: a one-line message and an exit code that means something.

0 ok; 1 a check or an operation failed; 2 usage (argparse); 3 not found; 4 a required service
(Postgres, Redis, S3, Temporal) cannot be reached. The shared openers in ``cli.common`` raise
:class:`ServiceUnavailable` and :class:`NotFound`, so every command reports them the same way.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1
    USAGE = 2
    NOT_FOUND = 3
    UNAVAILABLE = 4


class CommandError(Exception):
    """Printed as ``rai: error: <message>`` (``{"error": ...}`` with ``--json``) on stderr;
    the process exits with ``exit_code``."""

    exit_code: int = ExitCode.FAILED

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class NotFound(CommandError):
    """What the command names does not exist (for this tenant)."""

    exit_code = ExitCode.NOT_FOUND


class ServiceUnavailable(CommandError):
    """A service the command needs cannot be reached."""

    exit_code = ExitCode.UNAVAILABLE
