"""The shadow evaluation's vocabulary (M24): challenger against champion on paired outcomes.

A *paired outcome* is a learning event whose payload carries the observed ``outcome`` and, in
``predictions``, what both models predicted for it: the challenger (the SHADOW version under
evaluation) under the key ``str(model_version_id)`` (the canonical lowercase UUID) and the
champion (the model's current PRODUCTION version) under its own id. The challenger wins a pair
when its absolute error is strictly smaller than the champion's.

Ties count as losses. The challenger must prove itself *better* (H1 of the SPRT), so a pair
that shows no difference is evidence for H0; an identical copy of the champion is thereby
rejected after a handful of events instead of being evaluated forever (dropping ties, as a
plain sign test would, leaves such a copy at CONTINUE indefinitely).

Stages. SHADOW: the challenger is judged against the champion by the SPRT; ACCEPT moves it to
CANARY, REJECT to REJECTED. CANARY is a stage of its own: the challenger stays there for
``canary_dwell`` (24 h by default) while a fresh SPRT keeps reading the paired outcomes that
arrive meanwhile; a REJECT during the dwell ends it REJECTED, otherwise at the end of the dwell
it becomes PRODUCTION and the previous PRODUCTION version is ARCHIVED.

No champion: when the model has no PRODUCTION version there is nothing to compare against, so
the challenger does not become PRODUCTION without evidence. It waits in SHADOW for either

- an explicit approval (``rai model approve --model-version ID --reason TEXT``: the workflow's
  ``approve`` update, validated, recorded with who and why in the status history and the audit
  chain), or
- at least ``min_outcomes`` outcomes (events carrying the observed outcome and the
  challenger's prediction) on which the challenger's mean absolute error is no worse than the
  *baseline*: the mean absolute error of always predicting the mean observed outcome of those
  same events (:func:`evidence_suffices`). A model that cannot beat that constant has learnt
  nothing worth serving.

Then it goes through CANARY like every promotion (without a champion there are no pairs, so the
canary's SPRT stays undecided and only the dwell applies).

Events are consumed incrementally in ``(received_at, id)`` order: the workflow keeps the cursor
of the last event it counted and the SPRT state; each check reads only newer events. A change
of champion during an evaluation restarts it (cursor and SPRT state), because the wins so far
were against another model.

One pydantic model per call, as for the retraining pipeline (``domain/pipeline.py``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from domain.model_status import ModelStatus
from domain.sprt import SprtConfig, SprtDecision, SprtResult, start_sprt

DEFAULT_CHECK_INTERVAL = timedelta(hours=1)
# Events younger than this are left for a later check: an ingest transaction that started
# earlier but commits later must not land behind the cursor.
DEFAULT_SETTLE = timedelta(minutes=5)
DEFAULT_BATCH_SIZE = 500
DEFAULT_CHECKS_PER_RUN = 100
DEFAULT_CANARY_DWELL = timedelta(hours=24)
DEFAULT_MIN_OUTCOMES = 200
DECISION_CHECK_TYPE = "shadow_evaluation.decision"
APPROVE_UPDATE = "approve"
SHADOW_EVALUATION_WORKFLOW = "ShadowEvaluation"


def shadow_evaluation_workflow_id(model_version_id: UUID) -> str:
    """One evaluation per model version: Temporal refuses a second start of this id."""
    return f"shadow/{model_version_id}"


def challenger_won(outcome: float, challenger: float, champion: float) -> bool:
    """Whether the challenger's prediction beat the champion's on one event (a tie loses)."""
    return abs(outcome - challenger) < abs(outcome - champion)


def advance_sprt(state: SprtResult, outcomes: Iterable[bool]) -> SprtResult:
    """:meth:`SprtResult.update` one outcome at a time in plain Python, for workflow code: the
    workflow sandbox must not reach numpy (whose submodules load lazily, at call time). Stops at
    the first crossing of a boundary, like ``update``; a property test proves the two equal."""
    if state.decision is not SprtDecision.CONTINUE:
        return state
    config = state.config
    wins, observations = state.wins, state.observations
    for won in outcomes:
        wins += won
        observations += 1
        llr = config.log_likelihood_ratio(wins, observations)
        if llr >= config.upper_boundary or llr <= config.lower_boundary:
            break
    return SprtResult.after(config, wins, observations)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class Approval(_Message):
    """Who approved a challenger that has no champion to be compared with, and why."""

    approver: NonBlank
    reason: NonBlank


class ChallengerEvidenceRequest(_Message):
    tenant_id: UUID
    model_version_id: UUID
    settle: timedelta = Field(ge=timedelta(0))


class ChallengerEvidence(_Message):
    """The challenger's error on every settled event with an outcome and its prediction, and
    the baseline's (always predicting those events' mean outcome); None without events."""

    outcomes: int = Field(ge=0)
    challenger_mae: float | None = None
    baseline_mae: float | None = None


def evidence_suffices(evidence: ChallengerEvidence, min_outcomes: int) -> bool:
    """Enough outcomes, and an error no worse than the baseline's (module docstring)."""
    return (
        evidence.outcomes >= min_outcomes
        and evidence.challenger_mae is not None
        and evidence.baseline_mae is not None
        and evidence.challenger_mae <= evidence.baseline_mae
    )


