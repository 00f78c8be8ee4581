"""The one place that talks to Temporal as a client: connect, start, describe, list and signal
workflows, and manage the per-tenant retraining schedules. The CLI, the API and the demo call
these functions; none of them builds a client, a workflow id or a schedule id itself.

Workflows:
    ``RetrainingPipeline``, id ``retrain/{tenant}`` -- :func:`start_pipeline`,
    :func:`pipeline_status`, :func:`list_pipeline_runs` (manual and scheduled runs).
    ``ShadowEvaluation``, id ``shadow/{model version}`` -- :func:`start_shadow_evaluation`,
    :func:`shadow_evaluation_status`, :func:`approve_model` (its ``approve`` update). The
    pipeline itself starts one for each version it brings to SHADOW.
    The training job's completion callback -- :class:`TemporalSignaller`.

Schedules (M32): one Temporal Schedule per tenant, id ``retrain-schedule/{tenant}``, whose action
starts ``RetrainingPipeline`` with ``trigger="schedule"`` on the training queue --
:func:`create_retrain_schedule`, :func:`apply_retrain_schedule`,
:func:`list_retrain_schedules`, :func:`delete_retrain_schedule`. Temporal names each scheduled
run ``retrain/{tenant}-<scheduled time>`` (it appends the time to the action's workflow id), so
a scheduled run and a manual ``rai pipeline start`` (``retrain/{tenant}``) do not collide on the
workflow id; what keeps them from running concurrently is the pipeline's per-tenant Redis lease
(the later one ends SKIPPED_LOCKED) and, once a training run exists, the database's
one-active-run index (SKIPPED_ACTIVE_RUN). Between scheduled runs the overlap policy SKIP does
it: a tick while the previous scheduled run still runs starts nothing. A tick missed while
Temporal was down is caught up within one interval; older ones are dropped (the next regular
run covers them).

Failures: :class:`TemporalUnavailable` when the server cannot be reached (at connect or on a
call), :class:`WorkflowNotFound` / :class:`ScheduleNotFoundError` for an unknown id,
:class:`AlreadyRunning` / :class:`ScheduleExistsError` when Temporal refuses a duplicate,
:class:`ApprovalRefused` when an evaluation refuses an approval.
Clients use the pydantic data converter, as the workers do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Generic, TypeVar
from urllib.parse import quote
from uuid import UUID

from temporalio.client import (
    Client,
    Schedule,
    ScheduleAction,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode

from domain.pipeline import (
    TRAINING_FINISHED_SIGNAL,
    PipelineInput,
    PipelineProgress,
    PipelineResult,
    TrainingOutcome,
    pipeline_workflow_id,
)
from domain.promotion import (
    APPROVE_UPDATE,
    DEFAULT_CANARY_DWELL,
    DEFAULT_CHECK_INTERVAL,
    Approval,
    EvaluationInput,
    EvaluationProgress,
    EvaluationResult,
    shadow_evaluation_workflow_id,
)
from domain.schedules import SCHEDULE_ID_PREFIX, schedule_id
from services.callbacks import WorkflowNotRunningError, WorkflowUnavailableError
from settings import Settings
from workflows.promotion import ShadowEvaluation
from workflows.retrain import RetrainingPipeline

# Below the training job's 10 s callback timeout: a hung server answers 503, and the job retries.
SIGNAL_TIMEOUT = timedelta(seconds=5)
_UNREACHABLE = (RPCStatusCode.UNAVAILABLE, RPCStatusCode.DEADLINE_EXCEEDED)
# A query is answered by a worker: with none polling, the server refuses it at once
# (FAILED_PRECONDITION) or, if one polled a few minutes ago, holds it until our timeout (which
# the SDK reports as CANCELLED "Timeout expired", or the server as DEADLINE_EXCEEDED).
QUERY_TIMEOUT = timedelta(seconds=5)
_NO_WORKER_ANSWERED = (
    RPCStatusCode.FAILED_PRECONDITION,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.CANCELLED,
)
ProgressT = TypeVar("ProgressT")
ResultT = TypeVar("ResultT")


class TemporalUnavailable(Exception):
    """The Temporal server cannot be reached."""


class WorkflowNotFound(LookupError):
    """No workflow has this id."""


class ScheduleNotFoundError(LookupError):
    """The tenant has no retraining schedule."""


class AlreadyRunning(Exception):
    """Temporal refused a start: a workflow of that id is running."""


class PipelineAlreadyRunning(AlreadyRunning):
    """The tenant's pipeline is running."""


