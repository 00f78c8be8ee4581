"""Intervals as people type them (``30m``, ``24h``, ``7d``, ``1h30m``) and the id of a tenant's
retraining schedule. Pure: the Temporal side lives in ``starter``."""

from __future__ import annotations

import re
from datetime import timedelta
from uuid import UUID

SCHEDULE_ID_PREFIX = "retrain-schedule/"
MINIMUM_INTERVAL = timedelta(minutes=1)
_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_PART = re.compile(r"(\d+)([dhms])")
_INTERVAL = re.compile(r"(?:\d+[dhms])+")


class IntervalError(ValueError):
    """Text that is not an interval the platform accepts."""


def schedule_id(tenant_id: UUID) -> str:
    """One retraining schedule per tenant: Temporal refuses a second schedule of this id."""
    return f"{SCHEDULE_ID_PREFIX}{tenant_id}"


def parse_interval(text: str) -> timedelta:
    """``30m``, ``24h``, ``7d``, ``1h30m``: whole numbers of days, hours, minutes, seconds, at
    least one minute."""
    compact = text.strip().lower()
    if not _INTERVAL.fullmatch(compact):
        raise IntervalError(
            f"not an interval: {text!r} (use a number and a unit d/h/m/s, e.g. 30m, 24h, 7d)"
        )
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(compact))
    interval = timedelta(seconds=seconds)
    if interval < MINIMUM_INTERVAL:
        raise IntervalError(f"interval {text!r} is shorter than the minimum of 1m")
    return interval


def format_interval(interval: timedelta) -> str:
    """The shortest spelling :func:`parse_interval` reads back (``1d``, ``1h30m``)."""
    remaining = int(interval.total_seconds())
    if remaining <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS.items():
        count, remaining = divmod(remaining, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
