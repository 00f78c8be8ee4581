"""How a step's failure reaches the workflow: governance refusals are final (non-retryable);
anything else is retried by the pipeline's policy. Both carry the attempt number, so the
dead letter records how many attempts were made."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from temporalio import activity
from temporalio.exceptions import ApplicationError

from services.errors import GovernanceRefusal

GOVERNANCE_REFUSAL = "GovernanceRefusal"


@contextmanager
def step_failures() -> Iterator[None]:
    try:
        yield
    except ApplicationError:
        raise
    except GovernanceRefusal as exc:
        raise ApplicationError(
            str(exc), activity.info().attempt, type=GOVERNANCE_REFUSAL, non_retryable=True
        ) from exc
    except Exception as exc:
        raise ApplicationError(f"{exc}", activity.info().attempt, type=type(exc).__name__) from exc
