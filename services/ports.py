"""The outside systems services depend on, as small Protocols (unit tests pass fakes).

The job runner's port is :class:`domain.jobs.JobRunner`: its adapters raise the port's errors,
and adapters import nothing but ``domain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from adapters.objectstore import ContentDigest, ObjectInfo, Retention, StoredObject


class ObjectStorePort(Protocol):
    async def head(
        self, bucket: str, key: str, version_id: str | None = None
    ) -> ObjectInfo | None: ...

    async def stream_sha256(
        self, bucket: str, key: str, version_id: str | None = None
    ) -> ContentDigest: ...

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = ...,
        metadata: Mapping[str, str] | None = None,
        retention: Retention | None = None,
    ) -> StoredObject: ...

    async def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes: ...
