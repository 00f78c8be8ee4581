"""The database-held gauges (adapters.metrics.DatabaseState) on a real Postgres: open dead
letters per queue, the retraining cooldown after a rollback, active training runs and tenant
names are read at scrape time, so a process that just started reports them right; a database
that cannot be read gives rai_metrics_database_up 0 and none of them."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adapters.metrics import DatabaseState, Metrics, process_exposition
from domain.model_status import ModelStatus
from services.pipeline import PipelineService, resolve_dead_letter
from services.registry import ModelRegistryService
from settings import app_dsn_for
from tests.integration.promotion_support import model_in
from tests.integration.services_env import ServicesEnv

pytestmark = pytest.mark.integration


async def scrape(dsn: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """What a freshly started process exports (no in-process events at all)."""
    state = DatabaseState(dsn, max_age=0)
    await state.refresh()
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    body = process_exposition(Metrics(), state).decode()
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            found.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = float(s.value)
    return found


async def test_gauges_come_from_the_database(services_env: ServicesEnv, db_admin_dsn: str) -> None:
    env = services_env
    quiet = await env.tenant("quiet farm")
    failing = await env.tenant("failing farm")
    rolled = await env.tenant("rolled back farm")
    pipeline = PipelineService(env.db, env.store, datasets_bucket="unused")
    letters = [
        await pipeline.dead_letter(
            failing, workflow_id=f"retrain/{failing}", error="boom", attempts=5,
            training_run_id=None,
        )
        for _ in range(2)
    ]  # fmt: skip
    await model_in(env, rolled, ModelStatus.PRODUCTION)
    await ModelRegistryService(env.db, env.store, env.platform).rollback(rolled, "yield")

    found = await scrape(db_admin_dsn)
    assert found["rai_metrics_database_up"] == {(): 1.0}
    assert found["rai_dead_letters_open"] == {(("queue", "training-queue-failed"),): 2.0}
    assert found["rai_retrain_cooldown_active"] == {
        (("tenant", str(quiet)),): 0.0,
        (("tenant", str(failing)),): 0.0,
        (("tenant", str(rolled)),): 1.0,
    }
    assert found["rai_tenant_info"][(("name", "rolled back farm"), ("tenant", str(rolled)))] == 1
    assert found["rai_training_runs_active"][(("status", "RUNNING"), ("tenant", str(quiet)))] == 0

    await resolve_dead_letter(env.db, failing, letters[0])
    assert (await scrape(db_admin_dsn))["rai_dead_letters_open"] == {
        (("queue", "training-queue-failed"),): 1.0
    }


@pytest.mark.parametrize("login", ["rai_app", "nowhere"])
async def test_a_database_that_cannot_give_totals_withholds_the_gauges(
    services_env: ServicesEnv, db_admin_dsn: str, login: str
) -> None:
    # rai_app sees one tenant at a time (row-level security): it would report zeros, so its
    # login is refused like an unreachable server.
    tenant = await services_env.tenant("farm")
    await PipelineService(services_env.db, services_env.store, datasets_bucket="x").dead_letter(
        tenant, workflow_id="w", error="boom", attempts=1, training_run_id=None
    )
    dsn = app_dsn_for(db_admin_dsn) if login == "rai_app" else "postgresql://x@127.0.0.1:1/none"
    found = await scrape(dsn)
    assert found["rai_metrics_database_up"] == {(): 0.0}
    assert "rai_dead_letters_open" not in found
