"""Composition root of the Temporal worker (``rai worker``).

Builds settings, pools and clients once, runs a worker on ``training-queue`` (the workflows and
every step but drift) and one on ``drift-analysis-queue`` (M6) -- or only one of them
(``rai worker --queue training|drift``) -- and stops gracefully on
SIGTERM/SIGINT: running activities get the worker's graceful-shutdown window, and what does not
finish is retried elsewhere — a training job itself keeps running and is re-attached by name.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

from redis.asyncio import Redis
from temporalio.client import Client
from temporalio.worker import Worker

from activities.pipeline import PipelineActivities
from activities.promotion import PromotionActivities
from adapters.jobrunners import open_job_runner
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
from starter import TemporalExecutions, WorkerQueue, connect_temporal
from workflows.promotion import ShadowEvaluation
from workflows.retrain import RetrainingPipeline

log = logging.getLogger(__name__)


@asynccontextmanager
async def running_workers(
    settings: Settings, client: Client | None = None, queue: WorkerQueue = WorkerQueue.ALL
) -> AsyncIterator[list[Worker]]:
    """The workers of ``queue`` (both by default), running, with every client they need;
    everything closed on exit."""
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
        pipeline = PipelineService(db, store, datasets_bucket=settings.s3_datasets_bucket)
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
            ),
            pipeline=pipeline,
            drift=DriftCheck(
                pipeline,
                DriftAnalysisService(db, store, platform, bucket=settings.s3_registry_bucket),
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


async def run_worker(settings: Settings, queue: WorkerQueue = WorkerQueue.ALL) -> None:
    await check_worker_start(settings)  # WorkerStartRefused: a one-line error for the caller
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_workers(settings, queue=queue) as workers:
        polled = " and ".join(worker.task_queue for worker in workers)
        log.info("worker polling %s at %s", polled, settings.temporal_address)
        print(f"rai worker: polling {polled} at {settings.temporal_address}", flush=True)
        await stop.wait()
    print("rai worker: stopped", flush=True)
