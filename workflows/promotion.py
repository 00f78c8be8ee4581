"""ShadowEvaluation(model version): the SPRT guard (M24) between a challenger and its model's
PRODUCTION champion on paired outcomes, through SHADOW and CANARY (``domain/promotion.py``).

Workflow id ``shadow/{model_version_id}``; the retraining pipeline starts it (detached: it
outlives the pipeline) when a version reaches SHADOW. Each check reads the paired outcomes
newer than the workflow's cursor and feeds them, in event order, to the sequential test whose
state lives here (``domain.promotion.advance_sprt``, equal to ``domain.sprt``'s update without
touching numpy inside the sandbox):

- SHADOW, champion present: ACCEPT -> CANARY; REJECT -> REJECTED (result REJECTED); CONTINUE ->
  a durable timer (``check_interval``, 1 h by default), then the next check (a full batch is
  followed by the next one at once).
- SHADOW, no champion: wait for the ``approve`` update (``rai model approve``; validated: a
  reason and an approver, and only while waiting for one) or for ``min_outcomes`` outcomes
  with an error no worse than the baseline; then -> CANARY.
- CANARY: a fresh SPRT on the pairs arriving during ``canary_dwell``; REJECT -> REJECTED,
  otherwise at the end of the dwell -> PRODUCTION with the previous PRODUCTION ARCHIVED in one
  transaction (result ACCEPTED).

A champion that changes mid-evaluation restarts the SHADOW test against the new one (in
CANARY, the canary's test). A challenger that leaves its stage by other hands ends the
evaluation ABANDONED. Every move is appended to the tenant's audit chain with its reason (SPRT
numbers, or who approved and why, or the evidence) in the same transaction. The workflow
continues as new every ``checks_per_run`` checks, carrying its state, so its history stays
small; the ``progress`` query answers the stage's numbers at any time.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import datetime, timedelta
from uuid import UUID

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.model_status import ModelStatus
    from domain.promotion import (
        APPROVE_UPDATE,
        SHADOW_EVALUATION_WORKFLOW,
        Approval,
        ChallengerEvidence,
        ChallengerEvidenceRequest,
        ConcludeInput,
        Conclusion,
        ConclusionStatus,
        EvaluationInput,
        EvaluationOutcome,
        EvaluationProgress,
        EvaluationResult,
        EvaluationState,
        PairedOutcomes,
        PairedOutcomesRequest,
        PromotionActivityName,
        advance_sprt,
        describe_approval,
        describe_evidence,
        evidence_suffices,
    )
    from domain.sprt import SprtConfig, SprtDecision, SprtResult

# The evaluation may run for weeks: a step keeps retrying (visibly, in the UI) rather than
# throwing its state away; refusals are final. Conclusions are idempotent, so retries are safe.
EVALUATION_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=0,
    non_retryable_error_types=["GovernanceRefusal"],
)
STEP_TIMEOUT = timedelta(minutes=2)


def describe(sprt: SprtResult) -> str:
    return (
        f"SPRT {sprt.decision.value}: {sprt.wins}/{sprt.observations} wins,"
        f" log-likelihood ratio {sprt.log_likelihood_ratio:.4f}"
        f" (boundaries {sprt.lower_boundary:.4f}, {sprt.upper_boundary:.4f})"
    )


@workflow.defn(name=SHADOW_EVALUATION_WORKFLOW)
class ShadowEvaluation:
    def __init__(self) -> None:
        self._step = "starting"
        self._state = EvaluationState.fresh(SprtConfig())
        self._result: EvaluationResult | None = None
        self._awaiting_approval = False
        # What the ``approve`` update answers: (applied, detail), once decided.
        self._approval_answer: tuple[bool, str] | None = None

    @workflow.query(name="progress")
    def progress(self) -> EvaluationProgress:
        sprt = self._state.sprt
        return EvaluationProgress(
            step=self._step,
            decision=sprt.decision,
            log_likelihood_ratio=sprt.log_likelihood_ratio,
            upper_boundary=sprt.upper_boundary,
            lower_boundary=sprt.lower_boundary,
            observations=sprt.observations,
            wins=sprt.wins,
            champion_id=self._state.champion_id,
            checks=self._state.checks,
            restarts=self._state.restarts,
            last_check_at=self._state.last_check_at,
            result=self._result,
            awaiting_approval=self._awaiting_approval,
            canary_since=self._state.canary_since,
            canary_sprt=self._state.canary_sprt,
        )

    @workflow.update(name=APPROVE_UPDATE)
    async def approve(self, approval: Approval) -> str:
        """Approve a challenger that has no champion; answers once it is in CANARY."""
        self._state = self._state.model_copy(update={"approval": approval})
        await workflow.wait_condition(lambda: self._approval_answer is not None)
        applied, detail = self._approval_answer or (False, "no answer")
        if not applied:
            raise ApplicationError(detail, non_retryable=True)
        return detail

    @approve.validator
    def validate_approval(self, approval: Approval) -> None:
        if not self._awaiting_approval or self._state.approval is not None:
            raise ValueError(
                f"this evaluation is not waiting for an approval (it is {self._step}): only a"
                " challenger without a PRODUCTION champion, still in SHADOW, is approved"
            )

    @workflow.run
    async def run(self, params: EvaluationInput) -> EvaluationResult:
        self._state = params.state or EvaluationState.fresh(params.sprt)
        checks_this_run = 0
        while True:
            # Not while an approval waits to be applied: its update handler lives in this run.
            approval_pending = (
                self._state.approval is not None
                and self._state.canary_since is None
                and self._approval_answer is None
            )
            if not approval_pending and (
                checks_this_run >= params.checks_per_run
                or workflow.info().is_continue_as_new_suggested()
            ):
                self._step = "continuing as new"
                workflow.continue_as_new(params.model_copy(update={"state": self._state}))
            checks_this_run += 1
            self._step = "reading paired outcomes"
            batch = await workflow.execute_activity(
                PromotionActivityName.READ_PAIRED_OUTCOMES,
                PairedOutcomesRequest(
                    tenant_id=params.tenant_id,
                    model_version_id=params.model_version_id,
                    after=self._state.cursor,
                    limit=params.batch_size,
                    settle=params.settle,
                ),
                result_type=PairedOutcomes,
                start_to_close_timeout=STEP_TIMEOUT,
                retry_policy=EVALUATION_RETRY,
            )
            self._state = self._state.model_copy(
                update={"checks": self._state.checks + 1, "last_check_at": workflow.now()}
            )
            if batch.challenger_status is ModelStatus.SHADOW:
                result = await self._shadow_check(params, batch)
            elif batch.challenger_status is ModelStatus.CANARY:
                result = await self._canary_check(params, batch)
            else:
                found = batch.challenger_status or "not found"
                result = self._finish(
                    params,
                    EvaluationOutcome.ABANDONED,
                    f"model version {params.model_version_id} is {found}, not SHADOW or CANARY",
                )
            if result is not None:
                return result

    async def _shadow_check(
        self, params: EvaluationInput, batch: PairedOutcomes
    ) -> EvaluationResult | None:
        """One check in SHADOW; None means: check again."""
        if self._state.cursor is not None and batch.champion_id != self._state.champion_id:
            self._restart(params, batch.champion_id)
            return None
        if batch.champion_id is None:
            return await self._without_champion(params)
        self._awaiting_approval = False
        self._state = self._state.model_copy(
            update={
                "sprt": advance_sprt(self._state.sprt, batch.outcomes),
                "cursor": batch.cursor,
                "champion_id": batch.champion_id,
            }
        )
        decision = self._state.sprt.decision
        if decision is SprtDecision.CONTINUE:
            if not batch.more:
                self._step = "waiting for more paired outcomes"
                await workflow.sleep(params.check_interval)
            return None
        if decision is SprtDecision.REJECT:
            return await self._reject(params, describe(self._state.sprt))
        return await self._enter_canary(params, describe(self._state.sprt))

    async def _without_champion(self, params: EvaluationInput) -> EvaluationResult | None:
        """No PRODUCTION version to compare with: an approval, or enough evidence."""
        self._state = self._state.model_copy(update={"champion_id": None})
        approval = self._state.approval
        if approval is not None:
            return await self._enter_canary(params, describe_approval(approval), approval=approval)
        self._step = "checking the evidence without a champion"
        evidence: ChallengerEvidence = await workflow.execute_activity(
            PromotionActivityName.READ_CHALLENGER_EVIDENCE,
            ChallengerEvidenceRequest(
                tenant_id=params.tenant_id,
                model_version_id=params.model_version_id,
                settle=params.settle,
            ),
            result_type=ChallengerEvidence,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=EVALUATION_RETRY,
        )
        if evidence_suffices(evidence, params.min_outcomes):
            return await self._enter_canary(params, describe_evidence(evidence), evidence=evidence)
        self._awaiting_approval = True
        self._step = (
            f"waiting for an approval or {params.min_outcomes} outcomes no worse than the"
            f" baseline (no champion; {evidence.outcomes} outcomes so far)"
        )
        with suppress(TimeoutError):  # no approval within the interval: check again
            await workflow.wait_condition(
                lambda: self._state.approval is not None, timeout=params.check_interval
            )
        return None

    async def _enter_canary(
        self,
        params: EvaluationInput,
        reason: str,
        *,
        approval: Approval | None = None,
        evidence: ChallengerEvidence | None = None,
    ) -> EvaluationResult | None:
        conclusion = await self._conclude(
            PromotionActivityName.ENTER_CANARY,
            params,
            "entering CANARY",
            reason,
            sprt=self._state.sprt,
            approval=approval,
            evidence=evidence,
        )
        if conclusion.status is ConclusionStatus.CHAMPION_CHANGED:
            self._restart(params, conclusion.champion_id)
            return None
        if conclusion.status is ConclusionStatus.CHALLENGER_MOVED:
            return self._finish(params, EvaluationOutcome.ABANDONED, conclusion.detail)
        self._awaiting_approval = False
        self._state = self._state.model_copy(
            update={
                "canary_since": workflow.now(),
                "canary_sprt": EvaluationState.fresh(params.sprt).sprt,
            }
        )
        if approval is not None:
            self._approval_answer = (
                True,
                f"model version {params.model_version_id} is CANARY: {reason}",
            )
        return None

    async def _canary_check(
        self, params: EvaluationInput, batch: PairedOutcomes
    ) -> EvaluationResult | None:
        """One check in CANARY: the canary's own SPRT, then PRODUCTION once the dwell is over."""
        self._awaiting_approval = False
        now = workflow.now()
        since = self._state.canary_since or now  # found in CANARY (e.g. a restarted evaluation)
        canary = self._state.canary_sprt or EvaluationState.fresh(params.sprt).sprt
        if batch.champion_id != self._state.champion_id:
            canary = EvaluationState.fresh(params.sprt).sprt  # measured against another model
        elif batch.champion_id is not None:
            canary = advance_sprt(canary, batch.outcomes)
        self._state = self._state.model_copy(
            update={
                "canary_since": since,
                "canary_sprt": canary,
                "cursor": batch.cursor,
                "champion_id": batch.champion_id,
            }
        )
        if canary.decision is SprtDecision.REJECT:
            return await self._reject(params, f"in CANARY: {describe(canary)}")
        remaining = since + params.canary_dwell - now
        if remaining <= timedelta(0):
            return await self._promote(params, since, canary)
        if not batch.more:
            self._step = f"in CANARY since {since.isoformat()}"
            await workflow.sleep(min(params.check_interval, remaining))
        return None

    async def _promote(
        self, params: EvaluationInput, since: datetime, canary: SprtResult
    ) -> EvaluationResult | None:
        reason = (
            f"CANARY since {since.isoformat()} for {params.canary_dwell} without rejection;"
            f" {describe(canary)}"
        )
        conclusion = await self._conclude(
            PromotionActivityName.PROMOTE_CHALLENGER, params, "promoting", reason, sprt=canary
        )
        if conclusion.status is ConclusionStatus.CHAMPION_CHANGED:
            self._state = self._state.model_copy(
                update={
                    "champion_id": conclusion.champion_id,
                    "canary_sprt": EvaluationState.fresh(params.sprt).sprt,
                }
            )
            return None
        if conclusion.status is ConclusionStatus.CHALLENGER_MOVED:
            return self._finish(params, EvaluationOutcome.ABANDONED, conclusion.detail)
        return self._finish(
            params,
            EvaluationOutcome.ACCEPTED,
            conclusion.detail,
            archived_id=conclusion.archived_id,
        )

    async def _reject(self, params: EvaluationInput, reason: str) -> EvaluationResult | None:
        conclusion = await self._conclude(
            PromotionActivityName.REJECT_CHALLENGER,
            params,
            "rejecting",
            reason,
            sprt=self._state.canary_sprt or self._state.sprt,
        )
        if conclusion.status is ConclusionStatus.CHAMPION_CHANGED:
            self._restart(params, conclusion.champion_id)
            return None
        if conclusion.status is ConclusionStatus.CHALLENGER_MOVED:
            return self._finish(params, EvaluationOutcome.ABANDONED, conclusion.detail)
        return self._finish(params, EvaluationOutcome.REJECTED, conclusion.detail)

    async def _conclude(
        self,
        activity: str,
        params: EvaluationInput,
        step: str,
        reason: str,
        *,
        sprt: SprtResult,
        approval: Approval | None = None,
        evidence: ChallengerEvidence | None = None,
    ) -> Conclusion:
        self._step = step
        conclusion: Conclusion = await workflow.execute_activity(
            activity,
            ConcludeInput(
                tenant_id=params.tenant_id,
                model_version_id=params.model_version_id,
                champion_id=self._state.champion_id,
                sprt=sprt,
                workflow_id=workflow.info().workflow_id,
                reason=reason,
                approval=approval,
                evidence=evidence,
            ),
            result_type=Conclusion,
            start_to_close_timeout=STEP_TIMEOUT,
            retry_policy=EVALUATION_RETRY,
        )
        return conclusion

    def _restart(self, params: EvaluationInput, champion_id: UUID | None) -> None:
        """The champion changed: the wins so far were against another model."""
        workflow.logger.info(
            "champion changed from %s to %s: restarting the test",
            self._state.champion_id,
            champion_id,
        )
        self._state = EvaluationState.fresh(params.sprt).model_copy(
            update={
                "checks": self._state.checks,
                "restarts": self._state.restarts + 1,
                "last_check_at": self._state.last_check_at,
                "approval": self._state.approval,
            }
        )

    def _finish(
        self,
        params: EvaluationInput,
        outcome: EvaluationOutcome,
        detail: str,
        *,
        archived_id: UUID | None = None,
    ) -> EvaluationResult:
        self._step = "finished"
        self._awaiting_approval = False
        if self._state.approval is not None and self._approval_answer is None:
            self._approval_answer = (False, f"not applied: the evaluation ended {outcome.value}")
        self._result = EvaluationResult(
            tenant_id=params.tenant_id,
            model_version_id=params.model_version_id,
            outcome=outcome,
            detail=detail,
            sprt=self._state.sprt,
            champion_id=self._state.champion_id,
            archived_id=archived_id,
            canary_sprt=self._state.canary_sprt,
            approval=self._state.approval,
        )
        workflow.logger.info("shadow evaluation %s: %s", outcome.value, detail)
        return self._result
