"""The real stack parts the battery runs against, started the way the tests start them
(tests/conftest.py, tests/pg.py, tests/s3.py, tests/temporal.py) and stopped at the end: a
private Postgres cluster on a port of its own (never the machine's shared server: scenario 4
restarts it) with one migrated template, a private SeaweedFS, a private ``redis-server``, and
its own Temporal dev server.

Each scenario gets a :class:`World` of its own: a fresh database cloned from the template,
its own buckets, task queues, Redis key prefix and state directory.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from adapters.objectstore import ObjectStore
from adapters.storage_setup import init_storage
from db.repository import Database
from devstack.net import free_port
from devstack.postgres import PrivatePostgres
from devstack.redis import PrivateRedis
from devstack.seaweed import SeaweedS3, generate_credentials
from domain.signing import Signer
from settings import Settings, app_dsn_for, metrics_dsn_for
from tests.integration.services_env import ServicesEnv
from tests.pg import cloned_database, create_template, drop_database
from tests.s3 import REGION, _distinct_free_ports
from tests.temporal import dev_server


@dataclass
class Stack:
    """The running parts shared by every scenario of one battery run."""

    postgres: PrivatePostgres
    pg_server_dsn: str
    template: str
    s3: Settings
    seaweed: SeaweedS3
    temporal: WorkflowEnvironment
    redis: PrivateRedis
    redis_url: str
    root: Path

    @asynccontextmanager
    async def world(self, name: str) -> AsyncIterator[World]:
        """A fresh database, buckets, queues and key prefix for one scenario."""
        state = self.root / f"{name}-{secrets.token_hex(3)}"
        state.mkdir(parents=True)
        suffix = secrets.token_hex(4)
        s3 = self.s3.model_copy(
            update={"s3_registry_bucket": f"reg-{suffix}", "s3_datasets_bucket": f"data-{suffix}"}
        )
        async with AsyncExitStack() as stack:
            admin_dsn = await stack.enter_async_context(
                cloned_database(self.pg_server_dsn, self.template)
            )
            db = await Database.connect(app_dsn_for(admin_dsn), max_size=4)
            stack.push_async_callback(db.close)
            store = await stack.enter_async_context(ObjectStore.from_settings(s3))
            await init_storage(store, s3)
            env = ServicesEnv(db, store, s3, Signer.generate(), admin_dsn)
            yield World(self, env, admin_dsn, state, self.settings_for(env, admin_dsn, state))

    def settings_for(self, env: ServicesEnv, admin_dsn: str, state: Path) -> Settings:
        s3 = env.settings
        assert s3.s3_secret_key is not None
        return Settings(
            database_url=admin_dsn,
            app_database_url=app_dsn_for(admin_dsn),
            metrics_database_url=metrics_dsn_for(admin_dsn),
            s3_endpoint_url=s3.s3_endpoint_url,
            s3_region=s3.s3_region,
            s3_access_key=s3.s3_access_key,
            s3_secret_key=SecretStr(s3.s3_secret_key.get_secret_value()),
            s3_registry_bucket=s3.s3_registry_bucket,
            s3_datasets_bucket=s3.s3_datasets_bucket,
            state_dir=state,
            platform_signing_key=SecretStr(env.platform.seed_hex()),
            temporal_address=self.temporal.client.service_client.config.target_host,
            redis_url=self.redis_url,
            redis_key_prefix=f"rai-acceptance:{uuid.uuid4()}:",
            training_task_queue=f"training-{uuid.uuid4()}",
            drift_task_queue=f"drift-{uuid.uuid4()}",
        )


@dataclass
class World:
    """One scenario's own corner of the stack."""

    stack: Stack
    env: ServicesEnv
    admin_dsn: str
    state: Path
    settings: Settings

    async def admin(self) -> asyncpg.Connection:
        """An administrative connection to the scenario's database (counts bypass RLS)."""
        conn: asyncpg.Connection = await asyncpg.connect(self.admin_dsn)
        await conn.execute("SET search_path = rai")
        return conn


@asynccontextmanager
async def running_stack(root: Path) -> AsyncIterator[Stack]:
    """Start every part; stop everything started, in reverse order, on exit."""
    async with AsyncExitStack() as stack:
        # A fixed port, so a restarted cluster (scenario 4) is found where it was.
        postgres = PrivatePostgres(
            root / "postgres", port=free_port(), start_timeout=60, stop_grace=10
        )
        server_dsn = await postgres.start()
        stack.push_async_callback(postgres.stop)
        template = await create_template(server_dsn)
        stack.push_async_callback(drop_database, server_dsn, template)
        s3_root = root / "s3"
        s3_root.mkdir()
        s3_ports = _distinct_free_ports(4)
        credentials = generate_credentials()
        seaweed = SeaweedS3(
            s3_root,
            http_ports=dict(zip(("s3", "master", "volume", "filer"), s3_ports, strict=True)),
            credentials=credentials,
            region=REGION,
            start_timeout=60,
            stop_grace=3,
        )
        s3_record = await seaweed.ensure_running()
        stack.push_async_callback(seaweed.stop)
        s3 = Settings(
            s3_endpoint_url=seaweed.url(s3_record),
            s3_region=REGION,
            s3_access_key=credentials.access_key,
            s3_secret_key=SecretStr(credentials.secret_key),
        )
        redis = PrivateRedis(
            root / "redis", port=free_port(), database=0, start_timeout=30, stop_grace=3
        )
        record = await redis.ensure_running()
        stack.push_async_callback(redis.stop)
        temporal = await stack.enter_async_context(dev_server())
        yield Stack(
            postgres, server_dsn, template, s3, seaweed, temporal, redis, redis.url(record), root
        )
