"""TrainingService: a pipeline's training run, from launching its job to registering its model.

Written against the job-runner port (:class:`domain.jobs.JobRunner`), so where a job runs
(a local process, a Kubernetes Job) is the worker's choice alone.

``train`` records the run QUEUED (once), launches the job for this attempt (or re-attaches to
it by name), marks the run RUNNING and polls the job until it has finished, calling
``heartbeat`` with the job's name before every look: the caller (the training activity) hands
that name to its next attempt, which waits for the same job, unless that job failed, in which
case it launches a fresh one named after the attempt. ``register`` closes a succeeded run and
registers its model, once.

Each run's job gets a callback key of its own, derived from the platform key and the run id:
every attempt, and a worker that re-attaches, gives the job the same key without storing it;
its public half is recorded with the run, so the API can verify the job's callback.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol
from uuid import UUID

import asyncpg

from domain.holdout import DEFAULT_HOLDOUT_FRACTION
from domain.jobs import JobOrigin, JobRunner, JobSpec, JobState, job_attempt, job_name_for
from domain.pipeline import RegisterInput, RegisterOutput, TrainInput
from domain.signing import Signer
from domain.training import CALLBACK_KEY_ENV, EXTRA_SECONDS_ENV, TrainedModel, TrainingJobArgs
from services.registry import InTransaction, RegisteredModel, RegisterModel
from settings import Settings

_CALLBACK_KEY_CONTEXT = b"rai-level-d/callback-key/"

Heartbeat = Callable[[str], None]


@dataclass(frozen=True)
class JobEnvironment:
    """The environment of a training job (the variables the trainer reads, see
    :mod:`domain.training`): ``env`` the plain values, ``secret_env`` the credentials and the
    callback key, which a job runner keeps out of anything it records (a Kubernetes runner puts
    them in a Secret)."""

    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict)

    def with_callback_key(self, seed_hex: str) -> JobEnvironment:
        """This environment plus the run's callback signing key (a hex Ed25519 seed)."""
        return JobEnvironment(self.env, {**self.secret_env, CALLBACK_KEY_ENV: seed_hex})


def job_environment(settings: Settings, *, extra_seconds: float = 0.0) -> JobEnvironment:
    """The environment a launcher gives every job: the S3 endpoint and credentials, the
    simulated GPU time."""
    env = {
        "RAI_S3_ENDPOINT_URL": settings.s3_endpoint_url,
        "RAI_S3_REGION": settings.s3_region,
        EXTRA_SECONDS_ENV: repr(float(extra_seconds)),
    }
    secrets: dict[str, str] = {}
    if settings.s3_access_key is not None:
        secrets["RAI_S3_ACCESS_KEY"] = settings.s3_access_key
    if settings.s3_secret_key is not None:
        secrets["RAI_S3_SECRET_KEY"] = settings.s3_secret_key.get_secret_value()
    return JobEnvironment(env, secrets)


@dataclass(frozen=True)
class TrainingConfig:
    """How training jobs are launched: where they write, whom they call back, their
    environment, and how often a waiting step looks at its job."""

    registry_bucket: str
    callback_url: str | None
    environment: JobEnvironment
    poll_interval: timedelta = timedelta(seconds=2)
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION


class TrainingRuns(Protocol):
    """The run bookkeeping training needs (:class:`services.pipeline.PipelineService`)."""

    async def start_training_run(
        self,
        tenant_id: UUID,
        training_run_id: UUID,
        *,
        workflow_id: str,
        fence: int,
        model_name: str,
        dataset_uri: str,
        dataset_sha256: str,
        callback_public_key: bytes,
        workflow_run_id: str | None = None,
    ) -> None: ...

    async def mark_running(self, tenant_id: UUID, training_run_id: UUID, job_name: str) -> None: ...

    async def finish_run(
        self, tenant_id: UUID, training_run_id: UUID, status: str, *, reason: str | None = None
    ) -> bool: ...

    async def run_job(self, tenant_id: UUID, training_run_id: UUID) -> str | None: ...

    async def finish_run_in(
        self,
        conn: asyncpg.Connection,
        tenant_id: UUID,
        training_run_id: UUID,
        status: str,
        reason: str | None = None,
    ) -> bool: ...


class ModelRegistrar(Protocol):
    """The registration training needs (:class:`services.registry.ModelRegistryService`)."""

    async def version_of_training_run(
        self, tenant_id: UUID, training_run_id: UUID
    ) -> RegisteredModel | None: ...

    async def register_model(
        self, tenant_id: UUID, request: RegisterModel, *, also: InTransaction | None = None
    ) -> RegisteredModel: ...


