"""The premise of the run's shared time-skipping server (tests/temporal.py): a terminated
workflow whose task nobody polled leaves the clock stuck, and the server is then replaced."""

from __future__ import annotations

import uuid

import pytest
from temporalio.testing import WorkflowEnvironment

from domain.promotion import EvaluationInput
from tests.temporal import (
    START_ATTEMPTS,
    SharedTimeSkippingServer,
    clock_skips,
    start_time_skipping_server,
    started,
)
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


async def test_a_server_start_that_fails_is_tried_again_and_the_last_failure_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tries: list[int] = []
    real = await start_time_skipping_server()
    try:

        async def flaky() -> WorkflowEnvironment:
            tries.append(len(tries) + 1)
            if len(tries) < START_ATTEMPTS:
                raise RuntimeError("the server exited: address already in use")
            return real

        assert await started(flaky, "a flaky server") is real
        assert tries == list(range(1, START_ATTEMPTS + 1))
        assert caplog.text.count("a flaky server start") == START_ATTEMPTS - 1
    finally:
        await real.shutdown()

    async def never() -> WorkflowEnvironment:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        await started(never, "a dead server")
