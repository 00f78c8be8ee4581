"""CallbackHandler (M20): signed completion callbacks of training and drift-analysis jobs.

**Training** (``POST /v1/callbacks/training``) — the training job posts
``{"document": D, "signature": HEX}``, ``D`` as built by
:func:`domain.training.training_callback_document` and signed ``DocumentKind.CALLBACK`` with the
run's own callback key (derived per run by :class:`services.training.TrainingService`; its
public half is stored in ``training_runs.callback_public_key``). The handler

1. parses the body (:class:`MalformedCallbackError` for anything malformed);
2. looks the run up *in the tenant the document names* (row-level security: a run of another
   tenant is simply not there, :class:`UnknownTrainingRunError`);
3. verifies the signature over the document rebuilt from the received fields
   (:class:`CallbackSignatureError`; nothing is written and nothing is signalled: the
   callback routes take no API token, so a body nobody can vouch for must not be able to add
   rows to a tenant's audit log);
4. records the callback in ``integrity_checks`` (``training.callback``: ACCEPTED, DUPLICATE —
   the same document again —, or RUN_FINISHED — the run is already final, its pipeline has
   moved on);
5. signals ``training_finished(TrainingOutcome)`` to the run's workflow
   (``training_runs.workflow_id``), unless the run is final. A duplicate is signalled again:
   the workflow keeps the first outcome, and a repeat heals a first delivery that failed. A
   workflow that is no longer running is not an error (it finished by polling the job).

The run's row is locked for the transaction, so concurrent copies of one callback are told
apart exactly (one ACCEPTED, the others DUPLICATE).

**Drift** (``POST /v1/callbacks/drift``) — an external drift-analysis job reports a finished
report: ``{"document": D, "signature": HEX}`` with ``D`` = :func:`drift_callback_document`
(``kind "drift"``, ``tenant_id``, ``drift_report_id``, ``report_sha256``, ``key_id``), signed
``DocumentKind.CALLBACK`` by a non-revoked *platform* key registered for that tenant (the
signed ``key_id`` names which). The handler verifies it, checks that the tenant has that
report and that its stored SHA-256 is the one reported (:class:`UnknownDriftReportError`,
:class:`DriftReportMismatchError`), and records ``drift.callback`` (ACCEPTED / DUPLICATE, or
MISMATCH before refusing). It confirms a report; no workflow waits on it today, so nothing is
signalled.

Both documents carry ``kind``, so a signature over one kind of callback never passes as the
other, and the ``callback`` domain separation of :mod:`domain.signing` keeps them apart from
every other signed document.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Protocol, TypeVar
from uuid import UUID

import asyncpg
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError

from db.integrity import record_check
from db.repository import Database
from domain.canonical import CanonicalJsonError, canonical_sha256
from domain.pipeline import TrainingOutcome
from domain.signing import DocumentKind, verify
from domain.training import TrainingCallbackDocument
from services.errors import GovernanceRefusal, NotFoundError, SignatureInvalidError
from services.platform import active_public_key

log = logging.getLogger(__name__)

# The RetrainingPipeline's signal (workflows/retrain.py, ``@workflow.signal(name=...)``).
TRAINING_CALLBACK_CHECK: Final = "training.callback"
DRIFT_CALLBACK_CHECK: Final = "drift.callback"
DRIFT_CALLBACK_KIND: Final = "drift"
ACTIVE_RUN_STATUSES: Final = frozenset({"QUEUED", "RUNNING"})

SignatureHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-fA-F]{128}$")]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
KeyIdHex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]


# -- refusals -------------------------------------------------------------------------------


class MalformedCallbackError(GovernanceRefusal):
    """The body is not a well-formed callback (missing fields, bad hex, bad UUIDs, ...)."""


class UnknownTrainingRunError(NotFoundError):
    """The document's tenant has no training run with that id."""


class UnknownDriftReportError(NotFoundError):
    """The document's tenant has no drift report with that id."""


class CallbackSignatureError(SignatureInvalidError):
    """The callback is not signed by the key it must be signed by."""


class DriftReportMismatchError(GovernanceRefusal):
    """The reported SHA-256 is not the one stored for the drift report."""


class WorkflowNotRunningError(Exception):
    """The workflow to signal does not exist or has already finished."""


class WorkflowUnavailableError(Exception):
    """The workflow service could not be reached; the sender should retry."""


# -- the port to the workflow engine --------------------------------------------------------


class WorkflowSignaller(Protocol):
    async def signal_training_finished(self, workflow_id: str, outcome: TrainingOutcome) -> None:
        """Deliver ``training_finished(outcome)``; raises :class:`WorkflowNotRunningError` when
        the workflow is gone, :class:`WorkflowUnavailableError` when it cannot be reached."""
        ...