def describe_evidence(evidence: ChallengerEvidence) -> str:
    return (
        f"evidence without a champion: {evidence.outcomes} outcomes, mean absolute error"
        f" {evidence.challenger_mae} <= baseline {evidence.baseline_mae}"
    )


def describe_approval(approval: Approval) -> str:
    return f"approved by {approval.approver}: {approval.reason}"


class EventCursor(_Message):
    """The last learning event counted, in ``(received_at, id)`` order."""

    received_at: datetime
    event_id: UUID


class EvaluationOutcome(StrEnum):
    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    # The challenger left SHADOW (or never existed) outside the evaluation: nothing to decide.
    ABANDONED = "ABANDONED"


class EvaluationState(_Message):
    """Everything an evaluation has learnt; carried across continue-as-new."""

    sprt: SprtResult
    champion_id: UUID | None = None
    cursor: EventCursor | None = None
    checks: int = Field(default=0, ge=0)
    restarts: int = Field(default=0, ge=0)
    last_check_at: datetime | None = None
    # An approval received while waiting without a champion, not yet applied.
    approval: Approval | None = None
    # Set when the challenger entered CANARY: since when, and the canary's own SPRT.
    canary_since: datetime | None = None
    canary_sprt: SprtResult | None = None

    @classmethod
    def fresh(cls, config: SprtConfig) -> EvaluationState:
        return cls(sprt=start_sprt(config))


class EvaluationInput(_Message):
    tenant_id: UUID
    model_version_id: UUID
    check_interval: timedelta = Field(default=DEFAULT_CHECK_INTERVAL, gt=timedelta(0))
    settle: timedelta = Field(default=DEFAULT_SETTLE, ge=timedelta(0))
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, gt=0, le=10_000)
    sprt: SprtConfig = Field(default_factory=SprtConfig)
    # Checks per workflow run before continuing as new, so the history stays small.
    checks_per_run: int = Field(default=DEFAULT_CHECKS_PER_RUN, gt=0)
    # How long a challenger stays in CANARY (under its own SPRT) before PRODUCTION.
    canary_dwell: timedelta = Field(default=DEFAULT_CANARY_DWELL, gt=timedelta(0))
    # Without a champion: the outcomes needed as evidence instead of an approval.
    min_outcomes: int = Field(default=DEFAULT_MIN_OUTCOMES, gt=0)
    # Set only by continue-as-new.
    state: EvaluationState | None = None


class EvaluationResult(_Message):
    tenant_id: UUID
    model_version_id: UUID
    outcome: EvaluationOutcome
    detail: str
    sprt: SprtResult
    champion_id: UUID | None = None
    archived_id: UUID | None = None
    canary_sprt: SprtResult | None = None
    approval: Approval | None = None


class EvaluationProgress(_Message):
    """What the workflow's ``progress`` query answers."""

    step: str
    decision: SprtDecision
    log_likelihood_ratio: float
    upper_boundary: float
    lower_boundary: float
    observations: int
    wins: int
    champion_id: UUID | None
    checks: int
    restarts: int
    last_check_at: datetime | None
    result: EvaluationResult | None = None
    awaiting_approval: bool = False
    canary_since: datetime | None = None
    canary_sprt: SprtResult | None = None


class PairedOutcomesRequest(_Message):
    tenant_id: UUID
    model_version_id: UUID
    after: EventCursor | None
    limit: int = Field(gt=0)
    settle: timedelta = Field(ge=timedelta(0))


class PairedOutcomes(_Message):
    """The challenger's status, the current champion, and the paired outcomes after the cursor
    (challenger-won flags in event order)."""

    challenger_status: ModelStatus | None
    model_name: str | None = None
    champion_id: UUID | None = None
    outcomes: list[bool] = Field(default_factory=list)
    cursor: EventCursor | None = None
    # The batch was full: more events may be waiting.
    more: bool = False


class ConcludeInput(_Message):
    """Promote or reject the challenger, provided the champion is still ``champion_id``."""

    tenant_id: UUID
    model_version_id: UUID
    champion_id: UUID | None
    sprt: SprtResult
    workflow_id: str
    reason: str
    # What, besides the SPRT, the decision rests on (recorded in the audit chain).
    approval: Approval | None = None
    evidence: ChallengerEvidence | None = None


class ConclusionStatus(StrEnum):
    DONE = "DONE"
    # The PRODUCTION version is no longer the one the evaluation compared against.
    CHAMPION_CHANGED = "CHAMPION_CHANGED"
    # The challenger is no longer in the stage the decision was taken in (moved elsewhere).
    CHALLENGER_MOVED = "CHALLENGER_MOVED"


class Conclusion(_Message):
    status: ConclusionStatus
    detail: str
    champion_id: UUID | None = None
    archived_id: UUID | None = None


class PromotionActivityName:
    """The registered names of the shadow evaluation's activities."""

    READ_PAIRED_OUTCOMES = "read_paired_outcomes"
    READ_CHALLENGER_EVIDENCE = "read_challenger_evidence"
    ENTER_CANARY = "enter_canary"
    PROMOTE_CHALLENGER = "promote_challenger"
    REJECT_CHALLENGER = "reject_challenger"
