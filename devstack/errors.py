"""The exceptions of the local stack: each one reads as a one-line explanation."""

from __future__ import annotations


class StackError(Exception):
    """The local stack cannot do what was asked; ``str(exc)`` says why in one line.

    ``log_tail`` holds the last lines of the log of a part that failed to start, so a caller
    can show them under the one-line message.
    """

    def __init__(self, message: str, *, log_tail: str | None = None) -> None:
        super().__init__(message)
        self.log_tail = log_tail


class BinaryNotFoundError(StackError):
    """A program the stack needs is not installed; the message says how to install it."""