# -- the callbacks' shapes ------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingCallback(_Strict):
    """The body of ``POST /v1/callbacks/training``."""

    document: TrainingCallbackDocument
    signature: SignatureHex


def drift_callback_document(
    *, tenant_id: UUID, drift_report_id: UUID, report_sha256: str, key_id: str
) -> dict[str, Any]:
    """The mapping a drift-analysis job signs (``DocumentKind.CALLBACK``) with the tenant's
    platform key ``key_id``; the receiver rebuilds it from the received fields."""
    return {
        "kind": DRIFT_CALLBACK_KIND,
        "tenant_id": str(tenant_id),
        "drift_report_id": str(drift_report_id),
        "report_sha256": report_sha256,
        "key_id": key_id,
    }


class DriftCallbackDocument(_Strict):
    kind: Literal["drift"]
    tenant_id: UUID
    drift_report_id: UUID
    report_sha256: Sha256Hex
    key_id: KeyIdHex

    def signed_document(self) -> dict[str, Any]:
        return drift_callback_document(
            tenant_id=self.tenant_id,
            drift_report_id=self.drift_report_id,
            report_sha256=self.report_sha256,
            key_id=self.key_id,
        )


class DriftCallback(_Strict):
    """The body of ``POST /v1/callbacks/drift``."""

    document: DriftCallbackDocument
    signature: SignatureHex


# -- results --------------------------------------------------------------------------------


class CallbackOutcome(StrEnum):
    """How a callback was judged (the ``outcome`` of its ``integrity_checks`` row)."""

    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    RUN_FINISHED = "RUN_FINISHED"
    REJECTED = "REJECTED"
    MISMATCH = "MISMATCH"


@dataclass(frozen=True)
class CallbackResult:
    """An accepted callback: what was recorded and whether a workflow was signalled."""

    tenant_id: UUID
    subject_id: UUID
    outcome: CallbackOutcome
    signalled: bool
    detail: str


_Body = TypeVar("_Body", bound=BaseModel)


def _parse(model: type[_Body], body: Mapping[str, Any]) -> _Body:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
            for error in exc.errors()[:5]
        )
        raise MalformedCallbackError(f"malformed {model.__name__}: {problems}") from None


def _document_sha256(document: Mapping[str, Any]) -> str:
    try:
        return canonical_sha256(dict(document))
    except CanonicalJsonError as exc:
        raise MalformedCallbackError(f"the document has no canonical JSON form: {exc}") from None


