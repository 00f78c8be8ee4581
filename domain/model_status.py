"""The model-status state machine. The database table ``model_status_transitions`` is the
source of truth; a test proves this copy equals it."""

from __future__ import annotations

from enum import StrEnum


class ModelStatus(StrEnum):
    REGISTERED = "REGISTERED"
    SHADOW = "SHADOW"
    CANARY = "CANARY"
    PRODUCTION = "PRODUCTION"
    ARCHIVED = "ARCHIVED"
    REJECTED = "REJECTED"
    ROLLED_BACK = "ROLLED_BACK"


ALLOWED_TRANSITIONS: frozenset[tuple[ModelStatus, ModelStatus]] = frozenset(
    {
        (ModelStatus.REGISTERED, ModelStatus.SHADOW),
        (ModelStatus.REGISTERED, ModelStatus.REJECTED),
        (ModelStatus.SHADOW, ModelStatus.CANARY),
        (ModelStatus.SHADOW, ModelStatus.REJECTED),
        (ModelStatus.CANARY, ModelStatus.PRODUCTION),
        (ModelStatus.CANARY, ModelStatus.REJECTED),
        (ModelStatus.PRODUCTION, ModelStatus.ARCHIVED),
        (ModelStatus.PRODUCTION, ModelStatus.ROLLED_BACK),
        # Restoring the previous production version during a rollback.
        (ModelStatus.ARCHIVED, ModelStatus.PRODUCTION),
    }
)


class IllegalTransitionError(ValueError):
    def __init__(self, current: ModelStatus, target: ModelStatus) -> None:
        super().__init__(f"illegal model status transition {current} -> {target}")
        self.current = current
        self.target = target


def can_transition(current: ModelStatus, target: ModelStatus) -> bool:
    return (current, target) in ALLOWED_TRANSITIONS


def require_transition(current: ModelStatus, target: ModelStatus) -> None:
    if not can_transition(current, target):
        raise IllegalTransitionError(current, target)