class EvaluationAlreadyRunning(AlreadyRunning):
    """The model version's shadow evaluation is running."""


class ScheduleExistsError(Exception):
    """The tenant already has a retraining schedule."""


class ApprovalRefused(Exception):
    """The shadow evaluation refused the approval (its validator, or it ended meanwhile)."""


class WorkerQueue(StrEnum):
    """Which task queues one ``rai worker`` polls (the Helm chart runs one Deployment each)."""

    ALL = "all"
    TRAINING = "training"  # the workflows and every pipeline step but drift
    DRIFT = "drift"  # drift analysis only (M6)


# -- connection -----------------------------------------------------------------------------


def _unreachable_message(address: str, reason: str) -> str:
    return (
        f"cannot reach Temporal at {address}: {reason} (is it running? for the local stack:"
        ' `rai dev up`, then `eval "$(rai dev env)"`)'
    )


def prometheus_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime whose SDK metrics are served in Prometheus' format at
    ``bind_address`` (the worker reads them into its own endpoint).

    One naming mode, the one the dashboards use: counters end in ``_total``, durations are
    float seconds, histogram names carry no unit suffix (so ``temporal_activity_schedule_to_
    start_latency_bucket``, in seconds, and ``temporal_activity_execution_failed_total``).
    """
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=bind_address, counters_total_suffix=True, durations_as_seconds=True
            )
        )
    )


async def connect_temporal(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client of the configured namespace with the pydantic data converter.

    The SDK has no ``close``: its native connection goes when the client object is garbage
    collected. A process should drop its clients and collect them before it exits (``rai``
    does), because a client still alive while the interpreter shuts down can abort it.
    """
    try:
        return await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            data_converter=pydantic_data_converter,
            runtime=runtime,
        )
    except RuntimeError as exc:  # how the SDK reports a failed connect
        raise TemporalUnavailable(
            _unreachable_message(settings.temporal_address, str(exc))
        ) from exc


@contextmanager
def _calling(client: Client) -> Iterator[None]:
    """An RPC that fails because the server is gone raises :class:`TemporalUnavailable`."""
    try:
        yield
    except RPCError as exc:
        if exc.status in _UNREACHABLE:
            address = client.service_client.config.target_host
            raise TemporalUnavailable(_unreachable_message(address, exc.message)) from exc
        raise


def workflow_ui_link(settings: Settings, workflow_id: str, run_id: str | None) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    link = (
        f"{base}/namespaces/{settings.temporal_namespace}/workflows/{quote(workflow_id, safe='')}"
    )
    return f"{link}/{run_id}/history" if run_id else link


def schedule_ui_link(settings: Settings, tenant_id: UUID) -> str:
    base = settings.temporal_ui_url.rstrip("/")
    return f"{base}/namespaces/{settings.temporal_namespace}/schedules/{schedule_id(tenant_id)}"


# -- the retraining pipeline ------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    workflow_id: str
    run_id: str
    ui_link: str
    handle: WorkflowHandle[RetrainingPipeline, PipelineResult]


