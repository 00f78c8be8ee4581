from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.lineage import ROOT_LINEAGE, LineageError, lineage_hash

pytestmark = pytest.mark.unit

hex64 = st.binary(min_size=1, max_size=64).map(lambda b: hashlib.sha256(b).hexdigest())


def test_root_lineage_layout() -> None:
    a, d = "a" * 64, "b" * 64
    expected = hashlib.sha256(f"{'0' * 64}:{a}:{d}".encode()).hexdigest()
    assert lineage_hash(None, a, d) == expected
    assert lineage_hash(ROOT_LINEAGE, a, d) == expected


@given(hex64, hex64, hex64)
def test_child_depends_on_every_input(parent: str, artifact: str, dataset: str) -> None:
    h = lineage_hash(parent, artifact, dataset)
    assert len(h) == 64
    assert h == hashlib.sha256(f"{parent}:{artifact}:{dataset}".encode()).hexdigest()
    if artifact != dataset:
        assert lineage_hash(parent, dataset, artifact) != h


@pytest.mark.parametrize("bad", ["A" * 64, "a" * 63, "g" * 64, ""])
def test_malformed_hashes_are_refused(bad: str) -> None:
    with pytest.raises(LineageError):
        lineage_hash(None, bad, "a" * 64)
