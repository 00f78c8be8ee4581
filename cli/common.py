"""What several subcommands share: opening the services' database pool with clear errors."""

from __future__ import annotations

import asyncpg

from cli.errors import CommandError
from db.repository import Database, UnsafeDatabaseRoleError
from settings import Settings, redacted_dsn


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
