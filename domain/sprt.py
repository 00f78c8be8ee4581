"""StatSigGuard (M24): Wald's sequential probability ratio test on paired outcomes.

Each observation is one event scored by both models: ``True`` when the challenger's loss beat
the champion's. Under H0 the challenger wins with probability ``p0 = 0.5`` (no better), under
H1 with ``p1 = 0.5 + delta``. After ``n`` observations with ``w`` wins the log-likelihood ratio
is ``w·ln(p1/p0) + (n - w)·ln((1 - p1)/(1 - p0))``, a function of the two counts only, so
feeding the same outcomes in any batching gives bit-for-bit the same result. The test stops at
the first observation where the ratio reaches ``ln((1 - beta)/alpha)`` (ACCEPT: H1, the
challenger is better) or falls to ``ln(beta/(1 - alpha))`` (REJECT: H0); before that it is
CONTINUE. A decided test is final: later outcomes are ignored, because continuing past the
boundary would void the error guarantees (type-I error about ``alpha``, power about
``1 - beta``; the unit tests measure both by simulation and by exact calculation).

How an observation is scored (and what a tie counts as) is the caller's rule: the shadow
evaluation's is in domain/promotion.py (a tie counts as a loss for the challenger).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum
from typing import Self

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

_P0 = 0.5

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
CodeArray = npt.NDArray[np.int8]

# Vectorised decisions: one small integer per stream.
ACCEPT_CODE, CONTINUE_CODE, REJECT_CODE = 1, 0, -1


class SprtDecision(StrEnum):
    ACCEPT = "ACCEPT"
    REJECT = "REJECT"
    CONTINUE = "CONTINUE"


class SprtConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    delta: float = Field(default=0.05, gt=0, lt=0.5)
    alpha: float = Field(default=0.05, gt=0, lt=1)
    beta: float = Field(default=0.20, gt=0, lt=1)

    @model_validator(mode="after")
    def _boundaries_straddle_zero(self) -> Self:
        if self.alpha + self.beta >= 1:
            raise ValueError("alpha + beta must be below 1")
        return self

    @property
    def p0(self) -> float:
        return _P0

    @property
    def p1(self) -> float:
        return _P0 + self.delta

    @property
    def upper_boundary(self) -> float:
        return math.log((1 - self.beta) / self.alpha)

    @property
    def lower_boundary(self) -> float:
        return math.log(self.beta / (1 - self.alpha))

    @property
    def win_step(self) -> float:
        return math.log(self.p1 / self.p0)

    @property
    def loss_step(self) -> float:
        return math.log((1 - self.p1) / (1 - self.p0))

    def log_likelihood_ratio(self, wins: int, observations: int) -> float:
        return wins * self.win_step + (observations - wins) * self.loss_step


class SprtResult(BaseModel):
    """The state of one test, and its result: start with :func:`start_sprt`, feed batches with
    :meth:`update`. Every field follows from ``config``, ``wins`` and ``observations``; they are
    stored (and checked) so that the serialised result reads on its own."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    config: SprtConfig
    decision: SprtDecision
    log_likelihood_ratio: float
    upper_boundary: float
    lower_boundary: float
    observations: int = Field(ge=0)
    wins: int = Field(ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.wins > self.observations:
            raise ValueError("wins cannot exceed observations")
        llr = self.config.log_likelihood_ratio(self.wins, self.observations)
        if (self.log_likelihood_ratio, self.upper_boundary, self.lower_boundary) != (
            llr,
            self.config.upper_boundary,
            self.config.lower_boundary,
        ):
            raise ValueError("the ratio and boundaries do not follow from config and counts")
        if self.decision is not _decision(self.config, llr):
            raise ValueError(f"decision {self.decision} does not match the ratio {llr:.6g}")
        return self

    @classmethod
    def after(cls, config: SprtConfig, wins: int, observations: int) -> SprtResult:
        """The state of a test that has seen ``wins`` out of ``observations`` and not stopped
        earlier."""
        llr = config.log_likelihood_ratio(wins, observations)
        return cls(
            config=config,
            decision=_decision(config, llr),
            log_likelihood_ratio=llr,
            upper_boundary=config.upper_boundary,
            lower_boundary=config.lower_boundary,
            observations=observations,
            wins=wins,
        )

    def update(self, outcomes: Iterable[bool] | BoolArray) -> SprtResult:
        """The state after ``outcomes`` (challenger-beat-champion flags, in event order)."""
        if self.decision is not SprtDecision.CONTINUE:
            return self
        batch = _as_outcomes(outcomes)
        if batch.size == 0:
            return self
        _, wins, observations = advance_streams(
            self.config,
            np.array([self.wins], dtype=np.int64),
            np.array([self.observations], dtype=np.int64),
            batch[np.newaxis, :],
        )
        return SprtResult.after(self.config, int(wins[0]), int(observations[0]))


def start_sprt(config: SprtConfig | None = None) -> SprtResult:
    return SprtResult.after(config or SprtConfig(), wins=0, observations=0)


def sprt(outcomes: Iterable[bool] | BoolArray, config: SprtConfig | None = None) -> SprtResult:
    """Run the test over ``outcomes`` at once."""
    return start_sprt(config).update(outcomes)


def advance_streams(
    config: SprtConfig, wins: IntArray, observations: IntArray, outcomes: BoolArray
) -> tuple[CodeArray, IntArray, IntArray]:
    """Feed undecided tests (one per row of ``outcomes``) a batch each.

    Returns per row the decision code (:data:`ACCEPT_CODE`, :data:`REJECT_CODE` or
    :data:`CONTINUE_CODE`) and the wins and observations counted up to the stopping point (the
    whole batch when still undecided). Vectorised so a simulation can run thousands of tests.
    """
    steps = outcomes.shape[1]
    cumulative_wins = wins[:, np.newaxis] + np.cumsum(outcomes, axis=1, dtype=np.int64)
    cumulative_n = observations[:, np.newaxis] + np.arange(1, steps + 1, dtype=np.int64)
    llr = cumulative_wins * config.win_step + (cumulative_n - cumulative_wins) * config.loss_step
    accepted = llr >= config.upper_boundary
    stopped = accepted | (llr <= config.lower_boundary)
    decided = stopped.any(axis=1)
    rows = np.arange(outcomes.shape[0])
    stop_at = np.where(decided, stopped.argmax(axis=1), steps - 1)
    codes = np.where(
        decided, np.where(accepted[rows, stop_at], ACCEPT_CODE, REJECT_CODE), CONTINUE_CODE
    ).astype(np.int8)
    return codes, cumulative_wins[rows, stop_at], cumulative_n[rows, stop_at]


def _decision(config: SprtConfig, llr: float) -> SprtDecision:
    if llr >= config.upper_boundary:
        return SprtDecision.ACCEPT
    if llr <= config.lower_boundary:
        return SprtDecision.REJECT
    return SprtDecision.CONTINUE


def _as_outcomes(outcomes: Iterable[bool] | BoolArray) -> BoolArray:
    batch = np.asarray(outcomes if isinstance(outcomes, np.ndarray) else list(outcomes))
    if batch.size == 0:
        return np.zeros(0, dtype=np.bool_)
    if batch.ndim != 1 or batch.dtype.kind != "b":
        raise ValueError("outcomes must be a flat sequence of booleans")
    return batch
