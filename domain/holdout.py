"""The holdout split: which events a model never trains on, so its bias audit and its reported
metrics judge it on data it has not seen. The one definition, used by the trainer (fits on the
train side only) and by the bias audit (evaluates on the holdout side only).

The rule: an event is in the holdout when its ``field_id`` hashes into the first ``fraction``
of the space: the first 8 bytes of ``sha256(field_id)`` (UTF-8), big-endian, modulo 10 000,
below ``round(fraction * 10 000)``. All seasons of one field fall on the same side (the audit
measures the model on fields it never saw), and the split depends neither on row order nor on
anything but the field id and the fraction. The fraction a model was trained with is recorded
in its metrics (``holdout_fraction``), so its audit uses the same split whatever the auditing
worker is configured with.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Final

DEFAULT_HOLDOUT_FRACTION: Final = 0.2
HOLDOUT_BUCKETS: Final = 10_000
SPLIT_RULE: Final = "sha256(field_id)[:8] big-endian mod 10000 < round(fraction * 10000)"


class HoldoutFractionError(ValueError):
    """The fraction cannot split: it must be a finite number strictly between 0 and 1."""


def check_holdout_fraction(fraction: float) -> float:
    """``fraction`` if it can split a snapshot into two non-empty sides, else raise."""
    if not (math.isfinite(fraction) and 0 < fraction < 1):
        raise HoldoutFractionError(
            f"the holdout fraction must be a number strictly between 0 and 1, not {fraction}"
        )
    return fraction


def field_bucket(field_id: str) -> int:
    """The field's place in the split space, 0 <= bucket < HOLDOUT_BUCKETS."""
    digest = hashlib.sha256(field_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS


@dataclass(frozen=True)
class HoldoutSplit:
    fraction: float = DEFAULT_HOLDOUT_FRACTION

    def __post_init__(self) -> None:
        check_holdout_fraction(self.fraction)

    @property
    def threshold(self) -> int:
        return round(self.fraction * HOLDOUT_BUCKETS)

    def is_holdout(self, field_id: str) -> bool:
        return field_bucket(field_id) < self.threshold

    def describe(self) -> dict[str, Any]:
        """What an audit or a metrics file records about the split."""
        return {"rule": SPLIT_RULE, "fraction": self.fraction}
