"""TrainingService against a scripted job runner and in-memory run bookkeeping: launching,
waiting, re-attaching by name, a fresh job after a failed one, the callback key as a secret."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from uuid import UUID, uuid4

import pytest
from pydantic import SecretStr

from domain.jobs import JobHandle, JobSpec, JobState, JobStatus, job_name_for
from domain.model_status import ModelStatus
from domain.pipeline import RegisterInput, TrainInput
from domain.signing import Signer
from domain.training import (
    CALLBACK_KEY_ENV,
    TrainedModel,
    TrainingJobArgs,
    TrainingResult,
    TrainingStatus,
)
from services.registry import InTransaction, RegisteredModel, RegisterModel
from services.training import TrainingConfig, TrainingService, job_environment
from settings import Settings

pytestmark = pytest.mark.unit

SUCCESS = TrainingResult(
    status=TrainingStatus.SUCCEEDED,
    artifact_uri="s3://reg/models/m.json?versionId=v1",
    artifact_sha256="ab" * 32,
    metrics={"n_train": 10},
)


@dataclass
class ScriptedRunner:
    """A job runner whose launched jobs go through the states a test scripts for them, one
    per look at their status (the last one stays); a name never launched is UNKNOWN."""

    scripts: dict[str, list[JobStatus]] = field(default_factory=dict)
    launched: list[JobSpec] = field(default_factory=list)

    def script(self, name: str, *states: JobState, result: TrainingResult | None = None) -> None:
        finished = (JobState.SUCCEEDED, JobState.FAILED)
        self.scripts[name] = [
            JobStatus(name, state, state.value.lower(), result if state in finished else None)
            for state in states
        ]

    async def launch(self, spec: JobSpec) -> JobHandle:
        created = spec.name not in {launched.name for launched in self.launched}
        self.launched.append(spec)
        return JobHandle(spec.name, created=created)

    async def status(self, name: str) -> JobStatus:
        if name not in {launched.name for launched in self.launched}:
            return JobStatus(name, JobState.UNKNOWN, f"no job named {name}")
        script = self.scripts[name]
        return script.pop(0) if len(script) > 1 else script[0]

    async def cancel(self, name: str) -> None:
        raise AssertionError("training never cancels a job")


@dataclass
class Runs:
    started: list[tuple[UUID, bytes]] = field(default_factory=list)
    running: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)

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
    ) -> None:
        self.started.append((training_run_id, callback_public_key))

    async def mark_running(self, tenant_id: UUID, training_run_id: UUID, job_name: str) -> None:
        self.running.append(job_name)

    async def run_job(self, tenant_id: UUID, training_run_id: UUID) -> str | None:
        return self.running[-1] if self.running else None

    async def finish_run(
        self, tenant_id: UUID, training_run_id: UUID, status: str, *, reason: str | None = None
    ) -> bool:
        self.finished.append(status)
        return True

    async def finish_run_in(
        self,
        conn: object,
        tenant_id: UUID,
        training_run_id: UUID,
        status: str,
        reason: str | None = None,
    ) -> bool:
        return await self.finish_run(tenant_id, training_run_id, status, reason=reason)


@dataclass
class Registry:
    registered: list[tuple[RegisterModel, RegisteredModel]] = field(default_factory=list)

    async def version_of_training_run(
        self, tenant_id: UUID, training_run_id: UUID
    ) -> RegisteredModel | None:
        found = [
            model for asked, model in self.registered if asked.training_run_id == training_run_id
        ]
        return found[0] if found else None

    async def register_model(
        self, tenant_id: UUID, request: RegisterModel, *, also: InTransaction | None = None
    ) -> RegisteredModel:
        if also is not None:
            await also(None)  # type: ignore[arg-type]  # the stand-in runs has no transaction
        model = RegisteredModel(
            id=uuid4(),
            model_name=request.model_name,
            version=len(self.registered) + 1,
            status=ModelStatus.REGISTERED,
            artifact_uri=request.artifact_uri,
            artifact_version_id="v1",
            artifact_sha256=request.expected_artifact_sha256 or "",
            lineage_hash="0" * 64,
            parent_version_id=None,
        )
        self.registered.append((request, model))
        return model


@dataclass
class World:
    runner: ScriptedRunner = field(default_factory=ScriptedRunner)
    runs: Runs = field(default_factory=Runs)
    registry: Registry = field(default_factory=Registry)
    platform: Signer = field(default_factory=Signer.generate)
    heartbeats: list[str] = field(default_factory=list)

    def service(
        self, callback_url: str | None = "http://api.test/v1/callbacks/training"
    ) -> TrainingService:
        settings = Settings(s3_access_key="AK", s3_secret_key=SecretStr("SK"))
        return TrainingService(
            runs=self.runs,
            registry=self.registry,
            jobs=self.runner,
            platform=self.platform,
            config=TrainingConfig(
                registry_bucket="reg",
                callback_url=callback_url,
                environment=job_environment(settings, extra_seconds=1.5),
                poll_interval=timedelta(0),
            ),
        )

    async def train(
        self, request: TrainInput, *, attempt: int = 1, resumed_job: str | None = None
    ) -> TrainedModel:
        return await self.service().train(
            request, attempt=attempt, resumed_job=resumed_job, heartbeat=self.heartbeats.append
        )


def train_input() -> TrainInput:
    return TrainInput(
        tenant_id=uuid4(),
        training_run_id=uuid4(),
        workflow_id="retrain/x",
        fence=3,
        model_name="yield",
        dataset_uri="s3://data/snapshots/s.jsonl?versionId=v1",
        dataset_sha256="cd" * 32,
    )


async def test_a_job_is_launched_and_waited_for_until_it_succeeds() -> None:
    world, request = World(), train_input()
    name = job_name_for(request.training_run_id)
    world.runner.script(
        name, JobState.PENDING, JobState.RUNNING, JobState.SUCCEEDED, result=SUCCESS
    )

    trained = await world.train(request)

    assert trained == TrainedModel(
        artifact_uri=SUCCESS.artifact_uri or "", artifact_sha256="ab" * 32, metrics={"n_train": 10}
    )
    [spec] = world.runner.launched
    assert spec.name == name
    assert (spec.origin.tenant_id, spec.origin.training_run_id) == (
        request.tenant_id,
        request.training_run_id,
    )
    assert (spec.origin.attempt, spec.origin.model_name) == (1, "yield")
    assert world.runs.running == [name]
    # The step heartbeats the job's name before every look at it, so a retry can find it.
    assert world.heartbeats == [name] * 3


async def test_the_job_runs_the_trainer_with_the_runs_arguments() -> None:
    world, request = World(), train_input()
    name = job_name_for(request.training_run_id)
    world.runner.script(name, JobState.SUCCEEDED, result=SUCCESS)
    await world.train(request)
    [spec] = world.runner.launched
    assert (
        list(spec.argv)
        == TrainingJobArgs(
            tenant_id=request.tenant_id,
            training_run_id=request.training_run_id,
            model_name="yield",
            dataset_uri=request.dataset_uri,
            dataset_sha256=request.dataset_sha256,
            output_prefix=(
                f"s3://reg/models/{request.tenant_id}/yield/{request.training_run_id}/{name}/"
            ),
            callback_url="http://api.test/v1/callbacks/training",
        ).to_argv()
    )


async def test_the_callback_key_is_a_secret_of_the_run() -> None:
    world, request = World(), train_input()
    world.runner.script(job_name_for(request.training_run_id), JobState.SUCCEEDED, result=SUCCESS)
    await world.train(request)
    [spec] = world.runner.launched
    [(run_id, public_key)] = world.runs.started

    assert CALLBACK_KEY_ENV not in spec.env
    assert set(spec.secret_env) == {CALLBACK_KEY_ENV, "RAI_S3_ACCESS_KEY", "RAI_S3_SECRET_KEY"}
    assert "SK" not in spec.env.values()
    seed = spec.secret_env[CALLBACK_KEY_ENV]
    # The job signs with the key whose public half the run was recorded with.
    assert Signer.from_hex(seed).public_key == public_key
    assert run_id == request.training_run_id
    # Derived, not stored: the same for every attempt of the run, another for another run.
    service = world.service()
    assert service.callback_signer(request.training_run_id).seed_hex() == seed
    assert service.callback_signer(uuid4()).seed_hex() != seed


async def test_without_a_callback_url_the_job_does_not_call_back() -> None:
    world, request = World(), train_input()
    world.runner.script(job_name_for(request.training_run_id), JobState.SUCCEEDED, result=SUCCESS)
    await world.service(callback_url=None).train(
        request, attempt=1, resumed_job=None, heartbeat=world.heartbeats.append
    )
    assert "--callback-url" not in world.runner.launched[0].argv


async def test_a_failed_job_fails_the_attempt_and_the_next_one_launches_a_fresh_job() -> None:
    world, request = World(), train_input()
    first = job_name_for(request.training_run_id)
    failure = TrainingResult.failed("dataset SHA-256 mismatch")
    world.runner.script(first, JobState.RUNNING, JobState.FAILED, result=failure)
    with pytest.raises(RuntimeError, match=f"training job {first} failed"):
        await world.train(request)

    second = job_name_for(request.training_run_id, attempt=2)
    world.runner.script(second, JobState.SUCCEEDED, result=SUCCESS)
    trained = await world.train(request, attempt=2, resumed_job=world.heartbeats[-1])

    assert trained.artifact_sha256 == "ab" * 32
    assert [spec.name for spec in world.runner.launched] == [first, second]
    assert world.runner.launched[1].origin.attempt == 2
    assert world.runs.running == [first, second]


async def test_a_retry_reattaches_to_the_job_its_predecessor_waited_for() -> None:
    world, request = World(), train_input()
    # Attempt 3 had launched a fresh job; the worker running it died while the job ran on.
    running = job_name_for(request.training_run_id, attempt=3)
    world.runner.script(
        running, JobState.RUNNING, JobState.RUNNING, JobState.SUCCEEDED, result=SUCCESS
    )
    await world.runner.launch(world.service().job_spec(request, running, Signer.generate()))

    await world.train(request, attempt=4, resumed_job=running)

    # Launching the name again re-attaches (the runner's promise); no new name is made up.
    assert [spec.name for spec in world.runner.launched] == [running, running]
    assert world.runner.launched[1].origin.attempt == 3
    assert world.runs.running == [running]


async def test_a_first_attempt_retried_without_heartbeat_finds_the_runs_job() -> None:
    world, request = World(), train_input()
    name = job_name_for(request.training_run_id)
    world.runner.script(name, JobState.RUNNING, JobState.SUCCEEDED, result=SUCCESS)
    # Attempt 1 launched the job, then its worker died before its first heartbeat went out.
    await world.runner.launch(world.service().job_spec(request, name, Signer.generate()))

    await world.train(request, attempt=2, resumed_job=None)
    assert [spec.name for spec in world.runner.launched] == [name, name]


async def test_registration_closes_the_run_and_registers_once() -> None:
    world, request = World(), train_input()
    registration = RegisterInput(
        tenant_id=request.tenant_id,
        training_run_id=request.training_run_id,
        model_name="yield",
        artifact_uri="s3://reg/models/m.json?versionId=v1",
        artifact_sha256="ab" * 32,
        dataset_uri=request.dataset_uri,
        dataset_sha256=request.dataset_sha256,
        drift_report_id=None,
        metrics={"n_train": 10},
    )
    first = await world.service().register(registration)
    again = await world.service().register(registration)

    assert again == first
    assert first.artifact_sha256 == "ab" * 32
    assert world.runs.finished == ["SUCCEEDED"]  # with the registration, once
    [(registered, model)] = world.registry.registered
    assert first.model_version_id == model.id
    assert registered.expected_artifact_sha256 == "ab" * 32
    assert registered.training_run_id == request.training_run_id
    assert registered.metrics == {"n_train": 10}
