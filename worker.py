"""Composition root of the Temporal worker (``rai worker``).

Builds settings, pools and clients once, runs a worker on ``training-queue`` (the workflows and
every step but drift) and one on ``drift-analysis-queue`` (M6) -- or only one of them
(``rai worker --queue training|drift``) -- and stops gracefully on
SIGTERM/SIGINT: running activities get the worker's graceful-shutdown window, and what does not
finish is retried elsewhere — a training job itself keeps running and is re-attached by name.

Metrics: ``GET /metrics`` on ``--metrics-port`` (``RAI_WORKER_METRICS_PORT``, 9464) carries the
worker's metrics (adapters.metrics), the database-held gauges and the Temporal SDK's own
metrics, which the SDK's Runtime serves on a loopback port of its own and the endpoint reads at
each scrape (:func:`worker_metrics`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Worker

from activities.pipeline import PipelineActivities
from activities.promotion import PromotionActivities
from adapters.jobrunners import open_job_runner
from adapters.metrics import DatabaseState, Metrics, serving_metrics
from adapters.objectstore import ObjectStore
from adapters.redis_mutex import TenantMutex
from db.repository import Database
from services.bias import BiasAuditService
from services.checkpoints import CheckpointService
from services.drift import DriftAnalysisService
from services.evaluation import ModelAuditService
from services.keys import load_platform_signer
from services.leases import TenantLeases
from services.pipeline import DriftCheck, PipelineService
from services.reaper import PipelineReaper
from services.registry import ModelRegistryService
from services.startup import check_worker_start
from services.training import TrainingConfig, TrainingService, job_environment
from services.trust import trusted_platform_keys
from settings import Settings
from starter import TemporalExecutions, WorkerQueue, connect_temporal, prometheus_runtime
from workflows.promotion import ShadowEvaluation
from workflows.retrain import RetrainingPipeline

log = logging.getLogger(__name__)


@asynccontextmanager
async def running_workers(
    settings: Settings,
    client: Client | None = None,
    queue: WorkerQueue = WorkerQueue.ALL,
    *,
    metrics: Metrics | None = None,
) -> AsyncIterator[list[Worker]]:
    """The workers of ``queue`` (both by default), running, with every client they need;
    everything closed on exit. The services record into ``metrics``."""
    metrics = metrics if metrics is not None else Metrics()
    async with AsyncExitStack() as stack:
        platform = load_platform_signer(settings, create=True)
        db = await Database.connect(settings.resolved_app_database_url())
        stack.push_async_callback(db.close)
        redis: Redis = Redis.from_url(settings.redis_url)
        stack.push_async_callback(redis.aclose)
        store = await stack.enter_async_context(ObjectStore.from_settings(settings))
        jobs = await stack.enter_async_context(open_job_runner(settings))
        if client is None:
            client = await connect_temporal(settings)
        pipeline = PipelineService(
            db, store, datasets_bucket=settings.s3_datasets_bucket, metrics=metrics
        )
        mutex = TenantMutex(redis, key_prefix=settings.redis_key_prefix)
        registry = ModelRegistryService(db, store, platform)
        training = TrainingService(
            runs=pipeline,
            registry=registry,
            jobs=jobs,
            platform=platform,
            config=TrainingConfig(
                registry_bucket=settings.s3_registry_bucket,
                callback_url=settings.callback_url,
                environment=job_environment(
                    settings, extra_seconds=settings.training_extra_seconds
                ),
                holdout_fraction=settings.holdout_fraction,
            ),
        )
        activities = PipelineActivities(
            leases=TenantLeases(
                mutex,
                pipeline,
                PipelineReaper(
                    db=db,
                    pipeline=pipeline,
                    jobs=jobs,
                    mutex=mutex,
                    executions=TemporalExecutions(client),
                ),
                metrics=metrics,
            ),
            pipeline=pipeline,
            drift=DriftCheck(
                pipeline,
                DriftAnalysisService(
                    db, store, platform, bucket=settings.s3_registry_bucket, metrics=metrics
                ),
            ),
            training=training,
            audits=ModelAuditService(
                db,
                store,
                BiasAuditService(db, platform, min_group_size=settings.bias_min_group_size),
                holdout_fraction=settings.holdout_fraction,
            ),
            registry=registry,
            checkpoints=CheckpointService(
                db,
                store,
                trusted_platform_keys(settings),
                bucket=settings.s3_datasets_bucket,
                retention_days=settings.dataset_retention_days,
                platform=platform,
            ),
        )
        promotion = PromotionActivities(db=db)
        workers = []
        if queue in (WorkerQueue.ALL, WorkerQueue.TRAINING):
            workers.append(
                Worker(
                    client,
                    task_queue=settings.training_task_queue,
                    workflows=[RetrainingPipeline, ShadowEvaluation],
                    activities=activities.training_activities() + promotion.activities(),
                    graceful_shutdown_timeout=timedelta(seconds=10),
                )
            )
        if queue in (WorkerQueue.ALL, WorkerQueue.DRIFT):
            workers.append(
                Worker(
                    client,
                    task_queue=settings.drift_task_queue,
                    activities=[activities.analyze_drift],
                    graceful_shutdown_timeout=timedelta(seconds=10),
                )
            )
        for worker in workers:
            await stack.enter_async_context(worker)
        yield workers


@asynccontextmanager
async def worker_metrics(
    settings: Settings, metrics: Metrics, *, port: int
) -> AsyncIterator[tuple[Client, str]]:
    """A Temporal client whose runtime exports the SDK's metrics, and the worker's metrics
    endpoint serving them with ``metrics`` and the database-held gauges (read as rai_metrics,
    tenant names included: the endpoint is for scrapers inside the cluster); yields both (the
    endpoint as its URL)."""
    sdk_port = _free_loopback_port()
    client = await connect_temporal(settings, runtime=prometheus_runtime(f"127.0.0.1:{sdk_port}"))
    async with serving_metrics(
        metrics,
        DatabaseState(settings.resolved_metrics_database_url()),
        host=settings.worker_metrics_host,
        port=port,
        temporal_url=f"http://127.0.0.1:{sdk_port}/metrics",
    ) as url:
        yield client, url


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def run_worker(
    settings: Settings, queue: WorkerQueue = WorkerQueue.ALL, *, metrics_port: int | None = None
) -> None:
    await check_worker_start(settings)  # WorkerStartRefused: a one-line error for the caller
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics = Metrics()
    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    async with (
        worker_metrics(settings, metrics, port=port) as (client, url),
        running_workers(settings, client, queue=queue, metrics=metrics) as workers,
    ):
        polled = " and ".join(worker.task_queue for worker in workers)
        log.info("worker polling %s at %s", polled, settings.temporal_address)
        print(
            f"rai worker: polling {polled} at {settings.temporal_address}; metrics at {url}",
            flush=True,
        )
        await stop.wait()
    print("rai worker: stopped", flush=True)