async def start_pipeline(
    client: Client,
    settings: Settings,
    tenant_id: UUID,
    *,
    trigger: str = "manual",
    reference_season: str | None = None,
    current_season: str | None = None,
    training_heartbeat_seconds: float = 10.0,
    canary_dwell: timedelta | None = None,
) -> Started:
    """Start the tenant's pipeline; ``canary_dwell`` is passed to the shadow evaluation it
    starts (None: the evaluation's default)."""
    workflow_id = pipeline_workflow_id(tenant_id)
    try:
        with _calling(client):
            handle = await client.start_workflow(
                RetrainingPipeline.run,
                PipelineInput(
                    tenant_id=tenant_id,
                    trigger=trigger,
                    reference_season=reference_season,
                    current_season=current_season,
                    drift_task_queue=settings.drift_task_queue,
                    training_heartbeat_seconds=training_heartbeat_seconds,
                    canary_dwell_seconds=(
                        None if canary_dwell is None else canary_dwell.total_seconds()
                    ),
                ),
                id=workflow_id,
                task_queue=settings.training_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
    except WorkflowAlreadyStartedError as exc:
        raise PipelineAlreadyRunning(f"pipeline {workflow_id} is already running") from exc
    run_id = handle.result_run_id or ""
    return Started(workflow_id, run_id, workflow_ui_link(settings, workflow_id, run_id), handle)


@dataclass(frozen=True)
class PipelineStatus:
    workflow_id: str
    run_id: str
    status: str
    progress: PipelineProgress | None  # None when no worker answers the query
    result: PipelineResult | None  # once COMPLETED, read from the history
    ui_link: str


async def pipeline_status(client: Client, settings: Settings, tenant_id: UUID) -> PipelineStatus:
    """The tenant's latest pipeline run, whoever started it: a manual start (``retrain/T``)
    or a scheduled one (ids extending it); WorkflowNotFound if none. The manual id is described
    directly and the newest run is also looked up in the visibility store (which may lag a
    start by a moment); the one started last wins."""
    workflow_id, run_id = await _latest_pipeline_execution(client, settings, tenant_id)
    handle = client.get_workflow_handle_for(RetrainingPipeline.run, workflow_id, run_id=run_id)
    missing = f"no pipeline run {pipeline_workflow_id(tenant_id)}"
    found = await _described(client, handle, RetrainingPipeline.progress, missing)
    return PipelineStatus(
        workflow_id,
        found.run_id,
        found.status,
        found.progress,
        found.result,
        workflow_ui_link(settings, workflow_id, found.run_id),
    )


async def _latest_pipeline_execution(
    client: Client, settings: Settings, tenant_id: UUID
) -> tuple[str, str | None]:
    manual = pipeline_workflow_id(tenant_id)
    candidates: list[tuple[datetime, str, str | None]] = []
    with _calling(client):
        try:
            described = await client.get_workflow_handle(manual).describe()
            candidates.append((described.start_time, manual, described.run_id))
        except RPCError as exc:
            if exc.status is not RPCStatusCode.NOT_FOUND:
                raise
    for run in await list_pipeline_runs(client, settings, tenant_id, limit=1):
        candidates.append((run.started_at, run.workflow_id, run.run_id))
    if not candidates:
        return manual, None  # described below: WorkflowNotFound
    _, workflow_id, run_id = max(candidates, key=lambda candidate: candidate[0])
    return workflow_id, run_id


@dataclass(frozen=True)
class WorkflowRun:
    workflow_id: str
    run_id: str
    status: str
    started_at: datetime
    closed_at: datetime | None
    ui_link: str


async def list_pipeline_runs(
    client: Client, settings: Settings, tenant_id: UUID, *, limit: int = 20
) -> list[WorkflowRun]:
    """The tenant's pipeline runs, newest first: manual ones and scheduled ones (whose ids
    extend the manual id). From Temporal's visibility store, which may lag a start by a
    moment."""
    query = (
        "WorkflowType = 'RetrainingPipeline'"
        f" AND WorkflowId STARTS_WITH '{pipeline_workflow_id(tenant_id)}'"
    )
    with _calling(client):
        return [
            WorkflowRun(
                workflow_id=found.id,
                run_id=found.run_id,
                status=found.status.name if found.status else "UNKNOWN",
                started_at=found.start_time,
                closed_at=found.close_time,
                ui_link=workflow_ui_link(settings, found.id, found.run_id),
            )
            async for found in client.list_workflows(query, limit=limit)
        ]


# -- the shadow evaluation (M24) --------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationStarted:
    workflow_id: str
    run_id: str
    ui_link: str
    handle: WorkflowHandle[ShadowEvaluation, EvaluationResult]


async def start_shadow_evaluation(
    client: Client,
    settings: Settings,
    tenant_id: UUID,
    model_version_id: UUID,
    *,
    check_interval: timedelta = DEFAULT_CHECK_INTERVAL,
    canary_dwell: timedelta = DEFAULT_CANARY_DWELL,
) -> EvaluationStarted:
    workflow_id = shadow_evaluation_workflow_id(model_version_id)
    try:
        with _calling(client):
            handle = await client.start_workflow(
                ShadowEvaluation.run,
                EvaluationInput(
                    tenant_id=tenant_id,
                    model_version_id=model_version_id,
                    check_interval=check_interval,
                    canary_dwell=canary_dwell,
                ),
                id=workflow_id,
                task_queue=settings.training_task_queue,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            )
    except WorkflowAlreadyStartedError as exc:
        raise EvaluationAlreadyRunning(
            f"shadow evaluation {workflow_id} is already running"
        ) from exc
    run_id = handle.result_run_id or ""
    return EvaluationStarted(
        workflow_id, run_id, workflow_ui_link(settings, workflow_id, run_id), handle
    )


@dataclass(frozen=True)
class EvaluationStatus:
    workflow_id: str
    run_id: str
    status: str
    progress: EvaluationProgress | None  # None when no worker answers the query
    result: EvaluationResult | None  # once COMPLETED, read from the history
    ui_link: str


async def shadow_evaluation_status(
    client: Client, settings: Settings, model_version_id: UUID
) -> EvaluationStatus:
    """The latest run of ``shadow/{model version}``; WorkflowNotFound if there is none."""
    workflow_id = shadow_evaluation_workflow_id(model_version_id)
    handle = client.get_workflow_handle_for(ShadowEvaluation.run, workflow_id)
    found = await _described(
        client, handle, ShadowEvaluation.progress, f"no shadow evaluation {workflow_id}"
    )
    return EvaluationStatus(
        workflow_id,
        found.run_id,
        found.status,
        found.progress,
        found.result,
        workflow_ui_link(settings, workflow_id, found.run_id),
    )


async def approve_model(client: Client, model_version_id: UUID, approval: Approval) -> str:
    """Send ``approval`` to the model version's shadow evaluation (its ``approve`` update) and
    return what the evaluation answers once the version is in CANARY. WorkflowNotFound if no
    evaluation of that version runs; ApprovalRefused if it does not take the approval."""
    workflow_id = shadow_evaluation_workflow_id(model_version_id)
    handle = client.get_workflow_handle_for(ShadowEvaluation.run, workflow_id)
    try:
        with _calling(client):
            # By name: the SDK's typing of an async update method with a validator does not
            # match execute_update's overloads.
            answer: str = await handle.execute_update(APPROVE_UPDATE, approval, result_type=str)
    except WorkflowUpdateFailedError as exc:
        raise ApprovalRefused(str(exc.cause)) from exc
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise WorkflowNotFound(
                f"no running shadow evaluation {workflow_id} (is model version"
                f" {model_version_id} in SHADOW?)"
            ) from exc
        raise
    return answer


@dataclass(frozen=True)
class _Described(Generic[ProgressT, ResultT]):
    run_id: str
    status: str
    progress: ProgressT | None
    result: ResultT | None


async def _described(
    client: Client,
    handle: WorkflowHandle[Any, ResultT],
    progress_query: Callable[[Any], ProgressT],
    missing: str,
) -> _Described[ProgressT, ResultT]:
    """The latest run behind ``handle``: its status, the ``progress`` query's answer while it
    runs or once it completed (if a worker answers: a query needs one), and its result once
    completed (from the history, which needs no worker)."""
    with _calling(client):
        try:
            description = await handle.describe()
        except RPCError as exc:
            if exc.status is RPCStatusCode.NOT_FOUND:
                raise WorkflowNotFound(missing) from exc
            raise
        status = description.status
        progress = None
        if status in (WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED):
            try:
                progress = await handle.query(progress_query, rpc_timeout=QUERY_TIMEOUT)
            except RPCError as exc:
                if exc.status not in _NO_WORKER_ANSWERED:
                    raise
        result = await handle.result() if status is WorkflowExecutionStatus.COMPLETED else None
    return _Described(description.run_id, status.name if status else "UNKNOWN", progress, result)


# -- is an execution over? (the reaper's probe, services/reaper.py) --------------------------


class TemporalExecutions:
    """:class:`services.reaper.ExecutionProbe` over a client: describes the execution."""

    def __init__(self, client: Client) -> None:
        self._client = client

    async def is_closed(self, workflow_id: str, run_id: str | None) -> bool:
        handle = self._client.get_workflow_handle(workflow_id, run_id=run_id)
        with _calling(self._client):
            try:
                description = await handle.describe()
            except RPCError as exc:
                if exc.status is RPCStatusCode.NOT_FOUND:  # gone past retention: closed
                    return True
                raise
        return description.status is not WorkflowExecutionStatus.RUNNING


# -- the training job's completion callback ---------------------------------------------------


class TemporalSignaller:
    """The callback handler's workflow port: signals workflows by id (the latest run of that
    id). The client must come from :func:`connect_temporal` (pydantic data converter)."""

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


# -- retraining schedules (M32) ---------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleSummary:
    schedule_id: str
    tenant_id: UUID | None
    intervals: tuple[timedelta, ...]
    overlap: str
    paused: bool
    workflow_id: str | None
    task_queue: str | None
    next_runs: tuple[datetime, ...]
    recent_runs: tuple[datetime, ...]


class ScheduleChange(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class AppliedSchedule:
    change: ScheduleChange
    schedule: ScheduleSummary


def _retrain_action(settings: Settings, tenant_id: UUID) -> ScheduleActionStartWorkflow:
    return ScheduleActionStartWorkflow(
        RetrainingPipeline.run,
        PipelineInput(
            tenant_id=tenant_id, trigger="schedule", drift_task_queue=settings.drift_task_queue
        ),
        id=pipeline_workflow_id(tenant_id),
        task_queue=settings.training_task_queue,
    )


def _retrain_spec(every: timedelta) -> ScheduleSpec:
    return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)])


