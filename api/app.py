"""The FastAPI application: built by :func:`create_app` from dependencies the composition root
made once (no module-level state). OpenAPI at ``/openapi.json``, docs at ``/docs``.

Status codes: a body that does not fit the schema is 422 (FastAPI's validation detail); a
callback document that parses but cannot be judged (say, non-finite metrics) is 400; an unknown
tenant, training run or drift report is 404; a signature that does not verify, or an unknown
or revoked key, is 403; a drift report whose SHA-256 differs is 409; a workflow service that
cannot be reached is 503 (the training job retries 5xx). Every refusal is ``{"detail": ...}``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

import asyncpg
from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse

from adapters.metrics import CONTENT_TYPE, DatabaseState, Metrics, process_exposition
from adapters.objectstore import ObjectStoreUnavailableError
from api.models import (
    CallbackAnswer,
    ErrorDetail,
    EventBatch,
    EventBatchResult,
    EventRefusal,
    EventResultOut,
    Health,
    SignedEvent,
)
from db.repository import Database
from db.tenants import get_tenant
from domain.policies import EventOutcome
from services.callbacks import (
    CallbackHandler,
    DriftCallback,
    DriftReportMismatchError,
    MalformedCallbackError,
    TrainingCallback,
    WorkflowUnavailableError,
)
from services.drift_reports import DriftReportReader
from services.errors import GovernanceRefusal, NotFoundError, SignatureInvalidError
from services.events import LearningEventService

log = logging.getLogger(__name__)

API_VERSION: Final = "1"
HEALTH_TIMEOUT_SECONDS: Final = 2.0
# Any tenant id works for ``SELECT 1``; row-level security shows this one nothing.
_NO_TENANT: Final = UUID(int=0)
_RETRY_AFTER_SECONDS: Final = "5"


@dataclass(frozen=True)
class ApiDependencies:
    db: Database
    callbacks: CallbackHandler
    events: LearningEventService
    metrics: Metrics = field(default_factory=Metrics)
    # The database-held gauges (open dead letters, cooldowns); None: not exported.
    state: DatabaseState | None = None
    # Stored drift reports as pages; None: no object store or trusted platform key configured.
    drift_reports: DriftReportReader | None = None


def refusal_status(exc: Exception) -> int:
    """The HTTP status of a refusal the services raise on purpose."""
    if isinstance(exc, MalformedCallbackError):
        return status.HTTP_400_BAD_REQUEST
    if isinstance(exc, NotFoundError):
        return status.HTTP_404_NOT_FOUND
    if isinstance(exc, SignatureInvalidError):
        return status.HTTP_403_FORBIDDEN
    if isinstance(exc, DriftReportMismatchError):
        return status.HTTP_409_CONFLICT
    if isinstance(exc, WorkflowUnavailableError):
        return status.HTTP_503_SERVICE_UNAVAILABLE
    return status.HTTP_422_UNPROCESSABLE_CONTENT


async def _refusal_response(request: Request, exc: Exception) -> Response:
    code = refusal_status(exc)
    headers = {"Retry-After": _RETRY_AFTER_SECONDS} if code >= 500 else None
    log.info("%s %s refused with %d: %s", request.method, request.url.path, code, exc)
    return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorDetail} for code in codes}


def create_app(deps: ApiDependencies) -> FastAPI:
    app = FastAPI(
        title="RAI Level D",
        version=API_VERSION,
        description="Signed learning events in; signed training and drift callbacks; health.",
    )
    app.add_exception_handler(GovernanceRefusal, _refusal_response)
    app.add_exception_handler(WorkflowUnavailableError, _refusal_response)

    async def require_tenant(tenant_id: UUID) -> None:
        if await get_tenant(deps.db, tenant_id) is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"unknown tenant {tenant_id}")

    @app.get(
        "/healthz",
        tags=["health"],
        responses=_errors(status.HTTP_503_SERVICE_UNAVAILABLE),
    )
    async def healthz() -> Health:
        """The database answers (as the services' ``rai_app`` pool)."""
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT_SECONDS):
                async with deps.db.transaction(_NO_TENANT) as conn:
                    await conn.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"database unreachable: {type(exc).__name__}: {exc}",
            ) from exc
        return Health()

    @app.get("/metrics", tags=["health"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus' text format: ingest and the other metrics of this process (of every API
        process in prometheus-client's multiprocess mode), and the database-held gauges."""
        if deps.state is not None:
            await deps.state.refresh()
        return Response(process_exposition(deps.metrics, deps.state), media_type=CONTENT_TYPE)

    @app.post(
        "/v1/tenants/{tenant_id}/events",
        tags=["events"],
        responses=_errors(status.HTTP_404_NOT_FOUND),
    )
    async def ingest_events(tenant_id: UUID, batch: EventBatch) -> EventBatchResult:
        """A batch of signed events. Each is judged on its own: ACCEPTED, DUPLICATE (same
        season, field and payload already stored), CONFLICT (a different payload is stored:
        never overwritten) or REJECTED (with the reason). 200 whenever the batch was judged."""
        await require_tenant(tenant_id)
        results = await deps.events.ingest(tenant_id, [event.incoming() for event in batch.events])
        counts = Counter(result.outcome for result in results)
        return EventBatchResult(
            tenant_id=tenant_id,
            counts={outcome: counts[outcome] for outcome in EventOutcome},
            results=[EventResultOut.of(result) for result in results],
        )

    @app.post(
        "/v1/tenants/{tenant_id}/events/single",
        tags=["events"],
        response_model=EventResultOut,
        status_code=status.HTTP_201_CREATED,
        responses={
            status.HTTP_200_OK: {"model": EventResultOut, "description": "a duplicate"},
            status.HTTP_404_NOT_FOUND: {"model": ErrorDetail},
            status.HTTP_409_CONFLICT: {"model": EventRefusal, "description": "a conflict"},
            status.HTTP_422_UNPROCESSABLE_CONTENT: {
                "model": EventRefusal,
                "description": "rejected (schema, key or signature), or a malformed body",
            },
        },
    )
    async def ingest_event(
        tenant_id: UUID, event: SignedEvent, response: Response
    ) -> EventResultOut | JSONResponse:
        """One signed event: 201 ACCEPTED, 200 DUPLICATE, 409 CONFLICT, 422 REJECTED."""
        await require_tenant(tenant_id)
        (result,) = await deps.events.ingest(tenant_id, [event.incoming()])
        answer = EventResultOut.of(result)
        if result.outcome in (EventOutcome.CONFLICT, EventOutcome.REJECTED):
            code = (
                status.HTTP_409_CONFLICT
                if result.outcome is EventOutcome.CONFLICT
                else status.HTTP_422_UNPROCESSABLE_CONTENT
            )
            refusal = EventRefusal(detail=result.reason or result.outcome.value, result=answer)
            return JSONResponse(refusal.model_dump(mode="json"), status_code=code)
        if result.outcome is EventOutcome.DUPLICATE:
            response.status_code = status.HTTP_200_OK
        return answer

    @app.post(
        "/v1/callbacks/training",
        tags=["callbacks"],
        responses=_errors(
            status.HTTP_400_BAD_REQUEST,
            status.HTTP_403_FORBIDDEN,
            status.HTTP_404_NOT_FOUND,
            status.HTTP_503_SERVICE_UNAVAILABLE,
        ),
    )
    async def training_callback(callback: TrainingCallback) -> CallbackAnswer:
        """A training job's signed completion (M20): verified against the run's callback key,
        recorded, and signalled to the run's pipeline as ``training_finished``. Repeats are
        harmless (200 again, outcome DUPLICATE)."""
        return CallbackAnswer.of(await deps.callbacks.accept_training(callback))

    @app.post(
        "/v1/callbacks/drift",
        tags=["callbacks"],
        responses=_errors(
            status.HTTP_400_BAD_REQUEST,
            status.HTTP_403_FORBIDDEN,
            status.HTTP_404_NOT_FOUND,
            status.HTTP_409_CONFLICT,
        ),
    )
    async def drift_callback(callback: DriftCallback) -> CallbackAnswer:
        """An external drift analysis's signed completion: the tenant's platform key signs
        the report's id and SHA-256; the report must exist with that hash. Recorded."""
        return CallbackAnswer.of(await deps.callbacks.accept_drift(callback))

    @app.get(
        "/v1/tenants/{tenant_id}/drift-reports/{report_id}.html",
        tags=["drift"],
        response_class=HTMLResponse,
        responses=_errors(status.HTTP_404_NOT_FOUND, status.HTTP_503_SERVICE_UNAVAILABLE),
    )
    async def drift_report_page(tenant_id: UUID, report_id: UUID) -> HTMLResponse:
        """One drift report as a self-contained HTML page: per feature the reference and
        current distributions over the frozen bins, PSI/KL/KS with the thresholds, the
        verdict, n, and the report's signature status (checked against the pinned key)."""
        await require_tenant(tenant_id)
        if deps.drift_reports is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "drift report pages need the object store and a trusted platform key",
            )
        try:
            view = await deps.drift_reports.read(tenant_id, report_id)
        except ObjectStoreUnavailableError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"object store unreachable: {exc}"
            ) from exc
        return HTMLResponse(view.html())

    return app
