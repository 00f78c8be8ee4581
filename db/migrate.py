"""Versioned, idempotent migrations.

``rai db migrate`` connects with an administrative login, makes sure the three roles and the
database exist, then, as ``rai_owner`` and in one transaction:

- a new database (nothing recorded in ``rai.schema_migrations``) gets the current schema,
  ``schema.sql`` followed by ``triggers.sql``, in one step, and every migration is recorded as
  applied, with the same names and checksums as on a database upgraded one migration at a
  time: both are then at the latest version and indistinguishable;
- a database made by an earlier release gets the numbered migrations it has not recorded yet,
  in order, from ``db/migrations/``.

So a schema change is made twice: as a new numbered migration (never an edit of a released
one: databases carry its checksum, and a mismatch is refused) and folded into ``schema.sql`` /
``triggers.sql``. tests/integration/test_migrations.py proves that the two routes end in the
same catalog. SQL is read with :mod:`importlib.resources`, so an installed package migrates the
same way as a checkout.

``rai_owner`` is NOLOGIN: nobody holds its credentials; the administrator becomes it with
``SET ROLE`` only while migrating. ``rai_app`` is the only login services use: NOSUPERUSER,
NOBYPASSRLS, owning nothing. ``rai_metrics`` is the worker's metrics collector's login, just as
unprivileged: it may call the ``rai.metrics_*`` aggregate functions (migration 0011) and read
nothing else.
"""

from __future__ import annotations

import hashlib
import logging
from contextlib import suppress
from dataclasses import dataclass
from importlib import resources

import asyncpg

from settings import (
    APP_ROLE,
    METRICS_ROLE,
    OWNER_ROLE,
    database_name,
    redacted_dsn,
    with_database,
)

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same for every migrator of a database.
_MIGRATION_LOCK_KEY = 0x5241_4944_4D49_4752  # "RAIDMIGR"
# Roles belong to the whole cluster: migrators of different databases alter the same two roles,
# and Postgres refuses concurrent ALTER ROLEs of one role ("tuple concurrently updated").
# Taken on the maintenance database, which every migrator of a cluster connects to.
_ROLES_LOCK_KEY = 0x5241_4944_524F_4C45  # "RAIDROLE"


def _read(files: tuple[str, ...]) -> str:
    package = resources.files("db")
    return "\n".join(package.joinpath(name).read_text(encoding="utf-8") for name in files)


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    files: tuple[str, ...]

    def sql(self) -> str:
        return _read(self.files)

    def checksum(self) -> str:
        return hashlib.sha256(self.sql().encode("utf-8")).hexdigest()


# The history, for upgrading databases of earlier releases. 0001 is the first release's
# schema.sql and triggers.sql as they were (its checksum is that of the two, joined).
MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "schema and laws", ("migrations/0001_schema_and_laws.sql",)),
    Migration(
        2, "model version names its drift report", ("migrations/0002_model_drift_report.sql",)
    ),
    Migration(3, "pipeline bookkeeping on training runs", ("migrations/0003_pipeline_runs.sql",)),
    Migration(6, "governance laws", ("migrations/0006_governance.sql",)),
    Migration(7, "liveness: owning execution, fencing laws", ("migrations/0007_liveness.sql",)),
    Migration(8, "per-tenant api tokens", ("migrations/0008_api_tokens.sql",)),
    Migration(9, "per-tenant locks", ("migrations/0009_tenant_locks.sql",)),
    Migration(10, "metrics functions for rai_app", ("migrations/0010_metrics_functions.sql",)),
    Migration(11, "metrics functions for rai_metrics only", ("migrations/0011_metrics_role.sql",)),
)
LATEST = MIGRATIONS[-1].version

# The current schema: what MIGRATIONS, applied in order, make.
CURRENT_SCHEMA = ("schema.sql", "triggers.sql")


class MigrationError(Exception):
    """The database cannot be brought to the current schema; nothing was changed."""


@dataclass(frozen=True)
class MigrationReport:
    database: str
    applied: tuple[int, ...]  # the versions this run brought in (from the current schema or not)
    current_version: int


