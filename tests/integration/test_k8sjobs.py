"""The Kubernetes job runner against the in-test API server (tests/k8s_fake.py): create,
adopt, refuse to adopt, cancel, 404; every status mapping with the shapes real clusters
report; the list+watch caches, their recovery from 410 Gone and the polling fallback; and, with
the fake kubelet, the real trainer run as the Job's container."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from aiohttp import web

from adapters.k8sjobs import (
    ATTEMPT_LABEL,
    COMPONENT_LABEL,
    MODEL_LABEL,
    PART_OF_LABEL,
    TENANT_LABEL,
    TRAINING_RUN_LABEL,
    KubernetesJobRunner,
    job_manifest,
    open_kubernetes_job_runner,
    secret_name_for,
)
from domain.canonical import canonical_json
from domain.jobs import (
    JobLaunchError,
    JobOrigin,
    JobRunnerError,
    JobSpec,
    JobState,
    JobStatus,
    job_name_for,
)
from domain.training import TrainingJobArgs, TrainingResult, TrainingStatus
from settings import Settings
from tests import k8s_shapes as shapes
from tests.k8s_fake import ApiError, FakeKubernetes

pytestmark = pytest.mark.integration

NAMESPACE = "rai-training-jobs"
STUCK_SECONDS = 60.0
CALLBACK_KEY = "5e" * 32
S3_CREDENTIAL = "s3-secret-value-never-in-a-manifest"


def runner_settings(fake: FakeKubernetes, directory: Path, **overrides: Any) -> Settings:
    return Settings(
        job_runner="kubernetes",
        kubeconfig=fake.kubeconfig(directory / "kubeconfig"),
        trainer_image=shapes.IMAGE,
        trainer_image_pull_secrets="registry-credentials",
        k8s_pod_stuck_seconds=STUCK_SECONDS,
        **overrides,
    )


def make_spec(
    *,
    dataset_uri: str = "s3://rai-datasets/none.jsonl",
    callback_url: str | None = None,
    env: dict[str, str] | None = None,
) -> JobSpec:
    args = TrainingJobArgs(
        tenant_id=uuid4(),
        training_run_id=uuid4(),
        model_name="yield-ridge",
        dataset_uri=dataset_uri,
        dataset_sha256="0" * 64,
        output_prefix="s3://rai-model-registry/models/test/",
        callback_url=callback_url,
    )
    return JobSpec(
        name=job_name_for(args.training_run_id),
        argv=tuple(args.to_argv()),
        origin=JobOrigin(
            tenant_id=args.tenant_id,
            training_run_id=args.training_run_id,
            attempt=1,
            model_name=args.model_name,
        ),
        env=env or {"RAI_S3_ENDPOINT_URL": "http://127.0.0.1:1", "RAI_S3_REGION": "us-east-1"},
        secret_env={
            "RAI_CALLBACK_SIGNING_KEY": CALLBACK_KEY,
            "RAI_S3_ACCESS_KEY": "worker-access-key",
            "RAI_S3_CREDENTIAL": S3_CREDENTIAL,
        },
    )


async def eventually(
    check: Callable[[], Awaitable[JobStatus]],
    accept: Callable[[JobStatus], bool],
    *,
    within: float = 30.0,
    what: str,
) -> JobStatus:
    """``check()`` until ``accept`` takes its answer; fails naming ``what`` and the last one."""
    last: JobStatus | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                last = await check()
                if accept(last):
                    return last
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"{what}: not within {within:.0f} s; last status {last}")


async def until(condition: Callable[[], bool], *, within: float = 30.0, what: str) -> None:
    try:
        async with asyncio.timeout(within):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"{what}: not within {within:.0f} s")


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeKubernetes]:
    async with FakeKubernetes(tmp_path / "cluster") as server:
        yield server
    assert server.rejected == [], server.rejected


@pytest.fixture
async def runner(fake: FakeKubernetes, tmp_path: Path) -> AsyncIterator[KubernetesJobRunner]:
    async with open_kubernetes_job_runner(
        runner_settings(fake, tmp_path), watch_seconds=5
    ) as opened:
        assert isinstance(opened, KubernetesJobRunner)
        await asyncio.wait_for(opened.jobs.synced.wait(), 30)
        await asyncio.wait_for(opened.pods.synced.wait(), 30)
        yield opened


def item_reads(fake: FakeKubernetes, name: str) -> int:
    """GETs of the Job ``name`` itself (not lists or watches)."""
    return sum(
        1 for method, path, _ in fake.requests if method == "GET" and path.endswith(f"/jobs/{name}")
    )


async def the_pod(fake: FakeKubernetes, job: str) -> str:
    await until(lambda: bool(fake.pods_of(NAMESPACE, job)), what=f"the pod of {job}")
    return str(fake.pods_of(NAMESPACE, job)[0]["metadata"]["name"])


# -- launch, adopt, cancel ----------------------------------------------------------------------


async def test_launch_creates_a_labelled_job_and_its_secret_owned_by_it(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    handle = await runner.launch(spec)
    assert handle.created
    assert handle.name == spec.name
    assert handle.started_at is not None

    job = fake.get("jobs", NAMESPACE, spec.name)
    assert job is not None
    expected_labels = {
        PART_OF_LABEL: "rai-level-d",
        COMPONENT_LABEL: "training-job",
        TENANT_LABEL: str(spec.origin.tenant_id),
        TRAINING_RUN_LABEL: str(spec.origin.training_run_id),
        ATTEMPT_LABEL: "1",
        MODEL_LABEL: "yield-ridge",
    }
    assert job["metadata"]["labels"] == expected_labels
    pod_name = await the_pod(fake, spec.name)
    pod = fake.get("pods", NAMESPACE, pod_name)
    assert pod is not None
    assert expected_labels.items() <= pod["metadata"]["labels"].items()
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python"]
    assert container["args"] == [*spec.argv, "--result-file", "/dev/termination-log"]
    assert job["spec"]["backoffLimit"] == 0

    secret = fake.get("secrets", NAMESPACE, secret_name_for(spec.name))
    assert secret is not None
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": spec.name, "uid": job["metadata"]["uid"]}
    ]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == dict(spec.secret_env)
    for value in spec.secret_env.values():
        assert value not in json.dumps(job)
        assert value not in json.dumps(pod)
    assert fake.jobs_created == 1


async def test_launching_again_adopts_the_job_even_from_another_worker(
    fake: FakeKubernetes, runner: KubernetesJobRunner, tmp_path: Path
) -> None:
    spec = make_spec()
    first = await runner.launch(spec)
    again = await runner.launch(spec)
    async with open_kubernetes_job_runner(runner_settings(fake, tmp_path)) as other:
        elsewhere = await other.launch(spec)
    assert (first.created, again.created, elsewhere.created) == (True, False, False)
    assert again.started_at == first.started_at == elsewhere.started_at
    assert fake.jobs_created == 1
    assert len(fake.list_objects("jobs", NAMESPACE)) == 1


@pytest.mark.parametrize("label", [TRAINING_RUN_LABEL, ATTEMPT_LABEL, TENANT_LABEL])
async def test_a_job_of_that_name_made_for_something_else_is_not_adopted(
    fake: FakeKubernetes, runner: KubernetesJobRunner, label: str
) -> None:
    spec = make_spec()
    manifest = job_manifest(spec, runner.config)
    manifest["metadata"]["labels"][label] = "7"  # another attempt, run or tenant
    fake.create_object("jobs", NAMESPACE, manifest)
    with pytest.raises(JobRunnerError, match=r"refusing to adopt it") as caught:
        await runner.launch(spec)
    assert label in str(caught.value)
    assert fake.get("secrets", NAMESPACE, secret_name_for(spec.name)) is None
    assert fake.jobs_created == 1


async def test_a_launch_that_died_before_the_secret_is_completed_by_the_next(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    fake.create_object("jobs", NAMESPACE, job_manifest(spec, runner.config))  # the Job, no Secret
    handle = await runner.launch(spec)
    assert not handle.created
    job = fake.get("jobs", NAMESPACE, spec.name)
    secret = fake.get("secrets", NAMESPACE, secret_name_for(spec.name))
    assert job is not None
    assert secret is not None
    assert secret["metadata"]["ownerReferences"][0]["uid"] == job["metadata"]["uid"]


async def test_a_leftover_secret_of_an_earlier_job_is_replaced(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    old = fake.get("jobs", NAMESPACE, spec.name)
    assert old is not None
    # The Job goes without its dependents (orphaned), and a new Job of that name is launched.
    await fake.delete_object("jobs", NAMESPACE, spec.name, "Orphan")
    await runner.launch(spec)
    new = fake.get("jobs", NAMESPACE, spec.name)
    secret = fake.get("secrets", NAMESPACE, secret_name_for(spec.name))
    assert new is not None
    assert secret is not None
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert [ref["uid"] for ref in secret["metadata"]["ownerReferences"]] == [new["metadata"]["uid"]]


async def test_a_refused_manifest_is_an_error_and_a_quota_refusal_may_be_retried(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    fake.next_create_error["jobs"] = ApiError(
        422, "Invalid", f'Job.batch "{spec.name}" is invalid: spec.template: Invalid value'
    )
    with pytest.raises(JobRunnerError, match=r"HTTP 422: Job.batch .* is invalid") as refused:
        await runner.launch(spec)
    assert not isinstance(refused.value, JobLaunchError)  # launching again cannot help
    fake.next_create_error["jobs"] = ApiError(
        403,
        "Forbidden",
        f'jobs.batch "{spec.name}" is forbidden: exceeded quota: training-quota, requested:'
        " count/jobs.batch=1, used: count/jobs.batch=10, limited: count/jobs.batch=10",
    )
    with pytest.raises(JobLaunchError, match="exceeded quota"):
        await runner.launch(spec)
    assert fake.list_objects("jobs", NAMESPACE) == []
    assert (await runner.launch(spec)).created  # once the quota allows it


async def test_cancel_deletes_in_the_background_so_pod_and_secret_go_too(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    pod = await the_pod(fake, spec.name)
    fake.set_pod_status(NAMESPACE, pod, shapes.pod_running(datetime.now(UTC)))
    await eventually(
        lambda: runner.status(spec.name), lambda s: s.state is JobState.RUNNING, what="running"
    )
    await runner.cancel(spec.name)
    assert fake.get("jobs", NAMESPACE, spec.name) is None
    await until(
        lambda: (
            not fake.pods_of(NAMESPACE, spec.name)
            and fake.get("secrets", NAMESPACE, secret_name_for(spec.name)) is None
        ),
        what="the garbage collector deleting the pod and the Secret",
    )
    assert (await runner.status(spec.name)).state is JobState.UNKNOWN
    await runner.cancel(spec.name)  # unknown now: nothing to do, no error
    await runner.cancel(job_name_for(uuid4()))  # never launched


async def test_cancel_of_a_job_deleted_meanwhile_is_a_success(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    await eventually(
        lambda: runner.status(spec.name), lambda s: s.state is JobState.PENDING, what="pending"
    )
    await until(lambda: runner.jobs.get(spec.name) is not None, what="the job in the cache")
    # Gone from the API without the watch having told the runner yet: DELETE answers 404.
    fake.objects["jobs"].pop((NAMESPACE, spec.name))
    await runner.cancel(spec.name)
    assert ("DELETE", f"/apis/batch/v1/namespaces/{NAMESPACE}/jobs/{spec.name}", False) in (
        fake.requests
    )


async def test_cancel_leaves_a_finished_job_alone(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    now = datetime.now(UTC)
    fake.set_job_status(NAMESPACE, spec.name, shapes.job_deadline_exceeded(now, now))
    await eventually(
        lambda: runner.status(spec.name), lambda s: s.state is JobState.FAILED, what="failed"
    )
    await runner.cancel(spec.name)
    assert fake.get("jobs", NAMESPACE, spec.name) is not None


async def test_an_unknown_name_is_unknown(runner: KubernetesJobRunner) -> None:
    status = await runner.status(job_name_for(uuid4()))
    assert status.state is JobState.UNKNOWN
    assert "no job named" in status.detail


# -- status mappings ------------------------------------------------------------------------------


def result_message(result: TrainingResult) -> str:
    return canonical_json(result.model_dump(mode="json")).decode() + "\n"


SUCCESS = TrainingResult(
    status=TrainingStatus.SUCCEEDED,
    artifact_uri="s3://rai-model-registry/models/m/model.json?versionId=v1",
    artifact_sha256="a" * 64,
    metrics={"validation_rmse": 0.05, "n_train": 800},
)
LONG_AGO = timedelta(seconds=2 * STUCK_SECONDS)


def scenario_pod(kind: str, now: datetime) -> dict[str, Any] | None:
    started = now - timedelta(seconds=30)
    return {
        "no status yet": None,
        "creating": shapes.pod_waiting("ContainerCreating", "", now),
        "running": shapes.pod_running(started),
        "unschedulable, recently": shapes.pod_unschedulable(now),
        "unschedulable, too long": shapes.pod_unschedulable(now - LONG_AGO),
        "image pull back-off, recently": shapes.pod_waiting(
            "ImagePullBackOff", shapes.IMAGE_PULL_BACKOFF_MESSAGE, now
        ),
        "image pull back-off, too long": shapes.pod_waiting(
            "ImagePullBackOff", shapes.IMAGE_PULL_BACKOFF_MESSAGE, now - LONG_AGO
        ),
        "image pull error, too long": shapes.pod_waiting(
            "ErrImagePull", shapes.ERR_IMAGE_PULL_MESSAGE, now - LONG_AGO
        ),
        "config error, briefly": shapes.pod_waiting(
            "CreateContainerConfigError", 'secret "x-env" not found', now
        ),
        "config error, too long": shapes.pod_waiting(
            "CreateContainerConfigError", 'secret "x-env" not found', now - LONG_AGO
        ),
        "oom killed": shapes.pod_terminated(started, now, exit_code=137, reason="OOMKilled"),
        "succeeded": shapes.pod_terminated(
            started, now, exit_code=0, reason="Completed", message=result_message(SUCCESS)
        ),
        "succeeded without a result": shapes.pod_terminated(
            started, now, exit_code=0, reason="Completed", message="hello"
        ),
        "trainer failed": shapes.pod_terminated(
            started,
            now,
            exit_code=1,
            reason="Error",
            message=result_message(TrainingResult.failed("dataset SHA-256 mismatch")),
        ),
        "crashed at start-up": shapes.pod_terminated(
            started,
            now,
            exit_code=1,
            reason="Error",
            message='{"level": "INFO"}\nTraceback (most recent call last):\nImportError: numpy',
        ),
    }[kind]


# (pod scenario, job status: None | "complete" | "backoff" | "deadline", state, detail parts)
SCENARIOS: list[tuple[str, str | None, JobState, tuple[str, ...]]] = [
    ("no status yet", None, JobState.PENDING, ("Pending",)),
    ("creating", None, JobState.PENDING, ("ContainerCreating",)),
    ("running", None, JobState.RUNNING, ("running on", "since")),
    ("unschedulable, recently", None, JobState.PENDING, ("Unschedulable", "fails after 60 s")),
    (
        "unschedulable, too long",
        None,
        JobState.FAILED,
        ("Unschedulable for 1", "Insufficient nvidia.com/gpu"),
    ),
    ("image pull back-off, recently", None, JobState.PENDING, ("ImagePullBackOff",)),
    (
        "image pull back-off, too long",
        None,
        JobState.FAILED,
        ("ImagePullBackOff for 1", "Back-off pulling image"),
    ),
    ("image pull error, too long", None, JobState.FAILED, ("ErrImagePull", "not found")),
    ("config error, briefly", None, JobState.PENDING, ("CreateContainerConfigError",)),
    (
        "config error, too long",
        None,
        JobState.FAILED,
        ("CreateContainerConfigError for 1", 'secret "x-env" not found'),
    ),
    ("oom killed", None, JobState.FAILED, ("OOMKilled", "exit code 137")),
    (
        "oom killed",
        "backoff",
        JobState.FAILED,
        ("BackoffLimitExceeded", "OOMKilled", "memory limit"),
    ),
    (
        "running",
        "deadline",
        JobState.FAILED,
        ("DeadlineExceeded: Job was active longer than specified deadline",),
    ),
    ("no status yet", "deadline", JobState.FAILED, ("DeadlineExceeded",)),
    ("succeeded", "complete", JobState.SUCCEEDED, ("succeeded",)),
    ("succeeded", None, JobState.SUCCEEDED, ("succeeded",)),
    (
        "succeeded without a result",
        "complete",
        JobState.FAILED,
        ("no result in the termination message", "hello"),
    ),
    (
        "trainer failed",
        "backoff",
        JobState.FAILED,
        ("BackoffLimitExceeded", "exit code 1", "trainer: dataset SHA-256 mismatch"),
    ),
    (
        "crashed at start-up",
        "backoff",
        JobState.FAILED,
        ("BackoffLimitExceeded", "ImportError: numpy"),
    ),
]


@pytest.mark.parametrize(
    ("pod_kind", "job_kind", "state", "parts"),
    SCENARIOS,
    ids=[f"{p}/{j or 'active'}" for p, j, _, _ in SCENARIOS],
)
async def test_status_maps_what_the_cluster_reports(
    fake: FakeKubernetes,
    runner: KubernetesJobRunner,
    pod_kind: str,
    job_kind: str | None,
    state: JobState,
    parts: tuple[str, ...],
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    pod = await the_pod(fake, spec.name)
    now = datetime.now(UTC)
    pod_status = scenario_pod(pod_kind, now)
    if pod_status is not None:
        fake.set_pod_status(NAMESPACE, pod, pod_status)
    started = now - timedelta(seconds=30)
    job_status = {
        None: shapes.job_active(started),
        "complete": shapes.job_complete(started, now),
        "backoff": shapes.job_backoff_limit_exceeded(started, now),
        "deadline": shapes.job_deadline_exceeded(started, now),
    }[job_kind]
    fake.set_job_status(NAMESPACE, spec.name, job_status)
    if job_kind == "deadline" and pod_kind == "no status yet":
        await fake.delete_object("pods", NAMESPACE, pod, "Background")  # the controller deleted it
    status = await eventually(
        lambda: runner.status(spec.name),
        lambda s: s.state is state and all(part in s.detail for part in parts),
        what=f"{state.value} with {parts}",
    )
    for part in parts:
        assert part in status.detail, (part, status.detail)
    if pod_kind == "succeeded":
        assert status.result == SUCCESS
        assert status.exit_code == 0
    if pod_kind == "trainer failed":
        assert status.result == TrainingResult.failed("dataset SHA-256 mismatch")
    if pod_kind == "oom killed":
        assert status.exit_code == 137


# -- the caches -----------------------------------------------------------------------------------


async def test_status_is_read_from_the_watched_cache(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    pod = await the_pod(fake, spec.name)
    await until(lambda: runner.jobs.get(spec.name) is not None, what="the job in the cache")
    reads = item_reads(fake, spec.name)
    fake.set_pod_status(NAMESPACE, pod, shapes.pod_running(datetime.now(UTC)))
    await eventually(
        lambda: runner.status(spec.name), lambda s: s.state is JobState.RUNNING, what="running"
    )
    assert item_reads(fake, spec.name) == reads, "status() read the API despite the cache"
    assert runner.jobs.lists == runner.pods.lists == 1


async def test_an_open_watch_ended_by_410_gone_is_recovered_by_listing_again(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    pod = await the_pod(fake, spec.name)
    fake.expire_watches()
    await until(
        lambda: runner.jobs.lists >= 2 and runner.pods.lists >= 2, what="listing again after 410"
    )
    await until(lambda: bool(fake.watchers), what="watching again")
    reads = item_reads(fake, spec.name)
    fake.set_pod_status(NAMESPACE, pod, shapes.pod_running(datetime.now(UTC)))
    await eventually(
        lambda: runner.status(spec.name), lambda s: s.state is JobState.RUNNING, what="running"
    )
    assert item_reads(fake, spec.name) == reads, "the new watch should feed the cache"


async def test_a_watch_resumed_from_a_compacted_version_lists_again(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    pod = await the_pod(fake, spec.name)
    await until(lambda: len(fake.watchers) == 2, what="both caches watching")
    # The server ends the watches (as at their timeout), then changes happen and are compacted
    # before the runner comes back: its version is too old, the API answers 410.
    fake.end_watches()
    fake.set_pod_status(NAMESPACE, pod, shapes.pod_running(datetime.now(UTC)))
    fake.compact()
    await until(lambda: runner.pods.lists >= 2, what="listing again after a 410 on resume")
    status = await eventually(
        lambda: runner.status(spec.name), lambda s: s.state is JobState.RUNNING, what="running"
    )
    assert status.detail.startswith("running on a node since"), status.detail


async def test_status_falls_back_to_reading_the_api_while_watches_fail(
    fake: FakeKubernetes, runner: KubernetesJobRunner
) -> None:
    spec = make_spec()
    await runner.launch(spec)
    pod = await the_pod(fake, spec.name)
    fake.fail_watches = True
    fake.end_watches()
    await until(lambda: not runner.jobs.synced.is_set(), what="the cache noticing the failure")
    fake.set_pod_status(NAMESPACE, pod, shapes.pod_running(datetime.now(UTC)))
    await eventually(
        lambda: runner.status(spec.name), lambda s: s.state is JobState.RUNNING, what="running"
    )
    fake.fail_watches = False
    await until(
        lambda: runner.jobs.synced.is_set() and len(fake.watchers) == 2, what="watching again"
    )


# -- the fake kubelet runs the real trainer ------------------------------------------------------


@pytest.fixture
async def kubelet(tmp_path: Path) -> AsyncIterator[FakeKubernetes]:
    async with FakeKubernetes(tmp_path / "cluster", kubelet=True, kill_grace=5) as server:
        yield server
    assert server.rejected == [], server.rejected


@pytest.fixture
async def callback_receiver() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """An HTTP endpoint recording the callbacks it receives."""
    received: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/callback", receive)
    app_runner = web.AppRunner(app, handle_signals=False)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    port = app_runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}/callback", received
    finally:
        await app_runner.cleanup()


async def test_the_secret_reaches_a_pod_that_waited_for_it(
    kubelet: FakeKubernetes,
    tmp_path: Path,
    callback_receiver: tuple[str, list[dict[str, Any]]],
) -> None:
    url, received = callback_receiver
    spec = make_spec(dataset_uri="not-an-s3-uri", callback_url=url)
    async with open_kubernetes_job_runner(runner_settings(kubelet, tmp_path)) as runner:
        assert isinstance(runner, KubernetesJobRunner)
        # A launcher died after creating the Job: its pod waits for the Secret.
        kubelet.create_object("jobs", NAMESPACE, job_manifest(spec, runner.config))
        waiting = await eventually(
            lambda: runner.status(spec.name),
            lambda s: "CreateContainerConfigError" in s.detail,
            what="the pod waiting for its Secret",
        )
        assert waiting.state is JobState.PENDING
        assert secret_name_for(spec.name) in waiting.detail
        await runner.launch(spec)  # adopts the Job and creates the Secret
        status = await eventually(
            lambda: runner.status(spec.name),
            lambda s: s.finished,
            within=120,
            what="the job ending",
        )
    # The trainer had its callback key (else it would have said so) and reported its error.
    assert status.state is JobState.FAILED
    assert status.result is not None
    assert status.result.error is not None
    assert "not-an-s3-uri" in status.result.error
    assert "BackoffLimitExceeded" in status.detail
    assert [body["document"]["status"] for body in received] == ["FAILED"]


async def test_the_deadline_stops_a_job_that_runs_too_long(
    kubelet: FakeKubernetes, tmp_path: Path
) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # an S3 endpoint that accepts and never answers
        writer.close()

    silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    settings = runner_settings(kubelet, tmp_path, trainer_active_deadline_seconds=3)
    spec = make_spec(
        env={"RAI_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}", "RAI_S3_REGION": "us-east-1"}
    )
    try:
        async with open_kubernetes_job_runner(settings) as runner:
            await runner.launch(spec)
            status = await eventually(
                lambda: runner.status(spec.name),
                lambda s: s.finished,
                within=120,
                what="the deadline",
            )
    finally:
        silent.close()
    assert status.state is JobState.FAILED
    assert status.detail.startswith(
        "DeadlineExceeded: Job was active longer than specified deadline"
    ), status.detail
    await until(lambda: not kubelet.pods_of(NAMESPACE, spec.name), what="the pod deleted")
