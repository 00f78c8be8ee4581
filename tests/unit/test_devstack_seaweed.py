from __future__ import annotations

import itertools
import json
import stat
from pathlib import Path

import pytest

from devstack.seaweed import (
    choose_grpc_ports,
    identities_config,
    load_or_create_credentials,
    weed_server_argv,
)
from devstack.secretfile import read_or_create_secret

pytestmark = pytest.mark.unit

HTTP = {"s3": 8333, "master": 9333, "volume": 18080, "filer": 18888}


def test_grpc_ports_are_kept_while_free() -> None:
    previous = {"master": 40001, "volume": 40002, "filer": 40003, "s3": 40004}
    assert choose_grpc_ports(previous, set(HTTP.values()), in_use=lambda _: False) == previous


def test_grpc_ports_avoid_taken_reserved_and_duplicate_ports() -> None:
    fresh = itertools.count(50000)
    previous = {"master": 9333, "volume": 40002, "filer": 40002, "s3": 40009}
    chosen = choose_grpc_ports(
        previous,
        set(HTTP.values()),
        in_use=lambda port: port == 40009,
        fresh=lambda: next(fresh),
    )
    assert chosen == {"master": 50000, "volume": 40002, "filer": 50001, "s3": 50002}


def test_server_command_line(tmp_path: Path) -> None:
    grpc = {"master": 1, "volume": 2, "filer": 3, "s3": 4}
    argv = weed_server_argv(Path("/bin/weed"), root=tmp_path, http_ports=HTTP, grpc_ports=grpc)
    assert argv[:3] == ["/bin/weed", f"-logdir={tmp_path / 'logs'}", "server"]
    for flag in (
        f"-dir={tmp_path / 'data'}",
        "-s3",
        "-s3.port=8333",
        f"-s3.config={tmp_path / 's3.json'}",
        "-master.port=9333",
        "-volume.port=18080",
        "-filer.port=18888",
        "-master.port.grpc=1",
        "-volume.port.grpc=2",
        "-filer.port.grpc=3",
        "-s3.port.grpc=4",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-volume.max=300",
        "-master.volumeSizeLimitMB=32",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.autoCreateBucket=false",
    ):
        assert flag in argv


def test_identities_have_one_admin_and_no_anonymous(tmp_path: Path) -> None:
    credentials = load_or_create_credentials(tmp_path / "credentials.json")
    config = identities_config(credentials)
    assert len(config["identities"]) == 1
    (admin,) = config["identities"]
    assert admin["name"] != "anonymous"
    assert admin["credentials"] == [
        {"accessKey": credentials.access_key, "secretKey": credentials.secret_key}
    ]
    assert "Admin" in admin["actions"]


def test_credentials_are_made_once_and_kept_private(tmp_path: Path) -> None:
    path = tmp_path / "s3" / "credentials.json"
    first = load_or_create_credentials(path)
    assert load_or_create_credentials(path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["secret_key"] == first.secret_key
    assert len(first.access_key) == 20
    assert len(first.secret_key) >= 40
    assert first.secret_key not in repr(first)
    assert load_or_create_credentials(tmp_path / "other.json") != first


def test_a_loosened_secret_file_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "sse.key"
    key = read_or_create_secret(path, lambda: "k" * 64)
    path.chmod(0o644)
    assert read_or_create_secret(path, lambda: "other") == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
