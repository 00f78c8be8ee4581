"""Where a timed-out test was waiting (a pytest plugin, loaded by tests/conftest.py).

pytest-timeout fails a test that runs past its limit, but for a coroutine test its traceback
ends in the event loop's ``select()``: it says that the loop was idle, not what it waited for.
The test's task is still pending on the run's event loop at that moment, so the report gets a
section listing every pending task and the chain of awaits it is suspended in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator

import pytest

_LOOP = pytest.StashKey[asyncio.AbstractEventLoop]()
_TIMEOUT_MESSAGE = "from pytest-timeout"


@pytest.fixture(scope="session", autouse=True)
async def remember_the_event_loop(request: pytest.FixtureRequest) -> None:
    """The run's event loop (tests and fixtures share one, see asyncio_default_*_loop_scope)."""
    request.config.stash[_LOOP] = asyncio.get_running_loop()


def await_chain(awaitable: object) -> list[str]:
    """The frames a coroutine is suspended in, outermost first, then what the innermost
    awaits (a future, a task, a sleep...)."""
    lines: list[str] = []
    while awaitable is not None:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "gi_frame", None)
        if frame is None:
            lines.append(f"  awaiting {awaitable!r}")
            break
        code = frame.f_code
        lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}')
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "gi_yieldfrom", None)
    return lines


def pending_tasks(loop: asyncio.AbstractEventLoop) -> str:
    blocks = []
    for task in asyncio.all_tasks(loop):
        blocks.append("\n".join([f"{task.get_name()}:", *await_chain(task.get_coro())]))
    return "\n\n".join(sorted(blocks)) or "no pending tasks"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    loop = item.config.stash.get(_LOOP, None)
    timed_out = call.excinfo is not None and _TIMEOUT_MESSAGE in str(call.excinfo.value)
    if timed_out and loop is not None and not loop.is_closed():
        report.sections.append(("asyncio tasks pending at the timeout", pending_tasks(loop)))
    return report
