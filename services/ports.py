"""The outside systems services depend on, as small Protocols (unit tests pass fakes).

The job runner's port is :class:`domain.jobs.JobRunner`: its adapters raise the port's errors,
and adapters import nothing but ``domain``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from adapters.metrics import DriftFigures
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


class MetricsPort(Protocol):
    """Where services record what Prometheus exports (adapters.metrics.Metrics)."""

    def pipeline_finished(self, tenant: str, outcome: str) -> None: ...

    def training_finished(self, tenant: str, outcome: str, seconds: float) -> None: ...

    def training_phase(self, tenant: str, phase: str) -> None: ...

    def drift_report(self, tenant: str, report: DriftFigures) -> None: ...

    def events_ingested(self, tenant: str, outcomes: Mapping[str, int], seconds: float) -> None: ...

    def lease_tried(self, tenant: str, acquired: bool, seconds: float) -> None: ...

    def lease_released(self, tenant: str, held_seconds: float) -> None: ...
