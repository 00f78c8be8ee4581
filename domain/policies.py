"""Governance policies that need no I/O: retrain cooldown (M23) and event idempotency (M18)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

ROLLBACK_COOLDOWN = timedelta(days=7)


def _aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment


def cooldown_ends_at(
    last_rollback_at: datetime | None, cooldown: timedelta = ROLLBACK_COOLDOWN
) -> datetime | None:
    """When retraining is allowed again after the tenant's last rollback (None: no rollback)."""
    if last_rollback_at is None:
        return None
    return _aware(last_rollback_at, "last_rollback_at") + cooldown


def cooldown_active(
    last_rollback_at: datetime | None, now: datetime, cooldown: timedelta = ROLLBACK_COOLDOWN
) -> bool:
    ends = cooldown_ends_at(last_rollback_at, cooldown)
    return ends is not None and _aware(now, "now") < ends


class EventOutcome(StrEnum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    CONFLICT = "CONFLICT"
    REJECTED = "REJECTED"


def replay_outcome(stored_payload_sha256: str, incoming_payload_sha256: str) -> EventOutcome:
    """An event whose (season, field) is already stored: the same payload is a harmless
    duplicate; a different one is a conflict, and the stored observation is never overwritten."""
    if stored_payload_sha256 == incoming_payload_sha256:
        return EventOutcome.DUPLICATE
    return EventOutcome.CONFLICT
