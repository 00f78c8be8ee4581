from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from devstack.errors import StackError
from devstack.postgres import (
    OsAccount,
    PrivatePostgres,
    blocked_ancestor,
    can_search,
    require_reachable,
)

pytestmark = pytest.mark.unit

POSTGRES = OsAccount("postgres", 101, 104, (104, 103))


def _directory(mode: int, uid: int, gid: int) -> os.stat_result:
    return os.stat_result((stat.S_IFDIR | mode, 0, 0, 2, uid, gid, 4096, 0, 0, 0))


@pytest.mark.parametrize(
    ("mode", "uid", "gid", "allowed"),
    [
        (0o700, 101, 0, True),  # its own directory
        (0o600, 101, 0, False),
        (0o710, 0, 103, True),  # through a supplementary group
        (0o700, 0, 103, False),
        (0o701, 0, 0, True),  # as anybody else
        (0o770, 0, 0, False),  # e.g. /tmp/pytest-of-root, /root
    ],
)
def test_search_permission(mode: int, uid: int, gid: int, allowed: bool) -> None:
    assert can_search(_directory(mode, uid, gid), POSTGRES) is allowed


def _me() -> OsAccount:
    return OsAccount("me", os.getuid(), os.getgid(), (os.getgid(),))


def test_the_first_closed_ancestor_is_named(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    target = closed / "state" / "postgres"
    target.mkdir(parents=True)
    closed.chmod(0o600)  # even its owner may not pass
    try:
        assert blocked_ancestor(target, _me()) == closed
        expected = rf"{re.escape(str(closed))} is not searchable by it; .*`chmod o\+x "
        with pytest.raises(StackError, match=expected):
            require_reachable(target, _me())
    finally:
        closed.chmod(0o755)


def test_open_and_missing_directories_pass(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir()
    assert blocked_ancestor(tmp_path / "open" / "postgres", _me()) is None
    assert blocked_ancestor(tmp_path / "not" / "yet" / "there", _me()) is None


def test_dsn_names_the_superuser_and_the_configured_database(tmp_path: Path) -> None:
    server = PrivatePostgres(tmp_path, port=55432, database="rai")
    assert server.url(None) == "postgresql://postgres@127.0.0.1:55432/rai"
    assert server.configured_ports() == {"PostgreSQL": 55432}
    assert PrivatePostgres(tmp_path).configured_ports() == {}