def _retrain_policy(every: timedelta) -> SchedulePolicy:
    return SchedulePolicy(
        overlap=ScheduleOverlapPolicy.SKIP, catchup_window=max(every, timedelta(minutes=1))
    )


async def create_retrain_schedule(
    client: Client, settings: Settings, tenant_id: UUID, every: timedelta
) -> ScheduleSummary:
    """The tenant's schedule; ScheduleExistsError if it has one."""
    try:
        with _calling(client):
            handle = await client.create_schedule(
                schedule_id(tenant_id),
                Schedule(
                    action=_retrain_action(settings, tenant_id),
                    spec=_retrain_spec(every),
                    policy=_retrain_policy(every),
                ),
                memo={"tenant_id": str(tenant_id)},
            )
    except ScheduleAlreadyRunningError as exc:
        raise ScheduleExistsError(
            f"tenant {tenant_id} already has a retraining schedule ({schedule_id(tenant_id)});"
            " delete it first, or use `rai schedule apply`"
        ) from exc
    return await _describe_created(client, handle.id)


async def apply_retrain_schedule(
    client: Client, settings: Settings, tenant_id: UUID, every: timedelta
) -> AppliedSchedule:
    """Make the tenant's schedule run every ``every``: create it, or bring an existing one to
    this interval, action and policy (a paused one stays paused). Running it again changes
    nothing."""
    for _ in range(3):  # a concurrent delete or create can win between our two calls
        try:
            summary = await create_retrain_schedule(client, settings, tenant_id, every)
        except ScheduleExistsError:
            pass
        else:
            return AppliedSchedule(ScheduleChange.CREATED, summary)
        changed = await _update_schedule(client, settings, tenant_id, every)
        if changed is not None:
            summary = await _describe_created(client, schedule_id(tenant_id))
            return AppliedSchedule(
                ScheduleChange.UPDATED if changed else ScheduleChange.UNCHANGED, summary
            )
    raise ScheduleExistsError(
        f"schedule {schedule_id(tenant_id)} kept being created and deleted concurrently"
    )