class CallbackHandler:
    def __init__(self, db: Database, signaller: WorkflowSignaller) -> None:
        self._db = db
        self._signaller = signaller

    # -- training -----------------------------------------------------------------------

    async def handle_training(self, body: Mapping[str, Any]) -> CallbackResult:
        """Judge a raw training callback body (see the module docstring)."""
        return await self.accept_training(_parse(TrainingCallback, body))

    async def accept_training(self, callback: TrainingCallback) -> CallbackResult:
        document = callback.document
        signed = document.signed_document()
        digest = _document_sha256(signed)
        signature = bytes.fromhex(callback.signature)
        tenant, run_id = document.tenant_id, document.training_run_id
        async with self._db.transaction(tenant) as conn:
            # FOR UPDATE: concurrent copies of one callback queue here, so exactly one of them
            # is ACCEPTED. Nothing in the row is changed.
            run = await conn.fetchrow(
                "SELECT workflow_id, status, callback_public_key FROM training_runs"
                " WHERE id = $1 FOR UPDATE",
                run_id,
            )
            if run is None:
                raise UnknownTrainingRunError(f"tenant {tenant} has no training run {run_id}")
            workflow_id: str = run["workflow_id"]
            run_status: str = run["status"]
            key: bytes | None = run["callback_public_key"]
            details: dict[str, Any] = {
                "document_sha256": digest,
                "status": document.status.value,
                "artifact_sha256": document.artifact_sha256,
                "workflow_id": workflow_id,
                "run_status": run_status,
            }
            if key is None:
                outcome, details["reason"] = CallbackOutcome.REJECTED, "the run has no callback key"
            elif not verify(key, DocumentKind.CALLBACK, signed, signature):
                outcome = CallbackOutcome.REJECTED
                details["reason"] = "the signature does not verify with the run's callback key"
            elif run_status not in ACTIVE_RUN_STATUSES:
                outcome = CallbackOutcome.RUN_FINISHED
            elif await _seen_before(conn, TRAINING_CALLBACK_CHECK, run_id, digest):
                outcome = CallbackOutcome.DUPLICATE
            else:
                outcome = CallbackOutcome.ACCEPTED
            if outcome is CallbackOutcome.REJECTED:
                # Raised inside the transaction: an unverifiable body writes nothing.
                refusal = CallbackSignatureError(
                    f"training callback for run {run_id}: {details['reason']}"
                )
                log.warning("%s", refusal)
                raise refusal
            await record_check(
                conn, tenant, TRAINING_CALLBACK_CHECK, str(run_id), outcome.value, details
            )
        if outcome is CallbackOutcome.RUN_FINISHED:
            return CallbackResult(
                tenant,
                run_id,
                outcome,
                signalled=False,
                detail=f"training run {run_id} is already {run_status}; its pipeline has moved"
                " on, nothing signalled",
            )
        try:
            await self._signaller.signal_training_finished(
                workflow_id,
                TrainingOutcome(training_run_id=document.training_run_id, **document.report()),
            )
        except WorkflowNotRunningError:
            return CallbackResult(
                tenant,
                run_id,
                outcome,
                signalled=False,
                detail=f"workflow {workflow_id} is no longer running (the pipeline has polled"
                " its way on); callback recorded",
            )
        log.info("training callback %s for run %s signalled to %s", outcome, run_id, workflow_id)
        return CallbackResult(
            tenant,
            run_id,
            outcome,
            signalled=True,
            detail=f"training_finished({document.status.value}) signalled to {workflow_id}",
        )

    # -- drift --------------------------------------------------------------------------

    async def handle_drift(self, body: Mapping[str, Any]) -> CallbackResult:
        """Judge a raw drift callback body (see the module docstring)."""
        return await self.accept_drift(_parse(DriftCallback, body))

    async def accept_drift(self, callback: DriftCallback) -> CallbackResult:
        document = callback.document
        signed = document.signed_document()
        digest = _document_sha256(signed)
        signature = bytes.fromhex(callback.signature)
        tenant, report_id = document.tenant_id, document.drift_report_id
        async with self._db.transaction(tenant) as conn:
            key = await active_public_key(conn, document.key_id, "platform")
            if key is None:
                # Not recorded: without a key of the tenant nothing says the tenant exists.
                raise CallbackSignatureError(
                    f"tenant {tenant} has no active platform key {document.key_id}"
                )
            # FOR UPDATE only queues concurrent copies of one callback (so exactly one is
            # ACCEPTED); the append-only row is never changed.
            report = await conn.fetchrow(
                "SELECT report_sha256, summary->>'verdict' AS verdict FROM drift_reports"
                " WHERE id = $1 FOR UPDATE",
                report_id,
            )
            details: dict[str, Any] = {
                "document_sha256": digest,
                "key_id": document.key_id,
                "report_sha256": document.report_sha256,
            }
            if not verify(key, DocumentKind.CALLBACK, signed, signature):
                outcome = CallbackOutcome.REJECTED
                details["reason"] = (
                    f"the signature does not verify with platform key {document.key_id}"
                )
            elif report is None:
                raise UnknownDriftReportError(f"tenant {tenant} has no drift report {report_id}")
            elif report["report_sha256"] != document.report_sha256:
                outcome = CallbackOutcome.MISMATCH
                details["reason"] = (
                    f"drift report {report_id} is stored with SHA-256 {report['report_sha256']},"
                    f" not {document.report_sha256}"
                )
            elif await _seen_before(conn, DRIFT_CALLBACK_CHECK, report_id, digest):
                outcome = CallbackOutcome.DUPLICATE
            else:
                outcome = CallbackOutcome.ACCEPTED
            if outcome is CallbackOutcome.REJECTED:
                # Raised inside the transaction: an unverifiable body writes nothing.
                rejected = CallbackSignatureError(
                    f"drift callback for report {report_id}: {details['reason']}"
                )
                log.warning("%s", rejected)
                raise rejected
            verdict: str | None = report["verdict"] if report is not None else None
            details["verdict"] = verdict
            await record_check(
                conn, tenant, DRIFT_CALLBACK_CHECK, str(report_id), outcome.value, details
            )
        # A verified but mismatching report is raised after the commit: it stays on record.
        if outcome is CallbackOutcome.MISMATCH:
            refusal = DriftReportMismatchError(details["reason"])
        else:
            return CallbackResult(
                tenant,
                report_id,
                outcome,
                signalled=False,
                detail=f"drift report {report_id} confirmed (verdict {verdict})",
            )
        log.warning("%s", refusal)
        raise refusal


async def _seen_before(
    conn: asyncpg.Connection, check_type: str, subject_id: UUID, document_sha256: str
) -> bool:
    """Whether this very document was already accepted for the subject."""
    found: bool = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM integrity_checks WHERE check_type = $1"
        " AND subject_id = $2 AND outcome IN ('ACCEPTED', 'DUPLICATE', 'RUN_FINISHED')"
        " AND details->>'document_sha256' = $3)",
        check_type,
        str(subject_id),
        document_sha256,
    )
    return found
