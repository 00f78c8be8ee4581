"""Waiting for something another process or server does, with a deadline that fails the test
with what did not happen and what was seen last (never a silent fall-through, never a spin)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


async def wait_until(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], bool],
    *,
    within: float,
    failure: str,
    every: float = 0.05,
    shown: Callable[[T], object] = repr,
) -> T:
    """Await ``probe()`` every ``every`` seconds until ``done`` accepts its value, and return
    that value. After ``within`` seconds, fail the test with ``failure`` and the last value
    (as ``shown`` renders it)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        value = await probe()
        if done(value):
            return value
        if loop.time() >= deadline:
            pytest.fail(f"{failure} within {within:g} s; last seen: {shown(value)}")
        await asyncio.sleep(every)