async def migrate(
    admin_dsn: str,
    app_password: str | None = None,
    *,
    metrics_password: str | None = None,
    target: int = LATEST,
) -> MigrationReport:
    """Bring the database named in ``admin_dsn`` to version ``target`` (the latest unless
    told otherwise). Safe to run again; never goes back. ``app_password`` and
    ``metrics_password``, when given, become the passwords of ``rai_app`` and ``rai_metrics``.

    A new database brought to an older ``target`` replays the migrations up to it instead of
    loading the current schema: that is how tests make a database of an earlier release.
    """
    known = {m.version for m in MIGRATIONS}
    if target not in known:
        raise MigrationError(f"no migration {target}; known versions are {sorted(known)}")
    database = database_name(admin_dsn)
    maintenance = await _connect(with_database(admin_dsn, "postgres"))
    try:
        await maintenance.execute("SELECT pg_advisory_lock($1)", _ROLES_LOCK_KEY)
        try:
            await _ensure_roles(maintenance, app_password, metrics_password)
        finally:
            await maintenance.execute("SELECT pg_advisory_unlock($1)", _ROLES_LOCK_KEY)
        await _ensure_database(maintenance, database)
    finally:
        await maintenance.close()

    conn = await _connect(admin_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK_KEY)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS rai AUTHORIZATION {OWNER_ROLE}")
            await conn.execute(f"SET LOCAL ROLE {OWNER_ROLE}")
            await conn.execute("SET LOCAL search_path = rai")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS rai.schema_migrations ("
                " version integer PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            recorded = {
                row["version"]: row["checksum"]
                for row in await conn.fetch("SELECT version, checksum FROM rai.schema_migrations")
            }
            unknown = sorted(set(recorded) - known)
            if unknown:
                raise MigrationError(
                    f"database {database} has migrations {unknown} that this release does not "
                    "know; it was migrated by a newer release"
                )
            for migration in MIGRATIONS:
                if migration.version in recorded and recorded[migration.version] != (
                    migration.checksum()
                ):
                    raise MigrationError(
                        f"migration {migration.version} ({migration.name}) was applied to "
                        f"{database} with different SQL; add a new numbered migration "
                        "instead of editing an applied one"
                    )
            due = [m for m in MIGRATIONS if m.version not in recorded and m.version <= target]
            from_current_schema = not recorded and target == LATEST
            if from_current_schema:
                log.info("creating the current schema (version %s)", LATEST)
                await conn.execute(_read(CURRENT_SCHEMA))
            for migration in due:
                if not from_current_schema:
                    log.info("applying migration %s (%s)", migration.version, migration.name)
                    await conn.execute(migration.sql())
                await conn.execute(
                    "INSERT INTO rai.schema_migrations (version, name, checksum)"
                    " VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum(),
                )
    finally:
        await conn.close()
    applied = tuple(m.version for m in due)
    return MigrationReport(database, applied, max([*recorded, *applied]))


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise MigrationError(f"cannot connect to {redacted_dsn(dsn)}: {exc}") from exc


async def _ensure_roles(
    conn: asyncpg.Connection, app_password: str | None, metrics_password: str | None
) -> None:
    for role, attributes in (
        (OWNER_ROLE, "NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"),
        (APP_ROLE, "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT"),
        (METRICS_ROLE, "LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOINHERIT"),
    ):
        exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
        if not exists:
            # another migrator may create it a moment before us
            with suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
                await conn.execute(f"CREATE ROLE {role}")
        await conn.execute(f"ALTER ROLE {role} {attributes}")
    for role, password in ((APP_ROLE, app_password), (METRICS_ROLE, metrics_password)):
        if password is not None:
            # ALTER ROLE takes no bind parameters; quote the literal the way the server does.
            literal = await conn.fetchval("SELECT quote_literal($1)", password)
            await conn.execute(f"ALTER ROLE {role} PASSWORD {literal}")
    is_superuser = await conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if not is_superuser:
        # A non-superuser administrator (managed Postgres) must be able to SET ROLE rai_owner.
        await conn.execute(f"GRANT {OWNER_ROLE} TO CURRENT_USER")


async def _ensure_database(conn: asyncpg.Connection, database: str) -> None:
    if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
        return
    quoted = await conn.fetchval("SELECT quote_ident($1)", database)
    with suppress(asyncpg.DuplicateDatabaseError):  # another migrator may be a moment earlier
        await conn.execute(f"CREATE DATABASE {quoted} OWNER {OWNER_ROLE}")
