"""Fixtures shared by every test layer: a real Postgres server and per-test databases, the
run's S3 server, and the run's two Temporal servers (tests/temporal.py)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from temporalio.testing import WorkflowEnvironment

from adapters.objectstore import ObjectStore
from adapters.processes import freeze_start_up_heap
from adapters.storage_setup import init_storage
from db.repository import Database
from devstack.postgres import PrivatePostgres
from domain.signing import Signer
from settings import Settings, app_dsn_for, with_database
from tests.integration.services_env import ServicesEnv
from tests.pg import cloned_database, create_template, drop_database, shared_tempdir
from tests.ports import refusing_port
from tests.s3 import private_s3
from tests.temporal import SharedTimeSkippingServer, dev_server

pytest_plugins = ("tests.hangs", "tests.schedule")


def pytest_collection_finish(session: pytest.Session) -> None:
    """Every test module is imported now: those objects live as long as the run, so the
    cyclic collector stops walking them (``rai api`` and ``rai worker`` do the same once
    started). Its full passes then cost what the tests make, not the ~10^5 objects of the
    imports, in every pytest process."""
    freeze_start_up_heap()


async def _reachable(dsn: str) -> bool:
    try:
        conn = await asyncpg.connect(with_database(dsn, "postgres"), timeout=3)
    except (OSError, asyncpg.PostgresError):
        return False
    await conn.close()
    return True


@pytest.fixture(scope="session")
async def pg_server_dsn() -> AsyncIterator[str]:
    """An administrative DSN of a running Postgres: RAI_DATABASE_URL's server if it answers,
    otherwise a private cluster started for this run."""
    configured = Settings().database_url
    if await _reachable(configured):
        yield configured
        return
    with shared_tempdir() as state:
        server = PrivatePostgres(state)
        dsn = await server.start()
        try:
            yield dsn
        finally:
            await server.stop()


@pytest.fixture(scope="session")
async def template_db(pg_server_dsn: str) -> AsyncIterator[str]:
    name = await create_template(pg_server_dsn)
    try:
        yield name
    finally:
        await drop_database(pg_server_dsn, name)


@pytest.fixture
async def db_admin_dsn(pg_server_dsn: str, template_db: str) -> AsyncIterator[str]:
    """A fresh migrated database of this test's own, as the administrative login."""
    async with cloned_database(pg_server_dsn, template_db) as dsn:
        yield dsn


@pytest.fixture
async def app_db(db_admin_dsn: str) -> AsyncIterator[Database]:
    """The test's database as services see it: a ``rai_app`` pool."""
    db = await Database.connect(app_dsn_for(db_admin_dsn), max_size=4)
    try:
        yield db
    finally:
        await db.close()


@pytest.fixture(scope="session")
async def s3_settings() -> AsyncIterator[Settings]:
    """Settings pointing at a private SeaweedFS S3 server started for this run (its own
    directory and free ports, stopped at the end). Tests pick their own bucket names."""
    async with private_s3() as settings:
        yield settings


@pytest.fixture(scope="session")
async def service_storage(s3_settings: Settings) -> Settings:
    """One pair of initialised buckets shared by the service tests of a run (every test works
    under keys of its own tenants; SeaweedFS gives each bucket its own volumes, so a bucket
    per test would exhaust them)."""
    suffix = secrets.token_hex(4)
    settings = s3_settings.model_copy(
        update={
            "s3_registry_bucket": f"reg-{suffix}",
            "s3_datasets_bucket": f"data-{suffix}",
        }
    )
    async with ObjectStore.from_settings(settings) as store:
        await init_storage(store, settings)
    return settings


@pytest.fixture
async def services_env(
    app_db: Database, db_admin_dsn: str, service_storage: Settings
) -> AsyncIterator[ServicesEnv]:
    """Services' outside world: the test's own database, the run's buckets, a platform key."""
    async with ObjectStore.from_settings(service_storage) as store:
        yield ServicesEnv(app_db, store, service_storage, Signer.generate(), db_admin_dsn)


@pytest.fixture(scope="session")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    """The run's Temporal dev server, started when a test first asks for it. Tests keep to
    their own task queues and workflow ids (see tests/temporal.py)."""
    async with dev_server() as environment:
        yield environment


@pytest.fixture(scope="session")
async def time_skipping_server() -> AsyncIterator[SharedTimeSkippingServer]:
    server = SharedTimeSkippingServer()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def time_skipping(
    time_skipping_server: SharedTimeSkippingServer,
) -> AsyncIterator[WorkflowEnvironment]:
    """The run's time-skipping test server.

    Its clock is shared: it skips ahead while any test awaits a workflow result, and never
    goes back. Tests run one at a time, so only the running test's workflows are waiting on
    it, and they measure time from their own start (``workflow.now()``,
    ``get_current_time()``), never against the wall clock. What a test leaves open is
    terminated when it ends, and a clock it left stuck gets the next test a new server
    (tests/temporal.py says why that can happen).
    """
    yield await time_skipping_server.environment()
    await time_skipping_server.after_test()


@pytest.fixture
def refused_port() -> Iterator[int]:
    """A port every connection to is refused, held for the test (``tests.ports``)."""
    with refusing_port() as port:
        yield port
