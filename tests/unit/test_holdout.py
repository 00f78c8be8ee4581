"""The holdout split (domain.holdout): one rule, by field id, fraction configurable."""

from __future__ import annotations

import hashlib

import pytest

from domain.holdout import HoldoutFractionError, HoldoutSplit, field_bucket

pytestmark = pytest.mark.unit


def test_the_rule_is_the_documented_hash() -> None:
    for field_id in ("f-1", "field-42", "Äcker 7"):
        digest = hashlib.sha256(field_id.encode("utf-8")).digest()
        assert field_bucket(field_id) == int.from_bytes(digest[:8], "big") % 10_000


@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5, 0.9])
def test_the_fraction_is_the_share_of_fields_held_out(fraction: float) -> None:
    split = HoldoutSplit(fraction)
    ids = [f"field-{i}" for i in range(20_000)]
    held = [split.is_holdout(field_id) for field_id in ids]
    assert sum(held) / len(ids) == pytest.approx(fraction, abs=0.01)
    assert held == [split.is_holdout(field_id) for field_id in reversed(ids)][::-1]


def test_a_larger_fraction_only_adds_fields() -> None:
    small, large = HoldoutSplit(0.1), HoldoutSplit(0.3)
    ids = [f"f{i}" for i in range(5000)]
    assert all(large.is_holdout(i) for i in ids if small.is_holdout(i))


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5, float("nan"), float("inf")])
def test_a_fraction_that_cannot_split_is_refused(fraction: float) -> None:
    with pytest.raises(HoldoutFractionError, match="strictly between 0 and 1"):
        HoldoutSplit(fraction)


def test_the_split_describes_itself() -> None:
    assert HoldoutSplit(0.25).describe() == {
        "rule": "sha256(field_id)[:8] big-endian mod 10000 < round(fraction * 10000)",
        "fraction": 0.25,
    }
