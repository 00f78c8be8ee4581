"""Which :class:`~domain.jobs.JobRunner` runs the training jobs: the one place that chooses.

A runner is a module of its own beside this one; adding one is that module and a line here.
The runner is opened for the worker's lifetime (a runner may hold a client to close).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from adapters.localjobs import LocalJobRunner
from domain.jobs import JobRunner
from settings import Settings


@asynccontextmanager
async def open_job_runner(settings: Settings) -> AsyncIterator[JobRunner]:
    """The configured job runner, open until the block ends."""
    if settings.job_runner == "kubernetes":
        # Imported here: the Kubernetes client is a large import the local runner never needs.
        from adapters.k8sjobs import open_kubernetes_job_runner

        async with open_kubernetes_job_runner(settings) as runner:
            yield runner
        return
    yield LocalJobRunner(settings.state_dir, slots=settings.local_job_slots)
