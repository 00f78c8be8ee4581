"""The shadow evaluation's pure rules: who wins a pair, and its messages' round trip."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from temporalio.contrib.pydantic import pydantic_data_converter

from domain.promotion import (
    EvaluationInput,
    EvaluationState,
    EventCursor,
    advance_sprt,
    challenger_won,
    shadow_evaluation_workflow_id,
)
from domain.sprt import SprtConfig, sprt, start_sprt

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("outcome", "challenger", "champion", "won"),
    [
        (10.0, 10.5, 11.0, True),  # closer
        (10.0, 9.0, 10.5, False),  # further
        (10.0, 9.5, 10.5, False),  # a tie is a loss: the challenger must be better
        (10.0, 10.0, 10.0, False),  # identical predictions
        (-2.0, -2.1, 0.0, True),
    ],
)
def test_the_challenger_wins_only_when_strictly_closer(
    outcome: float, challenger: float, champion: float, won: bool
) -> None:
    assert challenger_won(outcome, challenger, champion) is won


def test_an_identical_copy_of_the_champion_is_rejected() -> None:
    result = sprt([challenger_won(5.0, 4.0, 4.0)] * 40)
    assert result.decision.value == "REJECT"
    assert result.observations == 15


def test_workflow_id_is_per_model_version() -> None:
    assert shadow_evaluation_workflow_id(UUID(int=3)) == f"shadow/{UUID(int=3)}"


async def test_the_carried_state_survives_the_data_converter() -> None:
    config = SprtConfig(delta=0.1)
    state = EvaluationState(
        sprt=sprt([True, False, True], config),
        champion_id=UUID(int=2),
        cursor=EventCursor(received_at=datetime(2026, 5, 1, 12, tzinfo=UTC), event_id=UUID(int=9)),
        checks=4,
        restarts=1,
        last_check_at=datetime(2026, 5, 1, 13, tzinfo=UTC),
    )
    params = EvaluationInput(
        tenant_id=UUID(int=1),
        model_version_id=UUID(int=7),
        check_interval=timedelta(minutes=90),
        sprt=config,
        state=state,
    )
    [payload] = await pydantic_data_converter.encode([params])
    [decoded] = await pydantic_data_converter.decode([payload], [EvaluationInput])
    assert decoded == params


@given(
    st.lists(st.lists(st.booleans(), max_size=60), max_size=8),
    st.sampled_from([SprtConfig(), SprtConfig(delta=0.2, alpha=0.1, beta=0.1)]),
)
def test_advance_sprt_equals_the_domain_update(
    batches: list[list[bool]], config: SprtConfig
) -> None:
    by_update = by_advance = start_sprt(config)
    for batch in batches:
        by_update = by_update.update(batch)
        by_advance = advance_sprt(by_advance, batch)
        assert by_advance == by_update
    assert by_advance == sprt([flag for batch in batches for flag in batch], config)
