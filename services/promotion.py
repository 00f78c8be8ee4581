"""The shadow evaluation's database work: outcomes in, stage moves out.

``read_paired_outcomes`` reads, for one challenger (in SHADOW or CANARY), the champion of its
model and the paired outcomes after a cursor; ``read_challenger_evidence`` the challenger's and
the baseline's error when there is no champion (definitions in ``domain/promotion.py``).
``enter_canary`` makes SHADOW -> CANARY; ``promote_challenger`` CANARY -> PRODUCTION with the
previous PRODUCTION -> ARCHIVED first; ``reject_challenger`` SHADOW or CANARY -> REJECTED. Each
runs in one transaction with its decision (and, for an approval, who approved and why)
appended to the tenant's audit chain and its reason in the status history, and each is
idempotent (a retried activity finds its work done). They hold a per-(tenant, model) lock
(``rai.lock_tenant``, which no other tenant can take), so two evaluations of one model conclude
one after the other, and refuse to act when the champion is no longer the one the evaluation
compared against (the caller re-evaluates).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from db.integrity import record_check
from db.repository import Database
from domain.model_status import ModelStatus
from domain.promotion import (
    DECISION_CHECK_TYPE,
    Approval,
    ChallengerEvidence,
    Conclusion,
    ConclusionStatus,
    EventCursor,
    PairedOutcomes,
    challenger_won,
)
from domain.sprt import SprtResult
from services.errors import NotFoundError
from services.registry import move_status

_EVALUATED = (ModelStatus.SHADOW, ModelStatus.CANARY)

_PAIRED_EVENTS = """
SELECT id, received_at,
       (payload->>'outcome')::float8 AS outcome,
       (payload->'predictions'->>$1::text)::float8 AS challenger,
       (payload->'predictions'->>$2::text)::float8 AS champion
FROM learning_events
WHERE jsonb_typeof(payload->'outcome') = 'number'
  AND jsonb_typeof(payload->'predictions'->$1::text) = 'number'
  AND jsonb_typeof(payload->'predictions'->$2::text) = 'number'
  AND received_at <= now() - $3::interval
  AND ($4::timestamptz IS NULL OR (received_at, id) > ($4::timestamptz, $5::uuid))
ORDER BY received_at, id
LIMIT $6::integer
"""


async def read_paired_outcomes(
    db: Database,
    tenant_id: UUID,
    model_version_id: UUID,
    *,
    after: EventCursor | None,
    limit: int,
    settle: timedelta,
) -> PairedOutcomes:
    """The challenger's status and champion, and up to ``limit`` paired outcomes after
    ``after`` that are at least ``settle`` old. An unknown challenger has status None."""
    async with db.transaction(tenant_id, isolation="repeatable_read") as conn:
        challenger = await conn.fetchrow(
            "SELECT model_name, status FROM model_versions WHERE id = $1", model_version_id
        )
        if challenger is None:
            return PairedOutcomes(challenger_status=None)
        model_name: str = challenger["model_name"]
        status = ModelStatus(challenger["status"])
        champion_id: UUID | None = await conn.fetchval(
            "SELECT id FROM model_versions WHERE model_name = $1 AND status = 'PRODUCTION'",
            model_name,
        )
        if champion_id is None or status not in _EVALUATED:
            return PairedOutcomes(
                challenger_status=status, model_name=model_name, champion_id=champion_id
            )
        rows = await conn.fetch(
            _PAIRED_EVENTS,
            str(model_version_id),
            str(champion_id),
            settle,
            after.received_at if after else None,
            after.event_id if after else None,
            limit,
        )
    last = rows[-1] if rows else None
    return PairedOutcomes(
        challenger_status=status,
        model_name=model_name,
        champion_id=champion_id,
        outcomes=[challenger_won(r["outcome"], r["challenger"], r["champion"]) for r in rows],
        cursor=EventCursor(received_at=last["received_at"], event_id=last["id"]) if last else after,
        more=len(rows) == limit,
    )


_CHALLENGER_ERRORS = """
WITH scored AS (
    SELECT (payload->>'outcome')::float8 AS outcome,
           (payload->'predictions'->>$1::text)::float8 AS predicted
    FROM learning_events
    WHERE jsonb_typeof(payload->'outcome') = 'number'
      AND jsonb_typeof(payload->'predictions'->$1::text) = 'number'
      AND received_at <= now() - $2::interval
)
SELECT count(*) AS outcomes,
       avg(abs(outcome - predicted)) AS challenger_mae,
       avg(abs(outcome - (SELECT avg(outcome) FROM scored))) AS baseline_mae
