"""Pinned platform keys: parsed from configuration or the command line, never from data."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from domain.signing import Signer
from domain.trust import TrustedKeyError, TrustedKeys
from services.trust import TrustConfigError, trusted_keys_from_file_or_hex, trusted_platform_keys
from settings import Settings

pytestmark = pytest.mark.unit


def test_one_or_several_hex_keys() -> None:
    a, b = Signer.generate(), Signer.generate()
    keys = TrustedKeys.parse(f" {a.public_key.hex()},\n{b.public_key.hex()} ")
    assert dict(keys) == {a.key_id: a.public_key, b.key_id: b.public_key}
    assert keys.describe() == ", ".join(sorted([a.key_id, b.key_id]))


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "no trusted public key"), ("zz", "not a hex public key"), ("abcd", "32 bytes")],
)
def test_what_is_not_a_key_is_named(text: str, reason: str) -> None:
    with pytest.raises(TrustedKeyError, match=reason):
        TrustedKeys.parse(text)


def test_configuration_pins_before_the_local_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("RAI_TRUSTED_PLATFORM_KEY", "RAI_TRUSTED_PLATFORM_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    local, pinned, filed = Signer.generate(), Signer.generate(), Signer.generate()
    key_file = tmp_path / "trusted.pub"
    key_file.write_text(filed.public_key.hex() + "\n")
    base = Settings(platform_signing_key=SecretStr(local.seed_hex()))
    assert list(trusted_platform_keys(base)) == [local.key_id]
    with_file = base.model_copy(update={"trusted_platform_key_file": key_file})
    assert list(trusted_platform_keys(with_file)) == [filed.key_id]
    with_hex = with_file.model_copy(update={"trusted_platform_key": pinned.public_key.hex()})
    assert list(trusted_platform_keys(with_hex)) == [pinned.key_id]
    nothing = Settings(platform_key_file=tmp_path / "absent")
    with pytest.raises(TrustConfigError, match="no trusted platform key"):
        trusted_platform_keys(nothing)


def test_command_line_value_is_hex_or_a_file(tmp_path: Path) -> None:
    signer = Signer.generate()
    path = tmp_path / "k"
    path.write_text(signer.public_key.hex())
    assert list(trusted_keys_from_file_or_hex(str(path))) == [signer.key_id]
    assert list(trusted_keys_from_file_or_hex(signer.public_key.hex())) == [signer.key_id]
    with pytest.raises(TrustConfigError, match="neither hex public key"):
        trusted_keys_from_file_or_hex(str(tmp_path / "missing"))
