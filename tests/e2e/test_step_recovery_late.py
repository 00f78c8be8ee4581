"""Issue 11, item 3b for the steps after training: registration and the bias audit (see
tests/e2e/test_step_recovery.py, which has the test's description and the earlier steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from domain.pipeline import ActivityName
from tests.e2e.test_step_recovery import kill_the_worker_during
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.e2e

STEPS = [ActivityName.REGISTER_MODEL, ActivityName.AUDIT_MODEL]


@pytest.mark.parametrize("step", STEPS)
async def test_a_worker_killed_during_a_step_costs_seconds(
    temporal: WorkflowEnvironment,
    services_env: ServicesEnv,
    db_admin_dsn: str,
    tmp_path: Path,
    step: str,
) -> None:
    await kill_the_worker_during(step, temporal, services_env, db_admin_dsn, tmp_path)
