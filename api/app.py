"""The FastAPI application: built by :func:`create_app` from dependencies the composition root
made once (no module-level state). OpenAPI at ``/openapi.json``, docs at ``/docs``.

Status codes: a body that does not fit the schema is 422 (FastAPI's validation detail); a
callback document that parses but cannot be judged (say, non-finite metrics) is 400; an unknown
training run or drift report is 404; a signature that does not verify, or an unknown or revoked
key, is 403; a drift report whose SHA-256 differs is 409; a workflow service that cannot be
reached is 503 (the training job retries 5xx). Every refusal is ``{"detail": ...}``.

The ``/v1/tenants/{T}/...`` routes are the front door for field data (see ``api.ingest``):
``Authorization: Bearer <token>`` of tenant T (401 missing, unknown, expired or revoked; 403 a
valid token of another tenant; nothing is written for either), then the body's limits (413
over ``api_max_body_bytes`` -- checked before it is read -- or over
``api_max_events_per_batch`` events; 415 not ``application/json``; 422 not JSON, or not a batch
at all), then each event is judged on its own. Callbacks carry their own per-run signatures
and need no token. Whenever the database cannot be reached or fails over mid-request, the
answer is 503 with ``Retry-After`` and the transaction is rolled back: re-sending the same
batch later gives ACCEPTED or DUPLICATE, nothing lost or doubled.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Final
from uuid import UUID

import asyncpg
from fastapi import FastAPI, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse

from adapters.metrics import CONTENT_TYPE, Metrics, process_exposition
from adapters.objectstore import ObjectStoreUnavailableError
from api.ingest import IngestLimits, authorized_tenant, batch_events, read_json_body, single_event
from api.models import (
    CallbackAnswer,
    ErrorDetail,
    EventBatchResult,
    EventRefusal,
    EventResultOut,
    Health,
    batch_request_schema,
    event_request_schema,
)
from db.repository import Database
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


# What "the database cannot be reached, or failed over mid-request" raises: refused or lost
# connections, a server shutting down or out of connections, a transaction the server aborted.
DATABASE_UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TransactionRollbackError,
    # A connection the server terminated under a running transaction: asyncpg's rollback
    # then finds the protocol mid-operation (the pool discards the connection on release).
    asyncpg.exceptions.InternalClientError,
)


@dataclass(frozen=True)
class ApiDependencies:
    db: Database
    callbacks: CallbackHandler
    events: LearningEventService
    metrics: Metrics = field(default_factory=Metrics)
    # Stored drift reports as pages; None: no object store or trusted platform key configured.
    drift_reports: DriftReportReader | None = None
    limits: IngestLimits = field(default_factory=IngestLimits)


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


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    log.warning(
        "%s %s: database unavailable: %s: %s",
        request.method,
        request.url.path,
        type(exc).__name__,
        exc,
    )
    return JSONResponse(
        {"detail": f"database unavailable ({type(exc).__name__}); retry later"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": _RETRY_AFTER_SECONDS},
    )


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorDetail} for code in codes}


# Every refusal a /v1/tenants/... route can give before it judges events.
_FRONT_DOOR_ERRORS: Final = (
    status.HTTP_401_UNAUTHORIZED,
    status.HTTP_403_FORBIDDEN,
    status.HTTP_413_CONTENT_TOO_LARGE,
    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    status.HTTP_422_UNPROCESSABLE_CONTENT,
    status.HTTP_503_SERVICE_UNAVAILABLE,
)


def create_app(deps: ApiDependencies) -> FastAPI:
    app = FastAPI(
        title="RAI Level D",
        version=API_VERSION,
        description="Signed learning events in; signed training and drift callbacks; health.",
    )
    app.add_exception_handler(GovernanceRefusal, _refusal_response)
    app.add_exception_handler(WorkflowUnavailableError, _refusal_response)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_exception_handler(unavailable, _database_unavailable)

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
        process in prometheus-client's multiprocess mode). Unauthenticated, so nothing but
        tenant ids: the database-held gauges (tenant names among them) are the worker's."""
        return Response(process_exposition(deps.metrics, None), media_type=CONTENT_TYPE)

    @app.post(
        "/v1/tenants/{tenant_id}/events",
        tags=["events"],
        response_model=EventBatchResult,
        responses=_errors(*_FRONT_DOOR_ERRORS),
        openapi_extra=batch_request_schema(deps.limits.max_events),
    )
    async def ingest_events(tenant_id: str, request: Request) -> Response:
        """A batch of signed events (``{"events": [...]}``). Each is judged on its own:
        ACCEPTED, DUPLICATE (same season, field and payload already stored), CONFLICT (a
        different payload is stored: never overwritten) or REJECTED (with the reason: schema,
        unstorable text or numbers, unknown or revoked key, bad signature). 200 whenever the
        batch was judged; the rest of a batch is stored whatever its bad events."""
        tenant = await authorized_tenant(deps.db, deps.limits, tenant_id, request)
        events = batch_events(await read_json_body(request, deps.limits), deps.limits)
        results = await deps.events.ingest(tenant, events)
        return JSONResponse(
            {
                "tenant_id": str(tenant),
                "counts": {outcome.value: n for outcome, n in results.counts.items()},
                "results": [
                    {
                        "index": r.index,
                        "season_id": r.season_id,
                        "field_id": r.field_id,
                        "outcome": r.outcome.value,
                        "reason": r.reason,
                    }
                    for r in results
                ],
            }
        )

    @app.post(
        "/v1/tenants/{tenant_id}/events/single",
        tags=["events"],
        response_model=EventResultOut,
        status_code=status.HTTP_201_CREATED,
        responses={
            **_errors(*_FRONT_DOOR_ERRORS),
            status.HTTP_200_OK: {"model": EventResultOut, "description": "a duplicate"},
            status.HTTP_409_CONFLICT: {"model": EventRefusal, "description": "a conflict"},
            status.HTTP_422_UNPROCESSABLE_CONTENT: {
                "model": EventRefusal | ErrorDetail,
                "description": "rejected (schema, key or signature), or a malformed body",
            },
        },
        openapi_extra=event_request_schema(),
    )
    async def ingest_event(tenant_id: str, request: Request) -> Response:
        """One signed event: 201 ACCEPTED, 200 DUPLICATE, 409 CONFLICT, 422 REJECTED."""
        tenant = await authorized_tenant(deps.db, deps.limits, tenant_id, request)
        event = single_event(await read_json_body(request, deps.limits))
        (result,) = await deps.events.ingest(tenant, [event])
        answer = EventResultOut.of(result)
        code = {
            EventOutcome.ACCEPTED: status.HTTP_201_CREATED,
            EventOutcome.DUPLICATE: status.HTTP_200_OK,
            EventOutcome.CONFLICT: status.HTTP_409_CONFLICT,
            EventOutcome.REJECTED: status.HTTP_422_UNPROCESSABLE_CONTENT,
        }[result.outcome]
        if result.outcome in (EventOutcome.CONFLICT, EventOutcome.REJECTED):
            refusal = EventRefusal(detail=result.reason or result.outcome.value, result=answer)
            return JSONResponse(refusal.model_dump(mode="json"), status_code=code)
        return JSONResponse(answer.model_dump(mode="json"), status_code=code)

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
        # The page is HTML; refusals are JSON like everywhere else (a response_class of
        # HTMLResponse would document them as text/html too).
        response_class=Response,
        responses={
            status.HTTP_200_OK: {
                "description": "the drift report as a self-contained HTML page",
                "content": {"text/html": {"schema": {"type": "string"}}},
            },
            **_errors(
                status.HTTP_401_UNAUTHORIZED,
                status.HTTP_403_FORBIDDEN,
                status.HTTP_404_NOT_FOUND,
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                status.HTTP_503_SERVICE_UNAVAILABLE,
            ),
        },
    )
    async def drift_report_page(tenant_id: str, report_id: UUID, request: Request) -> HTMLResponse:
        """One drift report as a self-contained HTML page: per feature the reference and
        current distributions over the frozen bins, PSI/KL/KS with the thresholds, the
        verdict, n, and the report's signature status (checked against the pinned key).
        Behind the tenant's API token, like every ``/v1/tenants/...`` route."""
        tenant = await authorized_tenant(deps.db, deps.limits, tenant_id, request)
        if deps.drift_reports is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "drift report pages need the object store and a trusted platform key",
            )
        try:
            view = await deps.drift_reports.read(tenant, report_id)
        except ObjectStoreUnavailableError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, f"object store unreachable: {exc}"
            ) from exc
        return HTMLResponse(view.html())

    return app
