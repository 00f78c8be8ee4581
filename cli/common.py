"""What several subcommands share: UUID arguments, and opening the services' database pool
with clear errors."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from uuid import UUID

import asyncpg

from cli.errors import CommandError
from db.repository import Database, UnsafeDatabaseRoleError
from settings import Settings, redacted_dsn


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


async def open_app_database(settings: Settings) -> Database:
    dsn = settings.resolved_app_database_url()
    try:
        return await Database.connect(dsn, max_size=2)
    except UnsafeDatabaseRoleError as exc:
        raise CommandError(str(exc)) from exc
    except (OSError, asyncpg.PostgresError) as exc:
        raise CommandError(
            f"cannot connect to {redacted_dsn(dsn)}: {exc} (is the stack up and migrated? "
            '`rai dev up`, `eval "$(rai dev env)"`, `rai db migrate`)'
        ) from exc
