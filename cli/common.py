"""What several subcommands share: UUID arguments, the pinned platform keys, and opening the
outside services (the audit chain's checkpoints among them) so that every command reports
their trouble the same way -- exit 4 (:class:`ServiceUnavailable`) when Postgres, S3 or
Temporal cannot be reached, exit 3 (:class:`NotFound`) when what the command names does not
exist, exit 1 for any other refusal -- each as one line naming what failed and what to try
next."""

from __future__ import annotations

import argparse
import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar
from uuid import UUID

import asyncpg

from cli.errors import CommandError, NotFound, ServiceUnavailable
from db.migrate import MigrationError, MigrationReport, migrate
from db.repository import Database, UnsafeDatabaseRoleError
from domain.signing import KeyMaterialError, Signer
from domain.trust import TrustedKeys
from services.errors import GovernanceRefusal, NotFoundError
from services.keys import PlatformKeyError, load_platform_signer
from services.trust import TrustConfigError, trusted_platform_keys
from settings import Settings, redacted_dsn

if TYPE_CHECKING:
    from temporalio.client import Client

    from adapters.objectstore import ObjectStore
    from services.checkpoints import CheckpointService

STACK_HINT = '`rai dev up`, then `eval "$(rai dev env)"`'


def uuid_argument(what: str) -> Callable[[str], UUID]:
    """An argparse ``type=`` that reads a UUID and names ``what`` it wanted when it is not one."""

    def parse(value: str) -> UUID:
        try:
            return UUID(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {what} (UUID): {value!r}") from None

    return parse


parse_tenant = uuid_argument("tenant id")
parse_model_id = uuid_argument("model version id")


def one_line(text: str) -> str:
    return " ".join(text.split())


async def open_app_database(settings: Settings) -> Database:
    """The services' pool (``rai_app``); ServiceUnavailable if Postgres refuses or is away."""
    dsn = settings.resolved_app_database_url()
    try:
        return await Database.connect(dsn, max_size=2)
    except UnsafeDatabaseRoleError as exc:
        raise CommandError(str(exc)) from exc
    except (OSError, asyncpg.PostgresError) as exc:
        raise ServiceUnavailable(
            f"cannot connect to {redacted_dsn(dsn)}: {one_line(str(exc))} (is the stack up and"
            f" migrated? {STACK_HINT}, `rai db migrate`)"
        ) from exc


async def migrate_database(admin_dsn: str, settings: Settings) -> MigrationReport:
    """``rai db migrate``'s work; ServiceUnavailable if Postgres cannot be reached."""
    app, metrics = settings.app_db_password, settings.metrics_db_password
    try:
        return await migrate(
            admin_dsn,
            app_password=app.get_secret_value() if app else None,
            metrics_password=metrics.get_secret_value() if metrics else None,
        )
    except MigrationError as exc:
        # A failed connection is the one MigrationError caused by a socket or server error.
        if isinstance(exc.__cause__, OSError | asyncpg.PostgresError):
            raise ServiceUnavailable(one_line(str(exc))) from exc
        raise CommandError(str(exc)) from exc


@asynccontextmanager
async def app_database(settings: Settings) -> AsyncIterator[Database]:
    """The services' pool for the block, closed after it. A service's NotFoundError becomes
    NotFound, another governance refusal a failed operation, a lost connection
    ServiceUnavailable."""
    db = await open_app_database(settings)
    try:
        yield db
    except NotFoundError as exc:
        raise NotFound(str(exc)) from exc
    except GovernanceRefusal as exc:
        raise CommandError(str(exc)) from exc
    except asyncpg.PostgresConnectionError as exc:
        raise ServiceUnavailable(
            f"lost the connection to {redacted_dsn(settings.resolved_app_database_url())}:"
            f" {one_line(str(exc))}"
        ) from exc
    finally:
        await db.close()


@asynccontextmanager
async def temporal(settings: Settings) -> AsyncIterator[Client]:
    """A Temporal client for the block (see ``starter``), with the control module's failures
    turned into exit codes."""
    # Imported here, as in object_store: only the commands that need them pay for them.
    from starter import (
        AlreadyRunning,
        ScheduleExistsError,
        ScheduleNotFoundError,
        TemporalUnavailable,
        WorkflowNotFound,
        connect_temporal,
    )

    try:
        yield await connect_temporal(settings)
    except TemporalUnavailable as exc:
        raise ServiceUnavailable(str(exc)) from exc
    except (WorkflowNotFound, ScheduleNotFoundError) as exc:
        raise NotFound(str(exc)) from exc
    except (AlreadyRunning, ScheduleExistsError) as exc:
        raise CommandError(str(exc)) from exc


T = TypeVar("T")


class TemporalClientLeaked(RuntimeError):
    """A command kept its Temporal client past its work (a handle in its result)."""


def run_with_temporal(settings: Settings, work: Callable[[Client], Awaitable[T]]) -> T:
    """``asyncio.run(work(client))`` with a client of its own, released before returning.

    The SDK's client has no ``close``: its native connection goes when the Python object is
    collected, and one collected while the interpreter finalizes can abort the process
    (``Fatal Python error: PyGILState_Release``: the Rust side releases it from a thread of
    its own after Python's thread states are gone). So the client lives only inside the
    event loop, ``work``'s result must not hold it (plain data, no handles), and its reference
    cycles are collected here, while the interpreter runs; a client still alive afterwards is
    a bug of the command (:class:`TemporalClientLeaked`).
    """

    async def run() -> tuple[T, weakref.ref[Client]]:
        async with temporal(settings) as client:
            return await work(client), weakref.ref(client)

    result, client = asyncio.run(run())
    gc.collect()
    if client() is not None:
        raise TemporalClientLeaked("the command's Temporal client outlived its work")
    return result


@asynccontextmanager
async def object_store(settings: Settings) -> AsyncIterator[ObjectStore]:
    """The S3 store of ``settings`` for the block; its trouble becomes one line."""
    from adapters.objectstore import (
        AccessDeniedError,
        CredentialsRejectedError,
        ObjectStore,
        ObjectStoreConfigError,
        ObjectStoreError,
        ObjectStoreUnavailableError,
    )

    endpoint = settings.s3_endpoint_url
    try:
        store = ObjectStore.from_settings(settings)
    except ObjectStoreConfigError as exc:
        raise CommandError(f"{exc}; for the local stack: {STACK_HINT}") from exc
    try:
        async with store:
            yield store
    except ObjectStoreUnavailableError as exc:
        raise ServiceUnavailable(
            f"cannot reach S3 at {endpoint} ({one_line(str(exc))}); is the stack up? {STACK_HINT}"
        ) from exc
    except CredentialsRejectedError as exc:
        raise CommandError(
            f"S3 at {endpoint} refuses the key {store.access_key} ({exc.code}); RAI_S3_ACCESS_KEY"
            f" and RAI_S3_SECRET_KEY must be the stack's: {STACK_HINT}"
        ) from exc
    except AccessDeniedError as exc:
        raise CommandError(
            f"S3 at {endpoint} refused the key {store.access_key}: {one_line(str(exc))};"
            " the key needs full access to both buckets"
        ) from exc
    except ObjectStoreError as exc:
        raise CommandError(one_line(str(exc))) from exc


def trusted_keys(settings: Settings) -> TrustedKeys:
    """The platform keys pinned in configuration (``services.trust``), never read from the
    database being checked; a configuration problem is one line."""
    try:
        return trusted_platform_keys(settings)
    except TrustConfigError as exc:
        raise CommandError(str(exc)) from exc


def platform_signer(settings: Settings, trusted: TrustedKeys) -> Signer:
    """The platform signing key, refused unless ``trusted`` holds it: what it signs (bundles,
    checkpoints) would not verify."""
    try:
        signer = load_platform_signer(settings)
    except (PlatformKeyError, KeyMaterialError, OSError) as exc:
        raise CommandError(str(exc)) from exc
    if signer.key_id not in trusted:
        raise CommandError(
            f"the platform key {signer.key_id} is not among the trusted keys"
            f" ({trusted.describe()}): what it signs would not verify;"
            " set RAI_TRUSTED_PLATFORM_KEY to include it"
        )
    return signer


def checkpoint_service(
    settings: Settings,
    db: Database,
    store: ObjectStore,
    trusted: TrustedKeys,
    platform: Signer | None = None,
) -> CheckpointService:
    """The audit chain's checkpoints in the WORM datasets bucket; ``platform`` signs new ones
    (not needed to assess the chain)."""
    from services.checkpoints import CheckpointService

    return CheckpointService(
        db,
        store,
        trusted,
        bucket=settings.s3_datasets_bucket,
        retention_days=settings.dataset_retention_days,
        platform=platform,
    )