FROM scored
"""


async def read_challenger_evidence(
    db: Database, tenant_id: UUID, model_version_id: UUID, *, settle: timedelta
) -> ChallengerEvidence:
    """The challenger's error on every settled event that carries its prediction, and the
    baseline's (the mean outcome of the same events, predicted for each)."""
    async with db.transaction(tenant_id, isolation="repeatable_read") as conn:
        [row] = await conn.fetch(_CHALLENGER_ERRORS, str(model_version_id), settle)
    return ChallengerEvidence(
        outcomes=row["outcomes"],
        challenger_mae=row["challenger_mae"],
        baseline_mae=row["baseline_mae"],
    )


def decision_details(
    sprt: SprtResult,
    champion_id: UUID | None,
    workflow_id: str,
    *,
    approval: Approval | None = None,
    evidence: ChallengerEvidence | None = None,
) -> dict[str, Any]:
    """What the audit chain keeps of a decision: enough to recompute it, and who approved."""
    return {
        "approved_by": approval.approver if approval else None,
        "approval_reason": approval.reason if approval else None,
        "evidence": evidence.model_dump() if evidence else None,
        "decision": sprt.decision.value,
        "wins": sprt.wins,
        "observations": sprt.observations,
        "log_likelihood_ratio": sprt.log_likelihood_ratio,
        "upper_boundary": sprt.upper_boundary,
        "lower_boundary": sprt.lower_boundary,
        "delta": sprt.config.delta,
        "alpha": sprt.config.alpha,
        "beta": sprt.config.beta,
        "champion_id": str(champion_id) if champion_id else None,
        "workflow_id": workflow_id,
    }


async def enter_canary(
    db: Database,
    tenant_id: UUID,
    model_version_id: UUID,
    *,
    expected_champion_id: UUID | None,
    reason: str,
    details: dict[str, Any],
) -> Conclusion:
    """SHADOW -> CANARY, with the decision (SPRT, approval or evidence) in the chain."""
    async with db.transaction(tenant_id) as conn:
        challenger = await _lock_model(conn, tenant_id, model_version_id)
        status = ModelStatus(challenger["status"])
        champion_id = await _champion_id(conn, challenger["model_name"])
        if status is ModelStatus.CANARY:
            return Conclusion(
                status=ConclusionStatus.DONE, detail="already in CANARY", champion_id=champion_id
            )
        stale = _stale_decision(
            model_version_id, status, ModelStatus.SHADOW, champion_id, expected_champion_id
        )
        if stale is not None:
            return stale
        await _move(conn, tenant_id, challenger, ModelStatus.CANARY, reason)
        await record_check(
            conn,
            tenant_id,
            DECISION_CHECK_TYPE,
            str(model_version_id),
            "CANARY",
            {**details, "reason": reason},
        )
    return Conclusion(status=ConclusionStatus.DONE, detail=reason, champion_id=champion_id)


async def promote_challenger(
    db: Database,
    tenant_id: UUID,
    model_version_id: UUID,
    *,
    expected_champion_id: UUID | None,
    reason: str,
    details: dict[str, Any],
) -> Conclusion:
    """The champion PRODUCTION -> ARCHIVED, the CANARY challenger -> PRODUCTION: one
    transaction, every move in the status history with its reason, the decision in the chain."""
    async with db.transaction(tenant_id) as conn:
        challenger = await _lock_model(conn, tenant_id, model_version_id)
        status = ModelStatus(challenger["status"])
        champion = await conn.fetchrow(
            "SELECT * FROM model_versions WHERE model_name = $1 AND status = 'PRODUCTION'"
            " FOR UPDATE",
            challenger["model_name"],
        )
        champion_id: UUID | None = champion["id"] if champion else None
        if status is ModelStatus.PRODUCTION:
            return Conclusion(
                status=ConclusionStatus.DONE, detail="already in PRODUCTION", champion_id=None
            )
        stale = _stale_decision(
            model_version_id, status, ModelStatus.CANARY, champion_id, expected_champion_id
        )
        if stale is not None:
            return stale
        if champion is not None:
            await _move(
                conn, tenant_id, champion, ModelStatus.ARCHIVED, f"replaced by {model_version_id}"
            )
        await _move(conn, tenant_id, challenger, ModelStatus.PRODUCTION, reason)
        await record_check(
            conn,
            tenant_id,
            DECISION_CHECK_TYPE,
            str(model_version_id),
            "ACCEPTED",
            {**details, "reason": reason, "archived": str(champion_id) if champion_id else None},
        )
    return Conclusion(
        status=ConclusionStatus.DONE,
        detail=reason,
        champion_id=champion_id,
        archived_id=champion_id,
    )


