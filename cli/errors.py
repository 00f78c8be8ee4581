"""The one exception a subcommand raises to stop with a clear one-line message."""

from __future__ import annotations


class CommandError(Exception):
    """Printed as ``rai: error: <message>``; the process exits with ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
