"""Reaping what a pipeline that ended without cleaning up left behind (issue 11, item 1).

A pipeline cancelled from Temporal cancels its own job and run (workflows/retrain.py). One
that was terminated, or passed its execution timeout, runs no code at all: its training run
stays QUEUED/RUNNING (blocking every later start of the tenant as SKIPPED_ACTIVE_RUN), its job
keeps running and its Redis lease blocks the tenant until the TTL. The reaper asks Temporal
(through :class:`ExecutionProbe`, implemented in ``starter.py``) whether the execution that
owns a run or a lease is closed, and if it is: cancels the run's job and marks the run FAILED
with the reason, and breaks the lease. It runs at every pipeline start of the tenant (inside
the lock acquisition) and on demand (``rai pipeline reap``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol
from uuid import UUID

from adapters.redis_mutex import TenantMutex
from db.repository import Database
from domain.jobs import JobRunner, job_name_for
from services.pipeline import PipelineService

log = logging.getLogger(__name__)


class ExecutionProbe(Protocol):
    async def is_closed(self, workflow_id: str, run_id: str | None) -> bool:
        """Whether the workflow execution (the latest of ``workflow_id`` when ``run_id`` is
        None) has closed; an execution Temporal no longer knows counts as closed."""
        ...


def split_holder(holder: str) -> tuple[str, str | None]:
    """A pipeline lease holder, ``{workflow id}/{run id}``, as (workflow id, run id). Workflow
    ids contain slashes themselves; the run id is the last part."""
    workflow_id, _, run_id = holder.rpartition("/")
    if not workflow_id:
        return holder, None
    return workflow_id, run_id or None


@dataclass(frozen=True)
class Reaped:
    tenant_id: UUID
    runs: tuple[UUID, ...]
    lease_broken: str | None  # the holder whose lease was broken


class PipelineReaper:
    def __init__(
        self,
        *,
        db: Database,
        pipeline: PipelineService,
        jobs: JobRunner,
        mutex: TenantMutex,
        executions: ExecutionProbe,
    ) -> None:
        self._db = db
        self._pipeline = pipeline
        self._jobs = jobs
        self._mutex = mutex
        self._executions = executions

    async def reap(self, tenant_id: UUID) -> Reaped:
        runs = await self.reap_runs(tenant_id)
        broken = await self.break_orphan_lease(tenant_id)
        return Reaped(tenant_id, runs, broken)

    async def reap_runs(self, tenant_id: UUID) -> tuple[UUID, ...]:
        """Fail every QUEUED/RUNNING run of the tenant whose owning execution is closed."""
        async with self._db.transaction(tenant_id) as conn:
            active = await conn.fetch(
                "SELECT id, workflow_id, workflow_run_id, job_name FROM training_runs"
                " WHERE status IN ('QUEUED', 'RUNNING')"
            )
        reaped: list[UUID] = []
        for run in active:
            workflow_id, run_id = run["workflow_id"], run["workflow_run_id"]
            if not await self._executions.is_closed(workflow_id, run_id):
                continue
            owner = f"{workflow_id}/{run_id}" if run_id else workflow_id
            await self._jobs.cancel(run["job_name"] or job_name_for(run["id"]))
            await self._pipeline.finish_run(
                tenant_id,
                run["id"],
                "FAILED",
                reason=f"reaped: its pipeline execution {owner} closed without finishing it",
            )
            log.warning(
                "reaped training run %s of tenant %s (%s closed)", run["id"], tenant_id, owner
            )
            reaped.append(run["id"])
        return tuple(reaped)

    async def break_orphan_lease(self, tenant_id: UUID) -> str | None:
        """Break the tenant's lease if the execution holding it is closed."""
        state = await self._mutex.inspect(tenant_id)
        if state is None:
            return None
        workflow_id, run_id = split_holder(state.holder)
        if run_id is None or not await self._executions.is_closed(workflow_id, run_id):
            return None
        if await self._mutex.break_lease(tenant_id, state.holder, state.fence):
            log.warning(
                "broke the lease of %s on tenant %s (execution closed)", state.holder, tenant_id
            )
            return state.holder
        return None