async def _champion_id(conn: asyncpg.Connection, model_name: str) -> UUID | None:
    champion_id: UUID | None = await conn.fetchval(
        "SELECT id FROM model_versions WHERE model_name = $1 AND status = 'PRODUCTION'",
        model_name,
    )
    return champion_id


def _stale_decision(
    model_version_id: UUID,
    status: ModelStatus,
    expected_status: ModelStatus | tuple[ModelStatus, ...],
    champion_id: UUID | None,
    expected_champion_id: UUID | None,
) -> Conclusion | None:
    """Why a decision taken on earlier reads no longer applies (None: it still does)."""
    expected = expected_status if isinstance(expected_status, tuple) else (expected_status,)
    if status not in expected:
        return Conclusion(
            status=ConclusionStatus.CHALLENGER_MOVED,
            detail=f"model version {model_version_id} is {status}, no longer"
            f" {' or '.join(expected)}",
            champion_id=champion_id,
        )
    if champion_id != expected_champion_id:
        return Conclusion(
            status=ConclusionStatus.CHAMPION_CHANGED,
            detail=f"the PRODUCTION version is now {champion_id}, not {expected_champion_id}",
            champion_id=champion_id,
        )
    return None


async def reject_challenger(
    db: Database,
    tenant_id: UUID,
    model_version_id: UUID,
    *,
    expected_champion_id: UUID | None,
    reason: str,
    details: dict[str, Any],
) -> Conclusion:
    """SHADOW or CANARY -> REJECTED with the decision in the chain, in one transaction."""
    async with db.transaction(tenant_id) as conn:
        challenger = await _lock_model(conn, tenant_id, model_version_id)
        status = ModelStatus(challenger["status"])
        champion_id = await _champion_id(conn, challenger["model_name"])
        if status is ModelStatus.REJECTED:
            return Conclusion(status=ConclusionStatus.DONE, detail="already REJECTED")
        stale = _stale_decision(
            model_version_id, status, _EVALUATED, champion_id, expected_champion_id
        )
        if stale is not None:
            return stale
        await _move(conn, tenant_id, challenger, ModelStatus.REJECTED, reason)
        await record_check(
            conn,
            tenant_id,
            DECISION_CHECK_TYPE,
            str(model_version_id),
            "REJECTED",
            {**details, "reason": reason},
        )
    return Conclusion(status=ConclusionStatus.DONE, detail=reason, champion_id=champion_id)


@dataclass(frozen=True)
class ModelVersionSummary:
    id: UUID
    model_name: str
    version: int
    status: ModelStatus
    status_changed_at: datetime
    created_at: datetime


async def list_model_versions(
    db: Database, tenant_id: UUID, model_name: str | None = None
) -> list[ModelVersionSummary]:
    async with db.transaction(tenant_id) as conn:
        rows = await conn.fetch(
            "SELECT id, model_name, version, status, status_changed_at, created_at"
            " FROM model_versions WHERE $1::text IS NULL OR model_name = $1"
            " ORDER BY model_name, version",
            model_name,
        )
    return [
        ModelVersionSummary(
            id=row["id"],
            model_name=row["model_name"],
            version=row["version"],
            status=ModelStatus(row["status"]),
            status_changed_at=row["status_changed_at"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


async def _lock_model(
    conn: asyncpg.Connection, tenant_id: UUID, model_version_id: UUID
) -> asyncpg.Record:
    """The challenger's row, locked, after taking the lock that serialises the conclusions of
    every evaluation of its model (so the champion read next cannot change under us)."""
    name = await conn.fetchval(
        "SELECT model_name FROM model_versions WHERE id = $1", model_version_id
    )
    if name is None:
        raise NotFoundError(f"model version {model_version_id} not found")
    await conn.execute(
        "SELECT rai.lock_tenant($1, $2)",
        tenant_id,
        f"model_promotion:{name}",
    )
    row = await conn.fetchrow(
        "SELECT * FROM model_versions WHERE id = $1 FOR UPDATE", model_version_id
    )
    if row is None:  # model versions are never deleted; RLS hid it, so: not this tenant's
        raise NotFoundError(f"model version {model_version_id} not found")
    return row


async def _move(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    row: asyncpg.Record,
    target: ModelStatus,
    reason: str,
    current: ModelStatus | None = None,
) -> None:
    """A status move inside a promotion; a concurrent PRODUCTION is retried, not refused."""
    await move_status(
        conn, tenant_id, row, target, reason, current=current, second_production_is_refusal=False
    )
