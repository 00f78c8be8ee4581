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

No champion: when the model has no PRODUCTION version there is nothing to compare against, and
the challenger — already registered with provenance, bias-audited and signature-checked on its
way to SHADOW — becomes the first PRODUCTION version at once (reason "first production
version"), through CANARY like every promotion.

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
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from domain.model_status import ModelStatus
from domain.sprt import SprtConfig, SprtDecision, SprtResult, start_sprt

DEFAULT_CHECK_INTERVAL = timedelta(hours=1)
# Events younger than this are left for a later check: an ingest transaction that started
# earlier but commits later must not land behind the cursor.
DEFAULT_SETTLE = timedelta(minutes=5)
DEFAULT_BATCH_SIZE = 500
DEFAULT_CHECKS_PER_RUN = 100
FIRST_PRODUCTION_REASON = "first production version"
DECISION_CHECK_TYPE = "shadow_evaluation.decision"


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


class ConclusionStatus(StrEnum):
    DONE = "DONE"
    # The PRODUCTION version is no longer the one the evaluation compared against.
    CHAMPION_CHANGED = "CHAMPION_CHANGED"
    # The challenger is no longer in SHADOW (moved by someone else).
    CHALLENGER_MOVED = "CHALLENGER_MOVED"


class Conclusion(_Message):
    status: ConclusionStatus
    detail: str
    champion_id: UUID | None = None
    archived_id: UUID | None = None


class PromotionActivityName:
    """The registered names of the shadow evaluation's activities."""

    READ_PAIRED_OUTCOMES = "read_paired_outcomes"
    PROMOTE_CHALLENGER = "promote_challenger"
    REJECT_CHALLENGER = "reject_challenger"