class TrainingService:
    def __init__(
        self,
        *,
        runs: TrainingRuns,
        registry: ModelRegistrar,
        jobs: JobRunner,
        platform: Signer,
        config: TrainingConfig,
    ) -> None:
        self._runs = runs
        self._registry = registry
        self._jobs = jobs
        self._platform = platform
        self._config = config

    def callback_signer(self, training_run_id: UUID) -> Signer:
        """The run's callback key (see the module docstring)."""
        seed = hmac.new(
            bytes.fromhex(self._platform.seed_hex()),
            _CALLBACK_KEY_CONTEXT + training_run_id.bytes,
            hashlib.sha256,
        ).digest()
        return Signer(seed)

    async def train(
        self,
        request: TrainInput,
        *,
        attempt: int,
        resumed_job: str | None,
        heartbeat: Heartbeat,
        workflow_run_id: str | None = None,
    ) -> TrainedModel:
        """Run the training step's ``attempt`` (see the module docstring); ``resumed_job`` is
        the job name an earlier attempt last heartbeated. Raises when the job fails."""
        signer = self.callback_signer(request.training_run_id)
        await self._runs.start_training_run(
            request.tenant_id,
            request.training_run_id,
            workflow_id=request.workflow_id,
            fence=request.fence,
            model_name=request.model_name,
            dataset_uri=request.dataset_uri,
            dataset_sha256=request.dataset_sha256,
            callback_public_key=signer.public_key,
            workflow_run_id=workflow_run_id,
        )
        job_name = await self._job_for_attempt(request.training_run_id, attempt, resumed_job)
        await self._jobs.launch(self.job_spec(request, job_name, signer))
        await self._runs.mark_running(request.tenant_id, request.training_run_id, job_name)
        while True:
            heartbeat(job_name)
            status = await self._jobs.status(job_name)
            if status.state is JobState.SUCCEEDED and status.result is not None:
                trained = status.result.trained()
                if trained is None:
                    raise RuntimeError(f"training job {job_name} reported no artifact")
                return trained
            if status.finished:
                raise RuntimeError(f"training job {job_name} failed: {status.detail}")
            await asyncio.sleep(self._config.poll_interval.total_seconds())

    async def _job_for_attempt(
        self, training_run_id: UUID, attempt: int, resumed_job: str | None
    ) -> str:
        """The job this attempt waits for: the one an earlier attempt started, unless that
        one failed (then a fresh job, named after the attempt)."""
        earlier = resumed_job or job_name_for(training_run_id)
        status = await self._jobs.status(earlier)
        if status.state is JobState.FAILED:
            return job_name_for(training_run_id, attempt=attempt)
        return earlier

    def job_spec(self, request: TrainInput, job_name: str, signer: Signer) -> JobSpec:
        """The job ``job_name`` of the run: the trainer's command line (outputs under a prefix
        of the job's own), its environment, the run's callback key as a secret."""
        prefix = (
            f"s3://{self._config.registry_bucket}/models/{request.tenant_id}/"
            f"{request.model_name}/{request.training_run_id}/{job_name}/"
        )
        args = TrainingJobArgs(
            tenant_id=request.tenant_id,
            training_run_id=request.training_run_id,
            model_name=request.model_name,
            dataset_uri=request.dataset_uri,
            dataset_sha256=request.dataset_sha256,
            output_prefix=prefix,
            callback_url=self._config.callback_url or None,
            holdout_fraction=self._config.holdout_fraction,
        )
        environment = self._config.environment.with_callback_key(signer.seed_hex())
        return JobSpec(
            name=job_name,
            argv=tuple(args.to_argv()),
            origin=JobOrigin(
                tenant_id=request.tenant_id,
                training_run_id=request.training_run_id,
                attempt=job_attempt(job_name),
                model_name=request.model_name,
            ),
            env=environment.env,
            secret_env=environment.secret_env,
        )

    async def cancel(self, tenant_id: UUID, training_run_id: UUID, *, reason: str) -> None:
        """Stop the run's job (the one it last launched, else its first) and mark the run
        CANCELLED; a finished run, or a job already over, is left as it is."""
        job = await self._runs.run_job(tenant_id, training_run_id)
        await self._jobs.cancel(job or job_name_for(training_run_id))
        await self._runs.finish_run(tenant_id, training_run_id, "CANCELLED", reason=reason)

    async def register(self, request: RegisterInput) -> RegisterOutput:
        """The run succeeded: register its model and mark the run SUCCEEDED in one transaction
        (a run is SUCCEEDED only with its model; a registration that fails leaves it RUNNING
        for the dead letter to fail with the reason). A retry finds the version the run already
        produced."""
        tenant, run = request.tenant_id, request.training_run_id

        async def succeeded(conn: asyncpg.Connection) -> None:
            await self._runs.finish_run_in(conn, tenant, run, "SUCCEEDED")

        model = await self._registry.version_of_training_run(
            tenant, run
        ) or await self._registry.register_model(
            request.tenant_id,
            RegisterModel(
                model_name=request.model_name,
                artifact_uri=request.artifact_uri,
                dataset_uri=request.dataset_uri,
                dataset_sha256=request.dataset_sha256,
                expected_artifact_sha256=request.artifact_sha256,
                training_run_id=request.training_run_id,
                drift_report_id=request.drift_report_id,
                metrics=request.metrics,
            ),
            also=succeeded,
        )
        return RegisterOutput(
            model_version_id=model.id, version=model.version, artifact_sha256=model.artifact_sha256
        )
