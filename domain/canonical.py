"""Canonical JSON: the one byte form of a document, for hashing and signing.

Keys sorted, no insignificant whitespace, UTF-8 (not ASCII-escaped), no NaN or Infinity, only
string keys. Numbers print as Python prints them (shortest round-trip form), so a document that
round-trips through JSON keeps its bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any


class CanonicalJsonError(ValueError):
    """The value has no canonical JSON form (NaN, Infinity, a non-string key, an unknown type)."""


def _check(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise CanonicalJsonError(f"{path}: {value} has no JSON form")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalJsonError(f"{path}: key {key!r} is not a string")
            _check(item, f"{path}.{key}")
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]")
    elif not (value is None or isinstance(value, str | int | float | bool)):
        raise CanonicalJsonError(f"{path}: {type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    _check(value, "$")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_json_of_checked(value: Any) -> bytes:
    """:func:`canonical_json` without the type walk, for a value the caller has already walked
    (ingest checks every decoded event for what Postgres can store). Non-finite numbers are
    still refused (ValueError)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def canonical_sha256(value: Any) -> str:
    """SHA-256 (lowercase hex) of the canonical JSON of ``value``."""
    return sha256_hex(canonical_json(value))
