"""Secrets generated once and kept in the state directory, readable by the owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``; the file is mode 0600 from the moment it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    temporary.replace(path)


def read_or_create_secret(path: Path, generate: Callable[[], str]) -> str:
    """The secret stored at ``path``; on first use ``generate()`` makes it and it is stored.

    A file that has become readable by others is tightened back to 0600.
    """
    if not path.exists():
        write_private_file(path, generate() + "\n")
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_MODE:
        path.chmod(PRIVATE_MODE)
    return path.read_text().strip()
