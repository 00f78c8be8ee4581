"""The premise of the run's shared time-skipping server (tests/temporal.py): a terminated
workflow whose task nobody polled leaves the clock stuck, and the server is then replaced."""

from __future__ import annotations

import uuid

import pytest

from domain.promotion import EvaluationInput
from tests.temporal import SharedTimeSkippingServer, clock_skips
from workflows.promotion import ShadowEvaluation

pytestmark = pytest.mark.integration


async def test_a_stuck_clock_gets_the_next_test_a_new_server() -> None:
    # A server of this test's own: the run's shared one must not be the one broken here.
    server = SharedTimeSkippingServer(stuck_after=5.0)
    try:
        first = await server.environment()
        assert await clock_skips(first)
        await first.client.start_workflow(
            ShadowEvaluation.run,
            EvaluationInput(tenant_id=uuid.uuid4(), model_version_id=uuid.uuid4()),
            id=f"shadow/{uuid.uuid4()}",
            task_queue=f"nobody-polls-{uuid.uuid4()}",
        )
        await server.after_test()  # terminates it: its unpolled task still holds the clock

        second = await server.environment()
        assert second is not first
        assert await clock_skips(second)
        await server.after_test()
        assert await server.environment() is second, "a healthy server was replaced"
    finally:
        await server.close()
