"""What the trainer and local-runner tests share: synthetic snapshots in the run's datasets
bucket, job specs, waiting for a job to end, and stopping whatever a test left running."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import numpy as np

from adapters.localjobs import LocalJobRunner
from adapters.objectstore import ObjectStore
from adapters.processes import ProcessSlot, is_alive
from domain.jobs import JobOrigin, JobSpec, JobStatus, job_name_for
from domain.training import TrainingJobArgs
from services.training import job_environment
from settings import Settings
from tests.polling import wait_until

SOIL_EFFECTS = {"clay": -1.5, "loam": 0.0, "sand": 1.0}


def synthetic_events(n: int, *, seed: int = 11, unlabelled: int = 0) -> list[dict[str, Any]]:
    """``n`` learning events whose outcome is a known linear function of the features
    (``2 + 0.05 rain_mm - 0.3 temp_c + soil effect``, small noise), over ~n/3 fields."""
    rng = np.random.default_rng(seed)
    soils = list(SOIL_EFFECTS)
    events: list[dict[str, Any]] = []
    for i in range(n + unlabelled):
        rain = float(rng.normal(300.0, 40.0))
        temp = float(rng.normal(18.0, 4.0))
        soil = soils[int(rng.integers(len(soils)))]
        outcome = 2 + 0.05 * rain - 0.3 * temp + SOIL_EFFECTS[soil] + float(rng.normal(0, 0.05))
        events.append(
            {
                "season_id": f"season-{i % 3}",
                "field_id": f"field-{i // 3}",
                "features": {"rain_mm": rain, "temp_c": temp, "soil": soil},
                "outcome": outcome if i < n else None,
            }
        )
    return events


def jsonl(events: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(event).encode() + b"\n" for event in events)


@dataclass(frozen=True)
class Snapshot:
    uri: str
    sha256: str
    data: bytes


async def put_snapshot(store: ObjectStore, settings: Settings, data: bytes) -> Snapshot:
    """Store a snapshot in the datasets bucket, as the pipeline's snapshot step does."""
    key = f"tests/trainer/{secrets.token_hex(6)}/snapshot.jsonl"
    stored = await store.put_bytes(
        settings.s3_datasets_bucket, key, data, content_type="application/x-ndjson"
    )
    return Snapshot(str(stored.uri), hashlib.sha256(data).hexdigest(), data)


def training_args(
    settings: Settings, snapshot: Snapshot, *, callback_url: str | None = None
) -> TrainingJobArgs:
    run_id = uuid4()
    return TrainingJobArgs(
        tenant_id=uuid4(),
        training_run_id=run_id,
        model_name="yield-ridge",
        dataset_uri=snapshot.uri,
        dataset_sha256=snapshot.sha256,
        output_prefix=f"s3://{settings.s3_registry_bucket}/tests/trainer/{run_id}/",
        callback_url=callback_url,
    )


def job_spec(
    settings: Settings,
    args: TrainingJobArgs,
    *,
    extra_seconds: float = 0.0,
    callback_key: str | None = None,
) -> JobSpec:
    environment = job_environment(settings, extra_seconds=extra_seconds)
    if callback_key is not None:
        environment = environment.with_callback_key(callback_key)
    return JobSpec(
        name=job_name_for(args.training_run_id),
        argv=tuple(args.to_argv()),
        origin=JobOrigin(
            tenant_id=args.tenant_id,
            training_run_id=args.training_run_id,
            attempt=1,
            model_name=args.model_name,
        ),
        env=environment.env,
        secret_env=environment.secret_env,
    )


async def wait_until_exited(
    runner: LocalJobRunner, name: str, *, within: float = 90.0
) -> JobStatus:
    """The job's status once it is finished and its process has exited (so a test never
    leaves a trainer behind still sending its callback)."""
    directory = runner.job_dir(name)

    async def probe() -> tuple[JobStatus, bool]:
        status = await runner.status(name)
        record = ProcessSlot(directory).load()
        return status, record is None or not is_alive(record.pid, record.start_time)

    status, _ = await wait_until(
        probe,
        lambda seen: seen[0].finished and seen[1],
        within=within,
        every=0.1,
        failure=f"job {name} did not finish with its process gone",
        shown=lambda seen: f"{seen[0]}, process {'gone' if seen[1] else 'alive'}",
    )
    return status


def _job_names(jobs_dir: Path) -> list[str]:
    return [d.name for d in jobs_dir.iterdir() if d.is_dir()] if jobs_dir.is_dir() else []


async def stop_leftovers(jobs_dir: Path) -> None:
    """Stop every job process still running under ``jobs_dir`` (test teardown)."""
    runner = LocalJobRunner(jobs_dir.parent, stop_grace=2.0)
    for name in await asyncio.to_thread(_job_names, jobs_dir):
        await runner.cancel(name)
