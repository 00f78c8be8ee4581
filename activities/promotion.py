"""The ShadowEvaluation's activities, over ``services/promotion.py``.

Built once by the worker with the database pool; every step maps failures with
:func:`step_failures` (governance refusals are final, anything else is retried).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from temporalio import activity

from activities.failures import step_failures
from db.repository import Database
from domain.promotion import (
    ChallengerEvidence,
    ChallengerEvidenceRequest,
    ConcludeInput,
    Conclusion,
    PairedOutcomes,
    PairedOutcomesRequest,
    PromotionActivityName,
)
from services import promotion


class PromotionActivities:
    def __init__(self, *, db: Database) -> None:
        self._db = db

    def activities(self) -> list[Callable[..., Any]]:
        """Everything ShadowEvaluation runs (on ``training-queue``)."""
        return [
            self.read_paired_outcomes,
            self.read_challenger_evidence,
            self.enter_canary,
            self.promote_challenger,
            self.reject_challenger,
        ]

    @activity.defn(name=PromotionActivityName.READ_PAIRED_OUTCOMES)
    async def read_paired_outcomes(self, request: PairedOutcomesRequest) -> PairedOutcomes:
        with step_failures():
            return await promotion.read_paired_outcomes(
                self._db,
                request.tenant_id,
                request.model_version_id,
                after=request.after,
                limit=request.limit,
                settle=request.settle,
            )

    @activity.defn(name=PromotionActivityName.READ_CHALLENGER_EVIDENCE)
    async def read_challenger_evidence(
        self, request: ChallengerEvidenceRequest
    ) -> ChallengerEvidence:
        with step_failures():
            return await promotion.read_challenger_evidence(
                self._db, request.tenant_id, request.model_version_id, settle=request.settle
            )

    @activity.defn(name=PromotionActivityName.ENTER_CANARY)
    async def enter_canary(self, request: ConcludeInput) -> Conclusion:
        with step_failures():
            return await promotion.enter_canary(
                self._db,
                request.tenant_id,
                request.model_version_id,
                expected_champion_id=request.champion_id,
                reason=request.reason,
                details=_details(request),
            )

    @activity.defn(name=PromotionActivityName.PROMOTE_CHALLENGER)
    async def promote_challenger(self, request: ConcludeInput) -> Conclusion:
        with step_failures():
            return await promotion.promote_challenger(
                self._db,
                request.tenant_id,
                request.model_version_id,
                expected_champion_id=request.champion_id,
                reason=request.reason,
                details=_details(request),
            )

    @activity.defn(name=PromotionActivityName.REJECT_CHALLENGER)
    async def reject_challenger(self, request: ConcludeInput) -> Conclusion:
        with step_failures():
            return await promotion.reject_challenger(
                self._db,
                request.tenant_id,
                request.model_version_id,
                expected_champion_id=request.champion_id,
                reason=request.reason,
                details=_details(request),
            )


def _details(request: ConcludeInput) -> dict[str, Any]:
    return promotion.decision_details(
        request.sprt,
        request.champion_id,
        request.workflow_id,
        approval=request.approval,
        evidence=request.evidence,
    )
