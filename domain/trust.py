"""Pinned public keys: the platform keys a verifier trusts, given to it from outside.

A verifier never learns which keys to trust from the data it checks (a database row, a field of
the bundle): the keys are pinned in its configuration or on its command line, as raw Ed25519
public keys in hex. Several keys may be pinned at once (a rotation: the old key still verifies
what it signed); dropping a key from the pin is how it is revoked for a verifier.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from domain.signing import PUBLIC_KEY_BYTES, key_id

_SEPARATORS = re.compile(r"[\s,]+")


class TrustedKeyError(ValueError):
    """Text that is not a list of hex Ed25519 public keys."""


@dataclass(frozen=True)
class TrustedKeys(Mapping[str, bytes]):
    """Key id -> raw public key, for every pinned key."""

    by_id: Mapping[str, bytes]

    @classmethod
    def of(cls, *public_keys: bytes) -> TrustedKeys:
        if not public_keys:
            raise TrustedKeyError("no trusted public key given")
        return cls({key_id(key): key for key in public_keys})

    @classmethod
    def parse(cls, text: str) -> TrustedKeys:
        """One or more raw Ed25519 public keys in hex, separated by whitespace or commas."""
        keys = []
        for word in filter(None, _SEPARATORS.split(text.strip())):
            try:
                key = bytes.fromhex(word)
            except ValueError:
                raise TrustedKeyError(f"not a hex public key: {word[:80]!r}") from None
            if len(key) != PUBLIC_KEY_BYTES:
                raise TrustedKeyError(
                    f"an Ed25519 public key has {PUBLIC_KEY_BYTES} bytes (64 hex characters),"
                    f" not {len(key)}: {word[:80]!r}"
                )
            keys.append(key)
        return cls.of(*keys)

    def __getitem__(self, kid: str) -> bytes:
        return self.by_id[kid]

    def __iter__(self) -> Iterator[str]:
        return iter(self.by_id)

    def __len__(self) -> int:
        return len(self.by_id)

    def describe(self) -> str:
        return ", ".join(sorted(self.by_id))
