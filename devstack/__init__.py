"""The embedded local stack behind ``rai dev``: Temporal, PostgreSQL, Redis and S3 on one
machine, with no Docker.

    info = await Stack(settings).up()      # start what is missing, wait until healthy
    info.database_url, info.s3_endpoint_url, ...
    await Stack(settings).down()           # stop what ``up`` started

PostgreSQL alone: ``await ensure_postgres(settings)`` (the configured server, or a private
cluster), or ``PrivatePostgres(directory)`` for a throw-away cluster.
"""

from devstack.errors import BinaryNotFoundError, StackError
from devstack.parts import Owner, PartState, PartStatus
from devstack.postgres import PrivatePostgres, ensure_postgres, stop_private_postgres
from devstack.stack import Stack, StackInfo, StackStartError, StackStatus

__all__ = [
    "BinaryNotFoundError",
    "Owner",
    "PartState",
    "PartStatus",
    "PrivatePostgres",
    "Stack",
    "StackError",
    "StackInfo",
    "StackStartError",
    "StackStatus",
    "ensure_postgres",
    "stop_private_postgres",
]
