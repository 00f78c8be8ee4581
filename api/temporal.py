"""The callback handler's workflow port on a Temporal client."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from domain.pipeline import TRAINING_FINISHED_SIGNAL, TrainingOutcome
from services.callbacks import (
    WorkflowNotRunningError,
    WorkflowUnavailableError,
)

# Below the training job's 10 s callback timeout: a hung server answers 503, and the job retries.
SIGNAL_TIMEOUT = timedelta(seconds=5)


class TemporalSignaller:
    """Signals workflows by id (the latest run of that id). The client must use the pydantic
    data converter (``starter.connect_temporal`` does), as the workflows' workers do."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def signal_training_finished(self, workflow_id: str, outcome: TrainingOutcome) -> None:
        handle = self._client.get_workflow_handle(workflow_id)
        try:
            await handle.signal(TRAINING_FINISHED_SIGNAL, outcome, rpc_timeout=SIGNAL_TIMEOUT)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise WorkflowNotRunningError(
                    f"workflow {workflow_id} is not running: {exc.message}"
                ) from exc
            raise WorkflowUnavailableError(
                f"cannot signal workflow {workflow_id}: {exc.status.name} {exc.message}"
            ) from exc
