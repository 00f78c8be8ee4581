"""The exceptions of the local stack: each one reads as a one-line explanation."""

from __future__ import annotations

from adapters.processes import ProcessError

# The stack cannot do what was asked; ``str(exc)`` says why in one line, and ``log_tail`` holds
# the last lines of the log of a part that failed to start. The stack's parts are processes
# (``adapters.processes``), whose failures are the stack's: one type, so one ``except``.
StackError = ProcessError


class BinaryNotFoundError(StackError):
    """A program the stack needs is not installed; the message says how to install it."""
