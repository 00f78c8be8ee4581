"""The platform keys a verifier trusts, pinned in configuration (never read from the database
it verifies): ``RAI_TRUSTED_PLATFORM_KEY`` (hex), else ``RAI_TRUSTED_PLATFORM_KEY_FILE``, else
the public half of the platform signing key this machine holds (the local stack's default)."""

from __future__ import annotations

from pathlib import Path

from domain.signing import KeyMaterialError
from domain.trust import TrustedKeyError, TrustedKeys
from services.keys import PlatformKeyError, load_platform_signer
from settings import Settings


class TrustConfigError(Exception):
    """No usable trusted platform key is configured."""


def trusted_platform_keys(settings: Settings) -> TrustedKeys:
    if settings.trusted_platform_key is not None:
        try:
            return TrustedKeys.parse(settings.trusted_platform_key)
        except TrustedKeyError as exc:
            raise TrustConfigError(f"RAI_TRUSTED_PLATFORM_KEY: {exc}") from exc
    if settings.trusted_platform_key_file is not None:
        return trusted_keys_from_file_or_hex(str(settings.trusted_platform_key_file))
    try:
        signer = load_platform_signer(settings)
    except (PlatformKeyError, KeyMaterialError, OSError) as exc:
        raise TrustConfigError(
            f"no trusted platform key: set RAI_TRUSTED_PLATFORM_KEY (hex) or"
            f" RAI_TRUSTED_PLATFORM_KEY_FILE, or hold the platform key ({exc})"
        ) from exc
    return TrustedKeys.of(signer.public_key)


def trusted_keys_from_file_or_hex(value: str) -> TrustedKeys:
    """``--trusted-key HEX|PATH``: hex key(s), or a file holding them (the hex form wins when
    the value parses as keys)."""
    try:
        return TrustedKeys.parse(value)
    except TrustedKeyError as not_hex:
        path = Path(value)
        if not path.is_file():
            raise TrustConfigError(
                f"{value!r} is neither hex public key(s) nor a file"
            ) from not_hex
        try:
            return TrustedKeys.parse(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, TrustedKeyError) as exc:
            raise TrustConfigError(f"{path}: {exc}") from exc
