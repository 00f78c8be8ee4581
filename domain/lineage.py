"""The lineage hash chain of model versions.

``lineage_hash = hex(sha256(utf8(P + ":" + artifact_sha256 + ":" + dataset_sha256)))`` where
``P`` is the parent version's ``lineage_hash``, or :data:`ROOT_LINEAGE` (64 zeros) for a root.
This is the one definition; the trigger ``enforce_lineage_integrity`` computes the same bytes.
"""

from __future__ import annotations

import hashlib
import re

ROOT_LINEAGE = "0" * 64
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class LineageError(ValueError):
    """A hash that is not lowercase hex SHA-256."""


def lineage_hash(parent_lineage: str | None, artifact_sha256: str, dataset_sha256: str) -> str:
    for label, value in (
        ("parent lineage", parent_lineage or ROOT_LINEAGE),
        ("artifact sha256", artifact_sha256),
        ("dataset sha256", dataset_sha256),
    ):
        if not _SHA256_HEX.fullmatch(value):
            raise LineageError(f"{label} must be 64 lowercase hex characters, got {value!r}")
    message = f"{parent_lineage or ROOT_LINEAGE}:{artifact_sha256}:{dataset_sha256}"
    return hashlib.sha256(message.encode("utf-8")).hexdigest()