async def _update_schedule(
    client: Client, settings: Settings, tenant_id: UUID, every: timedelta
) -> bool | None:
    """Whether the existing schedule needed a change; None if it vanished meanwhile."""
    action, spec, policy = (
        _retrain_action(settings, tenant_id),
        _retrain_spec(every),
        _retrain_policy(every),
    )
    changed = False

    async def update(current: ScheduleUpdateInput) -> ScheduleUpdate | None:
        nonlocal changed
        schedule = current.description.schedule
        changed = not (
            await _same_action(client, schedule.action, action)
            and [i.every for i in schedule.spec.intervals] == [every]
            and not (schedule.spec.calendars or schedule.spec.cron_expressions)
            and schedule.policy.overlap == policy.overlap
            and schedule.policy.catchup_window == policy.catchup_window
        )
        if not changed:
            return None
        schedule.action, schedule.spec = action, spec
        schedule.policy.overlap = policy.overlap
        schedule.policy.catchup_window = policy.catchup_window
        return ScheduleUpdate(schedule=schedule)

    try:
        with _calling(client):
            await client.get_schedule_handle(schedule_id(tenant_id)).update(update)
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
    return changed


async def _same_action(
    client: Client, found: ScheduleAction, wanted: ScheduleActionStartWorkflow
) -> bool:
    """Whether a described schedule's action starts what ``wanted`` starts (a described action
    carries its input still encoded)."""
    if not isinstance(found, ScheduleActionStartWorkflow) or (
        found.workflow,
        found.id,
        found.task_queue,
    ) != (wanted.workflow, wanted.id, wanted.task_queue):
        return False
    try:
        decoded = await client.data_converter.decode(list(found.args), [PipelineInput])
    except (ValueError, RuntimeError):  # not our input (pydantic or converter refused it)
        return False
    return decoded == list(wanted.args)


