"""``rai demo``: the local stack up, the database migrated, a demo tenant, and where to look."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import SecretStr

from adapters.objectstore import ObjectStore, ObjectStoreError
from adapters.storage_setup import init_storage
from cli.errors import CommandError
from db.migrate import MigrationError, migrate
from db.repository import Database
from db.tenants import create_tenant
from devstack import Stack, StackError, StackStartError
from settings import Settings, app_dsn_for, redacted_dsn

DEMO_TENANT = "demo farm"


def demo_tenant_id(name: str) -> UUID:
    """A stable id per demo tenant name, so running the demo again finds the same tenant."""
    return uuid5(NAMESPACE_URL, f"https://rai.example/tenants/{name}")


def register(groups: Any) -> None:
    p = groups.add_parser("demo", help="bring the local stack up and prepare a demo tenant")
    p.add_argument("--tenant", default=DEMO_TENANT, help=f"demo tenant name ({DEMO_TENANT!r})")
    p.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_demo(settings, args.tenant))


async def _demo(settings: Settings, tenant_name: str) -> int:
    print("[1/4] local stack")
    stack = Stack(settings)
    try:
        status = await stack.start()
        info = await stack.info()
    except StackStartError as exc:
        print("\n".join(f"      {line}" for line in exc.status.lines()))
        raise CommandError(str(exc)) from exc
    except StackError as exc:
        raise CommandError(str(exc)) from exc
    print("\n".join(f"      {line}" for line in status.lines()))

    print("[2/4] database migrations")
    password = settings.app_db_password
    try:
        report = await migrate(
            info.database_url, app_password=password.get_secret_value() if password else None
        )
    except MigrationError as exc:
        raise CommandError(str(exc)) from exc
    print(f"      {report.database} at version {report.current_version}")

    print("[3/4] object storage (M1-M4)")
    store_settings = settings.model_copy(
        update={
            "s3_endpoint_url": info.s3_endpoint_url,
            "s3_access_key": info.s3_access_key,
            "s3_secret_key": SecretStr(info.s3_secret_key),
        }
    )
    try:
        async with ObjectStore.from_settings(store_settings) as store:
            steps = await init_storage(store, store_settings)
    except ObjectStoreError as exc:
        raise CommandError(f"object storage: {exc}") from exc
    for step in steps:
        print(f"      {step.line()}")

    print("[4/4] demo tenant")
    db = await Database.connect(app_dsn_for(info.database_url, password), max_size=2)
    try:
        tenant = await create_tenant(db, tenant_name, demo_tenant_id(tenant_name))
    finally:
        await db.close()
    print(f"      {tenant.name}: {tenant.id}")

    print()
    print("RAI Level D local stack is up.")
    print(f"  Temporal     {info.temporal_address}   UI {info.temporal_ui_url}")
    print(f"  PostgreSQL   {redacted_dsn(info.database_url)}   (services log in as rai_app)")
    print(f"  Redis        {info.redis_url}")
    print(f"  S3           {info.s3_endpoint_url}")
    print(f"  Demo tenant  {tenant.id}")
    print()
    print('Use it from a shell:  eval "$(.venv/bin/rai dev env)"')
    print(f"Audit log:            .venv/bin/rai db verify-chain --tenant {tenant.id}")
    print("Stop everything:      .venv/bin/rai dev down")
    return 0
