"""Prometheus metrics (prometheus-client): every metric defined once, here, with bounded labels.

Services record through :class:`services.ports.MetricsPort`; :class:`Metrics` is its one real
implementation. Each process builds one ``Metrics`` in its composition root (no module-level
registry), so two components in one test process never share a counter.

Label cardinality is bounded by construction: ``tenant`` (a tenant id), ``feature`` (a drift
feature name), ``outcome``/``verdict``/``phase``/``result``/``queue`` (closed vocabularies).
Run ids, model version ids and field ids are never labels.

Values that live in the database (open dead letters, retraining cooldowns, active training
runs, tenant names) are not counted from in-process events: :class:`DatabaseState` reads them
when the worker's endpoint is scraped (at most every ``max_age`` seconds), so they are right
after a restart. It reads them as ``rai_metrics``, through narrow aggregate functions (no
privileged login). Only the worker exports them: the API's public ``/metrics`` carries its own
process's metrics alone, so no tenant's name ever reaches it.

Several API processes (``PROMETHEUS_MULTIPROC_DIR`` set, prometheus-client's multiprocess
mode): counters and histograms are written to per-process files and summed at scrape time by
:func:`process_exposition`; the database-backed gauges are the same whichever process answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import aiohttp
import asyncpg
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from domain.pipeline import DEAD_LETTER_QUEUE
from domain.policies import ROLLBACK_COOLDOWN
from settings import METRICS_ROLE

log = logging.getLogger(__name__)

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
MULTIPROC_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"

# Training runs for minutes to hours of GPU time; the short end catches local and failed runs.
TRAINING_BUCKETS: Final = (
    10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
    28800.0, 86400.0,
)  # fmt: skip
INGEST_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LEASE_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
    14400.0,
)  # fmt: skip
ACTIVE_RUN_STATUSES: Final = ("QUEUED", "RUNNING")
COOLDOWN_METRIC: Final = "rai_retrain_cooldown_active"
COOLDOWN_HELP: Final = "1 while the tenant's 7-day retraining cooldown after a rollback runs"


class Metrics:
    """The application's metrics on one registry; the methods are the recording port."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # The seed's four (the cooldown gauge is read from the database: DatabaseState).
        self.drift_psi = Gauge(
            "rai_drift_psi_value",
            "PSI of a feature in the tenant's latest drift report",
            ["tenant", "feature"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.training_duration = Histogram(
            "rai_training_duration_seconds",
            "Wall time of finished training runs, from start to finish",
            ["tenant", "outcome"],
            buckets=TRAINING_BUCKETS,
            registry=r,
        )
        self.pipeline_status = Counter(
            "rai_pipeline_status",
            "Finished retraining pipelines by outcome (every outcome, SKIPPED_* and FAILED_*)",
            ["tenant", "outcome"],
            registry=r,
        )
        # Drift, besides PSI.
        self.drift_ks_pvalue = Gauge(
            "rai_drift_ks_pvalue",
            "KS (numeric) or chi-square (categorical) p-value in the latest drift report",
            ["tenant", "feature"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.drift_alpha = Gauge(
            "rai_drift_per_feature_alpha",
            "The Bonferroni-corrected significance level of the latest drift report",
            ["tenant"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.drift_psi_threshold = Gauge(
            "rai_drift_psi_threshold",
            "The PSI floor a feature must reach to drift, in the latest drift report",
            ["tenant"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.drift_sample_size = Gauge(
            "rai_drift_sample_size",
            "Events in the reference and current windows of the latest drift report",
            ["tenant", "window"],
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self.drift_verdicts = Counter(
            "rai_drift_verdicts",
            "Per-feature drift verdicts of drift reports",
            ["tenant", "feature", "verdict"],
            registry=r,
        )
        self.drift_reports = Counter(
            "rai_drift_reports",
            "Drift reports by overall verdict (INSUFFICIENT_DATA included)",
            ["tenant", "verdict"],
            registry=r,
        )
        # Training jobs, ingest, leases.
        self.training_phases = Counter(
            "rai_training_job_phases",
            "Training runs entering a phase (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)",
            ["tenant", "phase"],
            registry=r,
        )
        self.ingest_events = Counter(
            "rai_ingest_events",
            "Learning events judged by ingest, by outcome",
            ["tenant", "outcome"],
            registry=r,
        )
        self.ingest_batch_duration = Histogram(
            "rai_ingest_batch_duration_seconds",
            "Time to judge and store one batch of learning events",
            ["tenant"],
            buckets=INGEST_BUCKETS,
            registry=r,
        )
        self.lease_wait = Histogram(
            "rai_lease_acquire_duration_seconds",
            "Time to try for a tenant's pipeline lease, by result (acquired or busy)",
            ["tenant", "result"],
            buckets=LEASE_BUCKETS,
            registry=r,
        )
        self.lease_hold = Histogram(
            "rai_lease_hold_duration_seconds",
            "Time a tenant's pipeline lease was held, from its grant to its release by any worker",
            ["tenant"],
            buckets=LEASE_BUCKETS,
            registry=r,
        )

    # The recording port (services.ports.MetricsPort).
    def pipeline_finished(self, tenant: str, outcome: str) -> None:
        self.pipeline_status.labels(tenant=tenant, outcome=outcome).inc()

    def training_finished(self, tenant: str, outcome: str, seconds: float) -> None:
        self.training_duration.labels(tenant=tenant, outcome=outcome).observe(max(seconds, 0.0))

    def training_phase(self, tenant: str, phase: str) -> None:
        self.training_phases.labels(tenant=tenant, phase=phase).inc()

    def drift_report(self, tenant: str, report: DriftFigures) -> None:
        self.drift_reports.labels(tenant=tenant, verdict=report.verdict).inc()
        self.drift_alpha.labels(tenant=tenant).set(report.per_feature_alpha)
        self.drift_psi_threshold.labels(tenant=tenant).set(report.psi_threshold)
        self.drift_sample_size.labels(tenant=tenant, window="reference").set(report.n_reference)
        self.drift_sample_size.labels(tenant=tenant, window="current").set(report.n_current)
        for feature in report.features:
            self.drift_psi.labels(tenant=tenant, feature=feature.name).set(feature.psi)
            if feature.p_value is not None:
                self.drift_ks_pvalue.labels(tenant=tenant, feature=feature.name).set(
                    feature.p_value
                )
            self.drift_verdicts.labels(
                tenant=tenant, feature=feature.name, verdict=feature.verdict
            ).inc()

    def events_ingested(self, tenant: str, outcomes: Mapping[str, int], seconds: float) -> None:
        for outcome, count in outcomes.items():
            if count:
                self.ingest_events.labels(tenant=tenant, outcome=outcome).inc(count)
        self.ingest_batch_duration.labels(tenant=tenant).observe(seconds)

    def lease_tried(self, tenant: str, acquired: bool, seconds: float) -> None:
        result = "acquired" if acquired else "busy"
        self.lease_wait.labels(tenant=tenant, result=result).observe(seconds)

    def lease_released(self, tenant: str, held_seconds: float) -> None:
        self.lease_hold.labels(tenant=tenant).observe(max(held_seconds, 0.0))


@dataclass(frozen=True)
class FeatureFigures:
    name: str
    psi: float
    p_value: float | None
    verdict: str


@dataclass(frozen=True)
class DriftFigures:
    """What the metrics take from a drift report (kept free of the report's own types)."""

    verdict: str
    per_feature_alpha: float
    psi_threshold: float
    n_reference: int
    n_current: int
    features: tuple[FeatureFigures, ...]


@dataclass(frozen=True)
class DatabaseSnapshot:
    """The database-held values, as read at one moment."""

    dead_letters_open: dict[str, int] = field(default_factory=dict)
    cooldowns: dict[str, bool] = field(default_factory=dict)
    tenant_names: dict[str, str] = field(default_factory=dict)
    active_runs: dict[tuple[str, str], int] = field(default_factory=dict)
    oldest_running_seconds: dict[str, float] = field(default_factory=dict)


class DatabaseState(Collector):
    """Gauges read from the database at scrape time (cached for ``max_age`` seconds).

    ``dsn`` is the ``rai_metrics`` login (``Settings.resolved_metrics_database_url``). These
    gauges span every tenant, so they come from the ``rai.metrics_*`` functions (migrations 0010
    and 0011): SECURITY DEFINER, aggregates only (counts, flags, ages, tenant names), EXECUTE
    granted to rai_metrics alone, which may read no table itself. They are read in one READ
    ONLY transaction over a short-lived connection. A login that is not rai_metrics, or is a
    superuser or BYPASSRLS, is refused like a failed read: ``rai_metrics_database_up 0`` and
    none of the gauges (never stale or invented values).
    """

    def __init__(self, dsn: str, *, max_age: float = 5.0, timeout: float = 5.0) -> None:
        self._dsn = dsn
        self._max_age = max_age
        self._timeout = timeout
        self._snapshot: DatabaseSnapshot | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._read_at < self._max_age:
                return
            try:
                async with asyncio.timeout(self._timeout):
                    self._snapshot = await self._read()
            except (
                TimeoutError,
                OSError,
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                UnsafeMetricsRoleError,
            ) as exc:
                log.warning("metrics: cannot read the database: %s: %s", type(exc).__name__, exc)
                self._snapshot = None
            self._read_at = time.monotonic()

    async def _read(self) -> DatabaseSnapshot:
        conn = await asyncpg.connect(self._dsn)
        try:
            async with conn.transaction(readonly=True):
                role = await conn.fetchrow(
                    "SELECT rolname, rolsuper, rolbypassrls FROM pg_roles"
                    " WHERE rolname = current_user"
                )
                if (
                    role is None
                    or role["rolname"] != METRICS_ROLE
                    or role["rolsuper"]
                    or role["rolbypassrls"]
                ):
                    name = "?" if role is None else role["rolname"]
                    raise UnsafeMetricsRoleError(
                        f"the metrics collector must log in as {METRICS_ROLE} (NOSUPERUSER,"
                        f" NOBYPASSRLS), not as {name}; set RAI_METRICS_DATABASE_URL"
                    )
                now: datetime = await conn.fetchval("SELECT now()")
                tenants = await conn.fetch(
                    "SELECT tenant_id::text AS id, name FROM rai.metrics_tenants()"
                )
                cooldowns = await conn.fetch(
                    "SELECT tenant_id::text AS id, active FROM rai.metrics_cooldowns($1, $2)",
                    now,
                    ROLLBACK_COOLDOWN,
                )
                letters = await conn.fetch(
                    "SELECT queue, open FROM rai.metrics_open_dead_letters()"
                )
                runs = await conn.fetch(
                    "SELECT tenant_id::text AS tenant, status, runs, oldest_seconds"
                    " FROM rai.metrics_active_training_runs($1)",
                    now,
                )
        finally:
            await conn.close()
        ids = [row["id"] for row in tenants]
        active = {(tenant, status): 0 for tenant in ids for status in ACTIVE_RUN_STATUSES}
        oldest = dict.fromkeys(ids, 0.0)
        for row in runs:
            active[(row["tenant"], row["status"])] = int(row["runs"])
            if row["oldest_seconds"] is not None:
                oldest[row["tenant"]] = float(row["oldest_seconds"])
        open_letters = {DEAD_LETTER_QUEUE: 0}
        open_letters.update({row["queue"]: int(row["open"]) for row in letters})
        return DatabaseSnapshot(
            dead_letters_open=open_letters,
            cooldowns={row["id"]: bool(row["active"]) for row in cooldowns},
            tenant_names={row["id"]: row["name"] for row in tenants},
            active_runs=active,
            oldest_running_seconds=oldest,
        )

    def collect(self) -> Iterable[Metric]:
        snapshot = self._snapshot
        up = GaugeMetricFamily(
            "rai_metrics_database_up", "1 when the last database read for metrics succeeded"
        )
        up.add_metric([], 0.0 if snapshot is None else 1.0)
        yield up
        if snapshot is None:
            return
        yield from _families(snapshot)


class UnsafeMetricsRoleError(Exception):
    """The metrics collector's login is not the unprivileged rai_metrics role."""


def _families(snapshot: DatabaseSnapshot) -> Iterator[Metric]:
    letters = GaugeMetricFamily(
        "rai_dead_letters_open", "Unresolved dead letters, by queue", labels=["queue"]
    )
    for queue, count in sorted(snapshot.dead_letters_open.items()):
        letters.add_metric([queue], count)
    yield letters
    cooldown = GaugeMetricFamily(COOLDOWN_METRIC, COOLDOWN_HELP, labels=["tenant"])
    for tenant, active in sorted(snapshot.cooldowns.items()):
        cooldown.add_metric([tenant], 1.0 if active else 0.0)
    yield cooldown
    info = GaugeMetricFamily(
        "rai_tenant_info", "Always 1: a tenant id and its name", labels=["tenant", "name"]
    )
    for tenant, name in sorted(snapshot.tenant_names.items()):
        info.add_metric([tenant, name], 1.0)
    yield info
    runs = GaugeMetricFamily(
        "rai_training_runs_active",
        "Training runs QUEUED or RUNNING now, by tenant and status",
        labels=["tenant", "status"],
    )
    for (tenant, status), count in sorted(snapshot.active_runs.items()):
        runs.add_metric([tenant, status], count)
    yield runs
    oldest = GaugeMetricFamily(
        "rai_training_run_oldest_running_seconds",
        "Age of the tenant's RUNNING training run (0: none running)",
        labels=["tenant"],
    )
    for tenant, seconds in sorted(snapshot.oldest_running_seconds.items()):
        oldest.add_metric([tenant], seconds)
    yield oldest


def multiprocess_dir() -> Path | None:
    """The multiprocess directory, when this process runs in prometheus-client's multiprocess
    mode (``PROMETHEUS_MULTIPROC_DIR``)."""
    value = os.environ.get(MULTIPROC_ENV)
    return Path(value) if value else None


def clear_multiprocess_dir() -> None:
    """Remove the value files of earlier runs (the parent does this once, before its API
    processes start; prometheus-client's documented set-up)."""
    directory = multiprocess_dir()
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


class _Declarations(Collector):
    """Metric families without samples."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def process_exposition(metrics: Metrics, state: DatabaseState | None) -> bytes:
    """The text exposition of this process's metrics (all processes' in multiprocess mode)
    followed by the database-held gauges (the worker's).

    Without them (``state`` None: the API, whose port answers anyone), the seed's cooldown
    gauge is only declared, HELP and TYPE with no samples, like every other metric a process
    does not record: each endpoint names the seed's four, and the values (with the other
    database-held gauges and the tenant names) come from the worker alone."""
    if multiprocess_dir() is not None:
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
        body = generate_latest(combined)
        # The files hold only what some process recorded; declare the rest (HELP and TYPE, no
        # samples) as one process would, so every scrape names every metric and its type.
        recorded = {family.name for family in combined.collect()}
        declared = CollectorRegistry()
        declared.register(
            _Declarations(
                [
                    Metric(family.name, family.documentation, family.type, family.unit)
                    for family in metrics.registry.collect()
                    if family.name not in recorded
                ]
            )
        )
        body += generate_latest(declared)
    else:
        body = generate_latest(metrics.registry)
    extra = CollectorRegistry()
    if state is not None:
        extra.register(state)
    else:
        extra.register(_Declarations([Metric(COOLDOWN_METRIC, COOLDOWN_HELP, "gauge")]))
    return body + generate_latest(extra)


@asynccontextmanager
async def serving_metrics(
    metrics: Metrics,
    state: DatabaseState | None,
    *,
    host: str,
    port: int,
    temporal_url: str | None = None,
) -> AsyncIterator[str]:
    """Serve ``GET /metrics`` (the worker's endpoint) until the block ends; yields its URL.

    The body is this process's metrics, the database-held gauges and, when ``temporal_url`` is
    given, the Temporal SDK's own Prometheus endpoint (the Runtime's, bound on loopback), read
    at the same scrape: one target carries all three, so a scrape config needs one job.
    """
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def handle(_: web.Request) -> web.Response:
            if state is not None:
                await state.refresh()
            body = process_exposition(metrics, state)
            if temporal_url is not None:
                body += await _temporal_text(session, temporal_url)
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

        app = web.Application()
        app.router.add_get("/metrics", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            try:
                sock = socket.create_server((host, port))
            except OSError as exc:
                raise MetricsEndpointError(f"cannot serve metrics on {host}:{port}: {exc}") from exc
            site = web.SockSite(runner, sock)
            await site.start()
            bound_host, bound_port = sock.getsockname()[:2]
            shown = f"[{bound_host}]" if ":" in bound_host else bound_host
            yield f"http://{shown}:{bound_port}/metrics"
        finally:
            await runner.cleanup()


class MetricsEndpointError(Exception):
    """The metrics endpoint cannot listen on its port."""


async def _temporal_text(session: aiohttp.ClientSession, url: str) -> bytes:
    up = "# HELP rai_temporal_sdk_metrics_up 1 when the Temporal SDK's metrics were read\n"
    up += "# TYPE rai_temporal_sdk_metrics_up gauge\n"
    try:
        async with session.get(url) as response:
            response.raise_for_status()
            text = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        log.warning("metrics: cannot read the Temporal SDK's metrics at %s: %s", url, exc)
        return (up + "rai_temporal_sdk_metrics_up 0\n").encode()
    if text and not text.endswith(b"\n"):
        text += b"\n"
    return (up + "rai_temporal_sdk_metrics_up 1\n").encode() + text