async def list_retrain_schedules(
    client: Client, tenant_id: UUID | None = None
) -> list[ScheduleSummary]:
    """Every tenant's retraining schedule (or one tenant's), described in full. The listing
    comes from Temporal's visibility store, which may lag a create or delete by a moment."""
    wanted = schedule_id(tenant_id) if tenant_id else None
    with _calling(client):
        ids = [
            listed.id
            async for listed in await client.list_schedules()
            if listed.id.startswith(SCHEDULE_ID_PREFIX) and (wanted is None or listed.id == wanted)
        ]
    summaries = []
    for found_id in sorted(ids):
        summary = await _describe_schedule(client, found_id)
        if summary is not None:
            summaries.append(summary)
    return summaries


async def delete_retrain_schedule(client: Client, tenant_id: UUID) -> str:
    """Delete the tenant's schedule and return its id (a run it already started keeps
    running)."""
    try:
        with _calling(client):
            await client.get_schedule_handle(schedule_id(tenant_id)).delete()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            raise ScheduleNotFoundError(
                f"tenant {tenant_id} has no retraining schedule ({schedule_id(tenant_id)})"
            ) from exc
        raise
    return schedule_id(tenant_id)


async def _describe_created(client: Client, found_id: str) -> ScheduleSummary:
    found = await _describe_schedule(client, found_id)
    if found is None:  # deleted right after our change by someone else
        raise ScheduleNotFoundError(f"schedule {found_id} vanished right after it was written")
    return found


async def _describe_schedule(client: Client, found_id: str) -> ScheduleSummary | None:
    try:
        with _calling(client):
            description = await client.get_schedule_handle(found_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return None
        raise
    schedule = description.schedule
    action = schedule.action
    started = action if isinstance(action, ScheduleActionStartWorkflow) else None
    try:
        tenant: UUID | None = UUID(found_id.removeprefix(SCHEDULE_ID_PREFIX))
    except ValueError:
        tenant = None
    return ScheduleSummary(
        schedule_id=found_id,
        tenant_id=tenant,
        intervals=tuple(spec.every for spec in schedule.spec.intervals),
        overlap=schedule.policy.overlap.name,
        paused=schedule.state.paused,
        workflow_id=started.id if started else None,
        task_queue=started.task_queue if started else None,
        next_runs=tuple(description.info.next_action_times),
        recent_runs=tuple(result.scheduled_at for result in description.info.recent_actions),
    )
