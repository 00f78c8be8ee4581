"""``rai demo``: one complete retraining cycle on the embedded local stack (M28).

Stack up -> migrate -> storage -> demo tenant with its platform key (registered the administrative
way, as `rai keys platform register` does) and a device key -> a reference season and a
visibly drifted season of signed events, sent to the HTTP API with an API token as a field
gateway would -> a worker -> RetrainingPipeline -> summary -> the new model version verified.
Exits 0 only if all of that happened; running it again trains the next version. ``rai demo
seed`` does only the tenant and its events (through the services, no API running). With
``--json`` the steps stay quiet and one document describes the outcome.
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from pydantic import SecretStr

from adapters.storage_setup import init_storage
from cli.common import app_database, migrate_database, object_store, temporal, trusted_keys
from cli.errors import CommandError
from cli.output import add_json_flag, print_json
from db.repository import Database
from db.tenants import create_tenant
from devstack import Stack, StackError, StackInfo, StackStartError
from domain.pipeline import PipelineOutcome
from domain.policies import EventOutcome
from domain.signing import Signer
from services.demo import SeededSeason, season_events, seed_season
from services.keys import (
    PlatformKeyError,
    load_platform_signer,
    register_key,
    register_platform_key,
)
from services.tokens import create_token
from services.verify import ProvenanceVerifier
from settings import Settings, app_dsn_for, metrics_dsn_for, redacted_dsn

DEMO_TENANT = "demo farm"
REFERENCE_SEASON = "2025"
DRIFTED_SEASON = "2026"
EVENTS_PER_SEASON = 1200
STEPS = 7


def demo_tenant_id(name: str) -> UUID:
    """A stable id per demo tenant name, so running the demo again finds the same tenant."""
    return uuid5(NAMESPACE_URL, f"https://rai.example/tenants/{name}")


def register(groups: Any) -> None:
    p = groups.add_parser("demo", help="run one complete retraining cycle on the local stack")
    p.add_argument("--tenant", default=DEMO_TENANT, help=f"demo tenant name ({DEMO_TENANT!r})")
    add_json_flag(p)
    p.set_defaults(handler=run_demo)
    commands = p.add_subparsers(dest="demo_command", metavar="COMMAND")
    seed = commands.add_parser("seed", help="only create the demo tenant and its signed events")
    seed.add_argument("--tenant", default=DEMO_TENANT, help=f"tenant name ({DEMO_TENANT!r})")
    add_json_flag(seed)
    seed.set_defaults(handler=run_seed)


class Progress:
    """Numbered steps and their details on the terminal; silent under ``--json``."""

    def __init__(self, *, quiet: bool) -> None:
        self._quiet = quiet

    def step(self, number: int, text: str) -> None:
        if not self._quiet:
            print(f"[{number}/{STEPS}] {text}", flush=True)

    def detail(self, text: str) -> None:
        if not self._quiet:
            print(f"      {text}", flush=True)


@dataclass(frozen=True)
class DemoTenant:
    id: UUID
    name: str
    seasons: tuple[SeededSeason, ...]


async def send_season(
    api_url: str, token: str, tenant_id: UUID, season: str, device: Signer, *, shift: float,
    seed: int, batch_size: int = 500,
) -> SeededSeason:  # fmt: skip
    """A season of signed events sent to the API as a client would: bearer token, batches."""
    import aiohttp

    counts = {outcome.value: 0 for outcome in EventOutcome}
    events = season_events(
        tenant_id, season, EVENTS_PER_SEASON, device, ndvi_shift=shift, seed=seed
    )
    url = f"{api_url}/v1/tenants/{tenant_id}/events"
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}"}) as session:
        for start in range(0, len(events), batch_size):
            body = {
                "events": [
                    {
                        "season_id": e.season_id,
                        "field_id": e.field_id,
                        "payload": dict(e.payload),
                        "signature": e.signature.hex(),
                        "key_id": e.key_id,
                    }
                    for e in events[start : start + batch_size]
                ]
            }
            async with session.post(url, json=body) as response:
                if response.status != 200:
                    raise CommandError(
                        f"the API refused the demo's events: {response.status}"
                        f" {await response.text()}"
                    )
                answer = await response.json()
            for outcome, count in answer["counts"].items():
                counts[outcome] += count
    return SeededSeason(season, counts)


async def seed_demo_tenant(
    db: Database,
    settings: Settings,
    tenant_name: str,
    progress: Progress,
    *,
    api_url: str | None = None,
) -> DemoTenant:
    """The demo tenant and its two seasons: sent to the API at ``api_url`` with a new API
    token, or (no API) handed to the services directly."""
    tenant = await create_tenant(db, tenant_name, demo_tenant_id(tenant_name))
    progress.detail(f"tenant {tenant.name}: {tenant.id}")
    # What `rai keys platform register` does: the administrative login, never rai_app.
    try:
        platform = load_platform_signer(settings, create=True)
        kid = await register_platform_key(settings.database_url, tenant.id, platform.public_key)
    except (PlatformKeyError, ValueError, OSError) as exc:
        raise CommandError(f"platform key for the demo tenant: {exc}") from exc
    progress.detail(f"platform key {kid} registered (administrative login)")
    token = None
    if api_url is not None:
        token = (await create_token(db, tenant.id, "rai demo")).secret
        progress.detail(f"API token issued; events go to {api_url} with it")
    seasons = []
    for season, shift, seed in ((REFERENCE_SEASON, 0.0, 2025), (DRIFTED_SEASON, 0.15, 2026)):
        if api_url is not None and token is not None:
            device = Signer.generate()
            await register_key(db, tenant.id, device.public_key, "device")
            seeded = await send_season(
                api_url, token, tenant.id, season, device, shift=shift, seed=seed
            )
        else:
            seeded = await seed_season(
                db, tenant.id, season, EVENTS_PER_SEASON, ndvi_shift=shift, seed=seed
            )
        counts = ", ".join(f"{k.lower()} {v}" for k, v in seeded.counts.items() if v)
        progress.detail(f"season {season}: {EVENTS_PER_SEASON} signed events ({counts})")
        seasons.append(seeded)
    return DemoTenant(tenant.id, tenant.name, tuple(seasons))


def run_seed(args: argparse.Namespace, settings: Settings) -> int:
    async def seed() -> DemoTenant:
        async with app_database(settings) as db:
            return await seed_demo_tenant(db, settings, args.tenant, Progress(quiet=args.json))

    tenant = asyncio.run(seed())
    if args.json:
        print_json({"tenant_id": tenant.id, "name": tenant.name, "seasons": tenant.seasons})
    else:
        print(tenant.id)
    return 0


def run_demo(args: argparse.Namespace, settings: Settings) -> int:
    return asyncio.run(_demo(settings, args.tenant, as_json=args.json))


@dataclass(frozen=True)
class _Stack:
    info: StackInfo
    settings: Settings


async def _bring_up(settings: Settings, progress: Progress) -> _Stack:
    stack = Stack(settings)
    try:
        status = await stack.start()
        info = await stack.info()
    except StackStartError as exc:
        for line in exc.status.lines():
            progress.detail(line)
        raise CommandError(str(exc)) from exc
    except StackError as exc:
        raise CommandError(str(exc)) from exc
    for line in status.lines():
        progress.detail(line)
    running = settings.model_copy(
        update={
            "database_url": info.database_url,
            "app_database_url": app_dsn_for(info.database_url, settings.app_db_password),
            "metrics_database_url": metrics_dsn_for(
                info.database_url, settings.metrics_db_password
            ),
            "redis_url": info.redis_url,
            "temporal_address": info.temporal_address,
            "temporal_ui_url": info.temporal_ui_url,
            "s3_endpoint_url": info.s3_endpoint_url,
            "s3_access_key": info.s3_access_key,
            "s3_secret_key": SecretStr(info.s3_secret_key),
        }
    )
    return _Stack(info, running)


async def _demo(settings: Settings, tenant_name: str, *, as_json: bool) -> int:
    # The worker's imports (Temporal, numpy, the trainer) are only needed here.
    from api.server import ApiConfig, running_api, training_callback_url
    from starter import start_pipeline
    from worker import running_workers

    progress = Progress(quiet=as_json)
    progress.step(1, "local stack")
    up = await _bring_up(settings, progress)
    settings = up.settings

    progress.step(2, "database migrations")
    report = await migrate_database(settings.database_url, settings)
    progress.detail(f"{report.database} at version {report.current_version}")

    progress.step(3, "object storage (M1-M4)")
    async with object_store(settings) as store:
        for setup in await init_storage(store, settings):
            progress.detail(setup.line())

    progress.step(4, "demo tenant, platform and device keys, API token, signed events over HTTP")
    async with app_database(settings) as db:
        async with (
            temporal(settings) as client,
            running_api(settings, ApiConfig(port=0), client=client) as api_url,
        ):
            progress.detail(f"api {api_url} (OpenAPI at {api_url}/docs)")
            tenant = (
                await seed_demo_tenant(db, settings, tenant_name, progress, api_url=api_url)
            ).id

            progress.step(5, "retraining pipeline (API for callbacks, worker on both task queues)")
            settings = settings.model_copy(update={"callback_url": training_callback_url(api_url)})
            async with running_workers(settings, client=client):
                started = await start_pipeline(
                    client,
                    settings,
                    tenant,
                    trigger="demo",
                    reference_season=REFERENCE_SEASON,
                    current_season=DRIFTED_SEASON,
                )
                progress.detail(f"workflow {started.workflow_id} run {started.run_id}")
                progress.detail(f"watch it: {started.ui_link}")
                result = await started.handle.result()

        progress.step(6, "result")
        progress.detail(f"outcome          {result.outcome.value}")
        progress.detail(
            f"drift verdict    {result.drift_verdict} (report {result.drift_report_id})"
        )
        for name, verdict in sorted(result.drift_features.items()):
            progress.detail(f"  {name:<14} {verdict}")
        progress.detail(f"training run     {result.training_run_id}")
        progress.detail(f"model version    {result.model_version_id}")
        progress.detail(f"artifact sha256  {result.artifact_sha256}")
        if result.outcome is not PipelineOutcome.SUCCEEDED_SHADOW or not result.model_version_id:
            raise CommandError(f"the pipeline ended {result.outcome.value}: {result.detail}")
        progress.detail("status           SHADOW")

        progress.step(7, "rai verify model")
        async with object_store(settings) as store:
            checks = await ProvenanceVerifier(db, store, trusted_keys(settings)).verify_model(
                tenant, result.model_version_id
            )
    for check in checks:
        progress.detail(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<16} {check.detail}")
    if not all(check.ok for check in checks):
        raise CommandError(f"model version {result.model_version_id} did not verify")

    if as_json:
        print_json(
            {
                "tenant_id": tenant,
                "workflow_id": started.workflow_id,
                "run_id": started.run_id,
                "ui_link": started.ui_link,
                "result": result,
                "model_version_id": result.model_version_id,
                "status": "SHADOW",
                "verified": True,
                "checks": checks,
                "stack": {
                    "temporal_address": settings.temporal_address,
                    "temporal_ui_url": settings.temporal_ui_url,
                    "database_url": redacted_dsn(settings.database_url),
                    "redis_url": settings.redis_url,
                    "s3_endpoint_url": settings.s3_endpoint_url,
                },
            }
        )
        return 0
    print()
    print("RAI Level D: one retraining cycle done.")
    print(f"  Temporal     {settings.temporal_address}   UI {settings.temporal_ui_url}")
    print(f"  Pipeline     {started.ui_link}")
    print(f"  PostgreSQL   {redacted_dsn(settings.database_url)}   (services log in as rai_app)")
    print(f"  Redis        {settings.redis_url}")
    print(f"  S3           {settings.s3_endpoint_url}")
    print(f"  Demo tenant  {tenant}")
    print(f"  Model        {result.model_version_id} (SHADOW)")
    print()
    print('Use it from a shell:  eval "$(.venv/bin/rai dev env)"')
    print(
        f"Verify again:         .venv/bin/rai verify model {result.model_version_id}"
        f" --tenant {tenant}"
    )
    print(f"Audit log:            .venv/bin/rai db verify-chain --tenant {tenant}")
    print(
        "Runs:                 .venv/bin/temporal workflow list --address"
        f" {settings.temporal_address}"
    )
    print("Stop everything:      .venv/bin/rai dev down")
    return 0
