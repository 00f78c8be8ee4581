"""``rai keys``: platform key, device key pairs, registration and revocation."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from cli.main import main
from domain.signing import Signer
from settings import app_dsn_for

pytestmark = pytest.mark.e2e


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_platform_key_is_created_once_and_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "keys" / "platform.ed25519"
    monkeypatch.setenv("RAI_PLATFORM_KEY_FILE", str(key_file))
    monkeypatch.delenv("RAI_PLATFORM_SIGNING_KEY", raising=False)
    code, first, _ = run(capsys, "keys", "platform")
    assert code == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    code, second, _ = run(capsys, "keys", "platform")
    assert (code, second) == (0, first)
    assert key_file.read_text().strip() not in first


async def test_generate_register_revoke(
    tmp_path: Path,
    db_admin_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("RAI_DATABASE_URL", db_admin_dsn)
    monkeypatch.delenv("RAI_APP_DATABASE_URL", raising=False)
    seed = tmp_path / "device.key"
    code, out, _ = await asyncio.to_thread(run, capsys, "keys", "generate", "--out", str(seed))
    assert code == 0
    words = out.split()  # key id K / public key P / seed FILE
    kid, public_key = words[2], words[5]
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    code, _, err = await asyncio.to_thread(run, capsys, "keys", "generate", "--out", str(seed))
    assert code == 1
    assert "never overwritten" in err

    code, out, _ = await asyncio.to_thread(run, capsys, "tenant", "create", "farm")
    tenant = out.strip()
    args = ("keys", "register", "--tenant", tenant, "--public-key", public_key)
    assert (await asyncio.to_thread(run, capsys, *args))[:2] == (0, kid + "\n")
    assert (await asyncio.to_thread(run, capsys, *args))[:2] == (0, kid + "\n")  # idempotent
    code, _, err = await asyncio.to_thread(
        run, capsys, "keys", "register", "--tenant", tenant, "--public-key", "abcd"
    )
    assert (code, err.strip()) == (
        1,
        "rai: error: --public-key must be 32 bytes (64 hex characters)",
    )
    revoke = ("keys", "revoke", "--tenant", tenant, kid)
    assert (await asyncio.to_thread(run, capsys, *revoke))[0] == 0
    code, _, err = await asyncio.to_thread(run, capsys, *revoke)
    assert code == 1
    assert "no active key" in err
    code, _, err = await asyncio.to_thread(run, capsys, *args)
    assert code == 1
    assert "revoked" in err


async def test_platform_keys_are_registered_only_by_the_administrative_path(
    db_admin_dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = Signer.generate()
    monkeypatch.setenv("RAI_DATABASE_URL", db_admin_dsn)
    monkeypatch.delenv("RAI_APP_DATABASE_URL", raising=False)
    monkeypatch.setenv("RAI_PLATFORM_SIGNING_KEY", platform.seed_hex())
    code, out, _ = await asyncio.to_thread(run, capsys, "tenant", "create", "farm")
    tenant = out.strip()

    # the services' login may not plant a platform key
    as_app = ("keys", "register", "--tenant", tenant, "--purpose", "platform")
    code, _, err = await asyncio.to_thread(
        run, capsys, *as_app, "--public-key", platform.public_key.hex()
    )
    assert code == 1
    assert "only the administrative path registers platform keys" in err
    assert "rai keys platform register" in err

    register = ("keys", "platform", "register", "--tenant", tenant)
    code, out, _ = await asyncio.to_thread(run, capsys, *register)
    assert (code, out) == (0, f"platform key {platform.key_id} registered for tenant {tenant}\n")
    assert (await asyncio.to_thread(run, capsys, *register))[:2] == (0, out)  # idempotent

    # the administrative login is required: with the app login as RAI_DATABASE_URL it fails
    monkeypatch.setenv("RAI_DATABASE_URL", app_dsn_for(db_admin_dsn))
    code, _, err = await asyncio.to_thread(run, capsys, *register, "--public-key", "ab" * 32)
    assert code == 1
    assert "cannot act as rai_owner" in err
