"""Worker settings for end-to-end tests: the test's own database, the run's S3 buckets and
Temporal dev server, fresh task queues and a state directory of the test's own."""

from __future__ import annotations

import uuid
from pathlib import Path

from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from settings import Settings, app_dsn_for, metrics_dsn_for
from tests.integration.services_env import ServicesEnv

# Lease keys of this test run; tests/e2e/conftest.py deletes them when the run ends.
REDIS_KEY_PREFIX = f"rai-test:{uuid.uuid4()}:"


def worker_settings(
    env: ServicesEnv, db_admin_dsn: str, state: Path, temporal: WorkflowEnvironment
) -> Settings:
    s3 = env.settings
    assert s3.s3_secret_key is not None
    return Settings(
        database_url=db_admin_dsn,
        app_database_url=app_dsn_for(db_admin_dsn),
        metrics_database_url=metrics_dsn_for(db_admin_dsn),
        s3_endpoint_url=s3.s3_endpoint_url,
        s3_region=s3.s3_region,
        s3_access_key=s3.s3_access_key,
        s3_secret_key=SecretStr(s3.s3_secret_key.get_secret_value()),
        s3_registry_bucket=s3.s3_registry_bucket,
        s3_datasets_bucket=s3.s3_datasets_bucket,
        state_dir=state,
        platform_signing_key=SecretStr(env.platform.seed_hex()),
        temporal_address=temporal.client.service_client.config.target_host,
        redis_key_prefix=REDIS_KEY_PREFIX,
        # The machine's shared Redis runs without an append-only file.
        redis_require_aof=False,
        training_task_queue=f"training-{uuid.uuid4()}",
        drift_task_queue=f"drift-{uuid.uuid4()}",
        # `rai worker` processes of a test (and of tests running at once) each pick a free port.
        worker_metrics_port=0,
    )
