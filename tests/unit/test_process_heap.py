"""``adapters.processes.freeze_start_up_heap`` (what ``rai api`` calls once it serves): what
start-up made is out of the full collections' reach afterwards, and garbage made later is
still collected."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from adapters.processes import freeze_start_up_heap


class _Node:
    def __init__(self) -> None:
        self.me: _Node = self


@pytest.fixture
def thawed() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # this process is pytest's: leave its heap as it found it


def test_start_up_objects_are_frozen_and_full_collections_walk_only_newer_ones(
    thawed: None,
) -> None:
    assert gc.get_freeze_count() == 0
    long_lived = [_Node() for _ in range(20_000)]
    frozen = freeze_start_up_heap()
    assert frozen == gc.get_freeze_count() >= len(long_lived)
    walked: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            walked.append(len(gc.get_objects(generation=2)))

    gc.callbacks.append(count)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(count)
    assert walked
    assert walked[0] < len(long_lived)
    assert long_lived[0].me is long_lived[0]


def test_a_cycle_made_after_the_freeze_is_still_collected(thawed: None) -> None:
    freeze_start_up_heap()
    cycle = _Node()
    gone = weakref.ref(cycle)
    del cycle
    gc.collect()
    assert gone() is None
