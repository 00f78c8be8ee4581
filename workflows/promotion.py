"""ShadowEvaluation(model version): the SPRT guard (M24) between a SHADOW challenger and its
model's PRODUCTION champion, on paired outcomes from learning events.

Workflow id ``shadow/{model_version_id}``. Each check reads the paired outcomes newer than the
workflow's cursor and feeds them, in event order, to the sequential test whose state lives
here (the wins and observations, advanced by the pure ``domain.promotion.advance_sprt``,
which equals ``domain.sprt``'s update without touching numpy inside the sandbox):

- ACCEPT: SHADOW -> CANARY -> PRODUCTION, the previous PRODUCTION -> ARCHIVED, in one
  transaction; result ACCEPTED.
- REJECT: SHADOW -> REJECTED; result REJECTED.
- CONTINUE: a durable timer (``check_interval``, 1 h by default), then the next check; a full
  batch is followed by the next one at once.

No champion: the challenger becomes the first PRODUCTION version straight away. A champion that
changes mid-evaluation restarts the test against the new one. A challenger that leaves SHADOW
by other hands ends the evaluation ABANDONED. The decision (with the SPRT numbers) is appended
to the tenant's audit chain in the same transaction as the status moves. The workflow continues
as new every ``checks_per_run`` checks, carrying its state, so its history stays small; the
``progress`` query answers the decision, ratio, boundaries and counts at any time.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.model_status import ModelStatus
    from domain.promotion import (
        FIRST_PRODUCTION_REASON,
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


@workflow.defn(name="ShadowEvaluation")
class ShadowEvaluation:
    def __init__(self) -> None:
        self._step = "starting"
        self._state = EvaluationState.fresh(SprtConfig())
        self._result: EvaluationResult | None = None

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
        )

    @workflow.run
    async def run(self, params: EvaluationInput) -> EvaluationResult:
        self._state = params.state or EvaluationState.fresh(params.sprt)
        checks_this_run = 0
        while True:
            if (
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
            if batch.challenger_status is not ModelStatus.SHADOW:
                found = batch.challenger_status or "not found"
                return self._finish(
                    params,
                    EvaluationOutcome.ABANDONED,
                    f"model version {params.model_version_id} is {found}, not SHADOW",
                )
            if self._state.cursor is not None and batch.champion_id != self._state.champion_id:
                self._restart(params, batch.champion_id)
                continue
            if batch.champion_id is None:
                self._state = self._state.model_copy(update={"champion_id": None})
                promote, reason = True, FIRST_PRODUCTION_REASON
            else:
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
                    continue
                promote, reason = decision is SprtDecision.ACCEPT, describe(self._state.sprt)
            conclusion = await self._conclude(params, promote=promote, reason=reason)
            if conclusion.status is ConclusionStatus.CHAMPION_CHANGED:
                self._restart(params, conclusion.champion_id)
                continue
            if conclusion.status is ConclusionStatus.CHALLENGER_MOVED:
                return self._finish(params, EvaluationOutcome.ABANDONED, conclusion.detail)
            return self._finish(
                params,
                EvaluationOutcome.ACCEPTED if promote else EvaluationOutcome.REJECTED,
                conclusion.detail,
                archived_id=conclusion.archived_id,
            )

    async def _conclude(self, params: EvaluationInput, *, promote: bool, reason: str) -> Conclusion:
        self._step = "promoting" if promote else "rejecting"
        conclusion: Conclusion = await workflow.execute_activity(
            PromotionActivityName.PROMOTE_CHALLENGER
            if promote
            else PromotionActivityName.REJECT_CHALLENGER,
            ConcludeInput(
                tenant_id=params.tenant_id,
                model_version_id=params.model_version_id,
                champion_id=self._state.champion_id,
                sprt=self._state.sprt,
                workflow_id=workflow.info().workflow_id,
                reason=reason,
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
        self._result = EvaluationResult(
            tenant_id=params.tenant_id,
            model_version_id=params.model_version_id,
            outcome=outcome,
            detail=detail,
            sprt=self._state.sprt,
            champion_id=self._state.champion_id,
            archived_id=archived_id,
        )
        workflow.logger.info("shadow evaluation %s: %s", outcome.value, detail)
        return self._result
