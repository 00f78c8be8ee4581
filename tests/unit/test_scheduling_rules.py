"""Interval parsing and naming of retraining schedules (no Temporal needed)."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

import pytest

from domain.schedules import IntervalError, format_interval, parse_interval, schedule_id

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", timedelta(hours=24)),
        ("30m", timedelta(minutes=30)),
        ("7d", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        (" 90S ", timedelta(seconds=90)),
        ("1d12h", timedelta(days=1, hours=12)),
    ],
)
def test_intervals_parse(text: str, expected: timedelta) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "24x", "-1h", "1.5h", "1 h", "24h!", "1h 30m"])
def test_malformed_intervals_are_refused(text: str) -> None:
    with pytest.raises(IntervalError, match="not an interval"):
        parse_interval(text)


@pytest.mark.parametrize("text", ["0m", "59s", "0d"])
def test_intervals_below_a_minute_are_refused(text: str) -> None:
    with pytest.raises(IntervalError, match="minimum"):
        parse_interval(text)


@pytest.mark.parametrize(
    ("interval", "text"),
    [
        (timedelta(hours=24), "1d"),
        (timedelta(minutes=30), "30m"),
        (timedelta(hours=1, minutes=30), "1h30m"),
        (timedelta(days=7, seconds=5), "7d5s"),
    ],
)
def test_intervals_format_to_what_parses_back(interval: timedelta, text: str) -> None:
    assert format_interval(interval) == text
    assert parse_interval(text) == interval


def test_one_schedule_id_per_tenant() -> None:
    tenant = UUID(int=5)
    assert schedule_id(tenant) == f"retrain-schedule/{tenant}"
