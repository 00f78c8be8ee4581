"""The Kubernetes job runner: each training attempt is a ``batch/v1`` Job (kubernetes-asyncio).

It implements :class:`domain.jobs.JobRunner` like ``adapters.localjobs``, with Kubernetes as
the only record of what runs: a worker on another host finds a Job by its name.

``launch``
    Creates the Job named ``spec.name`` in the configured namespace (M9), labelled with the
    attempt's tenant, training run, attempt and model (:func:`job_labels`, on the Job and its
    pod), then the attempt's own Secret with ``spec.secret_env`` (the callback key, S3
    credentials), owner-referenced to the Job so that the garbage collector deletes it with the
    Job. Job first: the Secret needs the Job's uid. Until the Secret exists the pod waits in
    ``CreateContainerConfigError``, which the kubelet retries; a launcher that dies in between
    leaves a Job that the next ``launch`` adopts and completes by creating the Secret. A 409 on
    create means the Job exists: it is adopted only if its labels name the same training run and
    attempt. Secret values appear only in the Secret, never in the Job or in a message.
``status``
    From the Job's conditions (``Complete``, ``Failed`` with its reason such as
    ``DeadlineExceeded``) and its pod: a container that was ``OOMKilled`` or ended otherwise, or
    a pod stuck longer than ``pod_stuck_seconds`` in ``ImagePullBackOff``, ``ErrImagePull``,
    ``InvalidImageName``, ``CreateContainerConfigError`` or unschedulable, is a failed attempt
    whose detail names the reason (it reaches the dead letter). The trainer's result document
    travels as the container's *termination message*: the runner passes
    ``--result-file /dev/termination-log`` and the kubelet copies that file (at most 4096 bytes)
    into the pod's status when the container ends, where every worker can read it without a
    volume or log access. The policy ``FallbackToLogsOnError`` makes a container that died
    before writing it (a crash at start-up) report its log tail there instead.
``cancel``
    Deletes an unfinished Job with propagation ``Background`` (its pod and Secret go too); an
    unknown (404) or finished Job is left alone.

Jobs and pods are read from a cache that a list-then-watch keeps current (the informer
pattern): each kind is listed once, then watched from the list's ``resourceVersion``; a watch
that ends is resumed from the last version seen, and a ``410 Gone`` (the version was compacted
away) starts over with a fresh list. While a cache is not in sync (before the first list, or
after an error), and for a Job the cache has not seen yet, ``status`` reads the API directly.

What the worker's service account needs in the namespace: jobs create/get/list/watch/delete,
pods get/list/watch, secrets create/get/delete.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar, cast

import aiohttp
from kubernetes_asyncio.client import (
    ApiClient,
    ApiException,
    BatchV1Api,
    Configuration,
    CoreV1Api,
    V1ContainerStatus,
    V1Job,
    V1JobCondition,
    V1ObjectMeta,
    V1Pod,
    V1Secret,
)
from kubernetes_asyncio.config.config_exception import ConfigException
from kubernetes_asyncio.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_HOST_ENV_NAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)
from kubernetes_asyncio.config.kube_config import KUBE_CONFIG_DEFAULT_LOCATION, load_kube_config
from kubernetes_asyncio.watch import Watch
from pydantic import ValidationError

from domain.jobs import (
    RESULT_FILE_OPTION,
    JobHandle,
    JobLaunchError,
    JobOrigin,
    JobRunnerError,
    JobSpec,
    JobState,
    JobStatus,
    is_job_name,
)
from domain.training import TrainingResult, TrainingStatus
from settings import Settings

log = logging.getLogger(__name__)

# The labels the chart's NetworkPolicy and the dashboards select on (a fixed contract).
PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
TENANT_LABEL: Final = "rai-level-d.io/tenant"
TRAINING_RUN_LABEL: Final = "rai-level-d.io/training-run"
ATTEMPT_LABEL: Final = "rai-level-d.io/attempt"
MODEL_LABEL: Final = "rai-level-d.io/model"
PART_OF: Final = "rai-level-d"
COMPONENT: Final = "training-job"
# A model name may be longer than a label value allows; the annotation always holds it whole.
MODEL_ANNOTATION: Final = "rai-level-d.io/model-name"
TRAINING_JOB_SELECTOR: Final = f"{PART_OF_LABEL}={PART_OF},{COMPONENT_LABEL}={COMPONENT}"
# Set by the Job controller on the pods it creates (Kubernetes 1.27+).
JOB_NAME_POD_LABEL: Final = "batch.kubernetes.io/job-name"

CONTAINER_NAME: Final = "trainer"
RUNTIME_CLASS: Final = "nvidia"
GPU_RESOURCE: Final = "nvidia.com/gpu"
TERMINATION_MESSAGE_PATH: Final = "/dev/termination-log"
# The kubelet keeps at most this much of a termination message.
TERMINATION_MESSAGE_LIMIT: Final = 4096
TMP_VOLUME: Final = "tmp"
# The pod's own writable /tmp (an emptyDir: the root filesystem is read-only), not a path on
# this host, hence the noqa for ruff's "insecure temp dir" rule.
TMP_MOUNT_PATH: Final = "/tmp"  # noqa: S108
# The variables of the trainer's S3 credentials: with an existing Secret for them configured,
# the worker's own are not handed to the job.
S3_CREDENTIAL_ENV: Final = ("RAI_S3_ACCESS_KEY", "RAI_S3_SECRET_KEY")

# Container waiting reasons that do not resolve by themselves quickly: after the stuck limit
# the attempt has failed.
STUCK_WAITING_REASONS: Final = frozenset(
    {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "CreateContainerConfigError"}
)

DEFAULT_WATCH_SECONDS: Final = 240
_RETRY_FIRST_SECONDS = 0.5
_RETRY_MAX_SECONDS = 30.0

_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?")
_QUANTITY_FACTORS: Final = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    **{suffix: Decimal(1000) ** (i + 1) for i, suffix in enumerate("kMGTPE")},
    **{f"{suffix}i": Decimal(1024) ** (i + 1) for i, suffix in enumerate("KMGTPE")},
}


def quantity_value(text: str) -> Decimal:
    """The value of a Kubernetes quantity such as ``500m`` or ``8Gi`` (ValueError otherwise)."""
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity")
    return Decimal(match[1]) * _QUANTITY_FACTORS[match[2] or ""]


@dataclass(frozen=True)
class KubernetesJobConfig:
    """How the training Jobs are made (from the ``RAI_K8S_*`` and ``RAI_TRAINER_*`` settings)."""

    image: str
    namespace: str = "rai-training-jobs"
    image_pull_secrets: tuple[str, ...] = ()
    gpu_count: int = 1
    cpu_request: str = "1"
    cpu_limit: str = "4"
    memory_request: str = "4Gi"
    memory_limit: str = "16Gi"
    active_deadline_seconds: int = 6 * 3600
    ttl_seconds_after_finished: int = 7 * 24 * 3600
    # An existing Secret with the trainer's own S3 credentials (RAI_TRAINER_S3_SECRET).
    s3_credentials_ref: str | None = None
    run_as_user: int = 10001
    run_as_group: int = 10001
    pod_stuck_seconds: float = 300.0
    # The interpreter in the image (the container's command).
    python: str = "python"

    @classmethod
    def from_settings(cls, settings: Settings) -> KubernetesJobConfig:
        """The configuration, or ValueError with one line naming the setting that is wrong."""
        if not (settings.trainer_image or "").strip():
            raise ValueError("RAI_TRAINER_IMAGE is required with RAI_JOB_RUNNER=kubernetes")
        for what, request, limit in (
            ("CPU", settings.trainer_cpu_request, settings.trainer_cpu_limit),
            ("MEMORY", settings.trainer_memory_request, settings.trainer_memory_limit),
        ):
            if quantity_value(request) > quantity_value(limit):
                raise ValueError(
                    f"RAI_TRAINER_{what}_REQUEST ({request}) exceeds"
                    f" RAI_TRAINER_{what}_LIMIT ({limit})"
                )
        return cls(
            image=(settings.trainer_image or "").strip(),
            namespace=settings.k8s_namespace,
            image_pull_secrets=settings.trainer_image_pull_secret_names(),
            gpu_count=settings.trainer_gpu_count,
            cpu_request=settings.trainer_cpu_request,
            cpu_limit=settings.trainer_cpu_limit,
            memory_request=settings.trainer_memory_request,
            memory_limit=settings.trainer_memory_limit,
            active_deadline_seconds=settings.trainer_active_deadline_seconds,
            ttl_seconds_after_finished=settings.trainer_ttl_seconds_after_finished,
            s3_credentials_ref=settings.trainer_s3_secret,
            run_as_user=settings.trainer_run_as_user,
            run_as_group=settings.trainer_run_as_group,
            pod_stuck_seconds=settings.k8s_pod_stuck_seconds,
        )


# -- manifests --------------------------------------------------------------------------------


def label_value(text: str) -> str:
    """``text`` if it is a valid label value, else a readable prefix and a hash of it."""
    if _LABEL_VALUE.fullmatch(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    prefix = re.sub(r"[^-A-Za-z0-9_.]", "-", text)[:54]
    prefix = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", prefix)
    return f"{prefix}-{digest}" if prefix else digest


def job_labels(origin: JobOrigin) -> dict[str, str]:
    """The labels of an attempt's Job, pod and Secret."""
    return {
        PART_OF_LABEL: PART_OF,
        COMPONENT_LABEL: COMPONENT,
        TENANT_LABEL: str(origin.tenant_id),
        TRAINING_RUN_LABEL: str(origin.training_run_id),
        ATTEMPT_LABEL: str(origin.attempt),
        MODEL_LABEL: label_value(origin.model_name),
    }


def secret_name_for(job_name: str) -> str:
    """The attempt's own Secret (its secret environment)."""
    return f"{job_name}-env"


def job_secret_env(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, str]:
    """What goes into the attempt's Secret: ``spec.secret_env``, less the S3 credentials when
    an existing Secret provides the trainer's own."""
    if config.s3_credentials_ref is None:
        return dict(spec.secret_env)
    return {k: v for k, v in spec.secret_env.items() if k not in S3_CREDENTIAL_ENV}


def job_manifest(spec: JobSpec, config: KubernetesJobConfig) -> dict[str, Any]:
    """The Job of an attempt (no secret value in it: they are referenced, see the module)."""
    labels = job_labels(spec.origin)
    env_from: list[dict[str, Any]] = []
    if job_secret_env(spec, config):
        env_from.append({"secretRef": {"name": secret_name_for(spec.name)}})
    if config.s3_credentials_ref is not None:
        # Later sources win: the trainer's own credentials over anything before them.
        env_from.append({"secretRef": {"name": config.s3_credentials_ref}})
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": config.image,
        "imagePullPolicy": "IfNotPresent",
        "command": [config.python],
        "args": [*spec.argv, RESULT_FILE_OPTION, TERMINATION_MESSAGE_PATH],
        "env": [{"name": name, "value": value} for name, value in sorted(spec.env.items())],
        "resources": {
            "requests": {"cpu": config.cpu_request, "memory": config.memory_request},
            "limits": {
                "cpu": config.cpu_limit,
                "memory": config.memory_limit,
                GPU_RESOURCE: str(config.gpu_count),
            },
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_group,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{"name": TMP_VOLUME, "mountPath": TMP_MOUNT_PATH}],
    }
    if env_from:
        container["envFrom"] = env_from
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "runtimeClassName": RUNTIME_CLASS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": config.run_as_user,
            "runAsGroup": config.run_as_group,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": TMP_VOLUME, "emptyDir": {}}],
    }
    if config.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in config.image_pull_secrets]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": spec.name,
            "namespace": config.namespace,
            "labels": labels,
            "annotations": {MODEL_ANNOTATION: spec.origin.model_name},
        },
        "spec": {
            # Temporal owns retries (M7): a failed pod fails the Job.
            "backoffLimit": 0,
            "activeDeadlineSeconds": config.active_deadline_seconds,
            "ttlSecondsAfterFinished": config.ttl_seconds_after_finished,
            "template": {"metadata": {"labels": labels}, "spec": pod_spec},
        },
    }


def secret_manifest(
    spec: JobSpec, config: KubernetesJobConfig, *, job_uid: str
) -> dict[str, Any] | None:
    """The attempt's Secret, owned by its Job (uid ``job_uid``); None when there is nothing
    secret to hand over."""
    values = job_secret_env(spec, config)
    if not values:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": secret_name_for(spec.name),
            "namespace": config.namespace,
            "labels": job_labels(spec.origin),
            # No blockOwnerDeletion: setting it needs update rights on the Job's finalizers,
            # and nothing has to wait for the Secret.
            "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": spec.name, "uid": job_uid}
            ],
        },
        "type": "Opaque",
        "immutable": True,
        "data": {
            name: base64.b64encode(value.encode()).decode("ascii")
            for name, value in sorted(values.items())
        },
    }


# -- status -----------------------------------------------------------------------------------


def _true_condition(job: V1Job, *types: str) -> V1JobCondition | None:
    conditions = (job.status.conditions if job.status else None) or []
    for condition in conditions:
        if condition.type in types and condition.status == "True":
            return condition
    return None


def _trainer_status(pod: V1Pod) -> V1ContainerStatus | None:
    statuses = (pod.status.container_statuses if pod.status else None) or []
    return next((s for s in statuses if s.name == CONTAINER_NAME), None)


def _read_result(message: str | None) -> tuple[TrainingResult | None, str | None]:
    """(the result, None) or (None, why the termination message holds none)."""
    if not message:
        return None, "the container left no termination message"
    cut = len(message.encode()) >= TERMINATION_MESSAGE_LIMIT
    try:
        return TrainingResult.model_validate(json.loads(message)), None
    except (ValueError, ValidationError):
        if cut:
            return None, f"the termination message was cut at {TERMINATION_MESSAGE_LIMIT} bytes"
        lines = message.strip().splitlines()
        return None, "no result in the termination message; it ends: " + " | ".join(lines[-3:])


def _since(moment: datetime | None, now: datetime) -> float:
    if moment is None:
        return 0.0
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (now - moment).total_seconds())


def _scheduled_at(pod: V1Pod) -> datetime | None:
    conditions = (pod.status.conditions if pod.status else None) or []
    for condition in conditions:
        if condition.type == "PodScheduled" and condition.status == "True":
            return condition.last_transition_time
    return pod.metadata.creation_timestamp if pod.metadata else None


def _ended(name: str, pod: V1Pod) -> JobStatus | None:
    """The attempt's end as its pod shows it (None while the trainer has not ended)."""
    container = _trainer_status(pod)
    terminated = container.state.terminated if container and container.state else None
    if terminated is None:
        phase = pod.status.phase if pod.status else None
        if phase == "Failed":  # e.g. evicted before the container ran
            reason = pod.status.reason or "Failed"
            return JobStatus(name, JobState.FAILED, f"pod {reason}: {pod.status.message or ''}")
        return None
    code = terminated.exit_code
    result, problem = _read_result(terminated.message)
    if code == 0 and result is not None and result.status is TrainingStatus.SUCCEEDED:
        return JobStatus(name, JobState.SUCCEEDED, "succeeded", result, code)
    how = f"container {CONTAINER_NAME}: {terminated.reason or 'terminated'} (exit code {code})"
    if terminated.reason == "OOMKilled":
        how = f"OOMKilled: container {CONTAINER_NAME} exceeded its memory limit (exit code {code})"
    if result is not None and result.error:
        how += f"; trainer: {result.error}"
    elif problem is not None:
        how += f"; {problem}"
    return JobStatus(name, JobState.FAILED, how, result, code)


def _waiting(name: str, pod: V1Pod, now: datetime, stuck_after: float) -> JobStatus:
    """An unfinished pod: pending, running, or stuck for longer than ``stuck_after``."""
    conditions = (pod.status.conditions if pod.status else None) or []
    for condition in conditions:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            waited = _since(condition.last_transition_time, now)
            detail = f"Unschedulable for {waited:.0f} s: {condition.message or ''}"
            if waited >= stuck_after:
                return JobStatus(name, JobState.FAILED, detail)
            return JobStatus(name, JobState.PENDING, f"{detail} (fails after {stuck_after:.0f} s)")
    container = _trainer_status(pod)
    state = container.state if container else None
    if state is not None and state.waiting is not None:
        reason = state.waiting.reason or "Waiting"
        detail = f"{reason}: {state.waiting.message or ''}".rstrip(": ")
        if reason in STUCK_WAITING_REASONS:
            waited = _since(_scheduled_at(pod), now)
            detail = f"{reason} for {waited:.0f} s: {state.waiting.message or ''}"
            if waited >= stuck_after:
                return JobStatus(name, JobState.FAILED, detail)
            detail += f" (fails after {stuck_after:.0f} s)"
        return JobStatus(name, JobState.PENDING, detail)
    if state is not None and state.running is not None:
        node = pod.spec.node_name if pod.spec else None
        since = state.running.started_at
        when = since.isoformat(timespec="seconds") if since else "?"
        return JobStatus(name, JobState.RUNNING, f"running on {node or 'a node'} since {when}")
    phase = pod.status.phase if pod.status else None
    return JobStatus(name, JobState.PENDING, f"pod {pod.metadata.name} {phase or 'Pending'}")


def job_status(
    name: str, job: V1Job, pods: list[V1Pod], *, now: datetime, stuck_after: float
) -> JobStatus:
    """Where an attempt is, from its Job and the pods the Job created (see the module)."""
    pods = sorted(
        pods,
        key=lambda pod: pod.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC),
    )
    pod = pods[-1] if pods else None
    failed = _true_condition(job, "Failed", "FailureTarget")
    if failed is not None:
        detail = f"{failed.reason or 'Failed'}: {failed.message or ''}".rstrip(": ")
        ended = _ended(name, pod) if pod is not None else None
        if ended is not None and ended.state is JobState.FAILED:
            detail += f"; {ended.detail}"
        elif ended is not None:  # the trainer finished, but too late (e.g. the deadline)
            detail += "; the trainer's result came too late to count"
        return JobStatus(
            name,
            JobState.FAILED,
            detail,
            ended.result if ended and ended.state is JobState.FAILED else None,
            ended.exit_code if ended else None,
        )
    complete = _true_condition(job, "Complete", "SuccessCriteriaMet")
    if pod is not None:
        ended = _ended(name, pod)
        if ended is not None:
            return ended
    if complete is not None:
        return JobStatus(name, JobState.FAILED, "the Job completed but its pod is gone")
    if pod is None:
        if job.spec is not None and job.spec.suspend:
            return JobStatus(name, JobState.PENDING, "the Job is suspended")
        return JobStatus(name, JobState.PENDING, "waiting for the Job controller to create a pod")
    return _waiting(name, pod, now, stuck_after)


# -- the list-then-watch cache ----------------------------------------------------------------


class _Named(Protocol):
    @property
    def metadata(self) -> V1ObjectMeta: ...


Named = TypeVar("Named", bound=_Named)


class ObjectCache(Generic[Named]):
    """The training Jobs or their pods of one namespace, kept current by list + watch."""

    def __init__(
        self,
        kind: str,
        list_call: Callable[..., Awaitable[Any]],
        namespace: str,
        *,
        watch_seconds: int,
    ) -> None:
        self.kind = kind
        self._list = list_call
        self._namespace = namespace
        self._watch_seconds = watch_seconds
        self.objects: dict[str, Named] = {}
        self.synced = asyncio.Event()
        # How many times it listed: 1 + one per watch that could not be resumed (410 Gone, an
        # error). Tests read it; so can a metrics exporter.
        self.lists = 0

    def get(self, name: str) -> Named | None:
        return self.objects.get(name) if self.synced.is_set() else None

    def forget(self, name: str) -> None:
        self.objects.pop(name, None)

    async def run(self) -> None:
        """List and watch until cancelled, re-listing after a 410 Gone or an error."""
        delay = _RETRY_FIRST_SECONDS
        while True:
            try:
                version = await self._relist()
                delay = _RETRY_FIRST_SECONDS
                while True:
                    version = await self._watch_from(version)
            except ApiException as exc:
                self.synced.clear()
                if exc.status == 410:
                    log.info("%s watch expired (410 Gone); listing again", self.kind)
                    continue
                log.warning("%s watch failed (HTTP %s): %s", self.kind, exc.status, exc.reason)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.synced.clear()
                log.warning("%s watch failed: %s: %s", self.kind, type(exc).__name__, exc)
            except Exception:
                # A bug must not leave a stale cache behind: status() reads the API meanwhile.
                self.synced.clear()
                log.exception("%s watch failed unexpectedly", self.kind)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX_SECONDS)

    async def _relist(self) -> str:
        listing = await self._list(self._namespace, label_selector=TRAINING_JOB_SELECTOR)
        self.objects = {item.metadata.name: item for item in listing.items or []}
        self.lists += 1
        self.synced.set()
        return str(listing.metadata.resource_version)

    async def _watch_from(self, version: str) -> str:
        """One watch from ``version`` until the server ends it; the last version seen."""
        async with Watch() as watch:
            stream = watch.stream(
                self._list,
                self._namespace,
                label_selector=TRAINING_JOB_SELECTOR,
                resource_version=version,
                timeout_seconds=self._watch_seconds,
                allow_watch_bookmarks=True,
                _request_timeout=self._watch_seconds + 30,
            )
            async for event in stream:
                kind, raw = event["type"], event["raw_object"]
                version = str(raw.get("metadata", {}).get("resourceVersion") or version)
                if kind == "BOOKMARK":
                    continue
                item = event["object"]
                if kind == "DELETED":
                    self.objects.pop(item.metadata.name, None)
                else:
                    self.objects[item.metadata.name] = item
        return version


# -- the runner -------------------------------------------------------------------------------


Body = TypeVar("Body")


def _as_body(model: type[Body], manifest: dict[str, Any]) -> Body:
    """A manifest as the request body of a call typed for ``model``: the client sends a dict
    body as it is (``ApiClient.sanitize_for_serialization``), its stubs name only the model."""
    return cast(Body, manifest)


def _api_error(exc: ApiException) -> str:
    """The API server's own message of a failed call (its Status), else the HTTP reason."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    return f"HTTP {exc.status}: {message or exc.reason}"


class KubernetesJobRunner:
    """Training attempts as Kubernetes Jobs (see the module docstring). ``start`` begins the
    caches' list-and-watch; ``close`` stops it (the API client belongs to the caller)."""

    def __init__(
        self,
        api: ApiClient,
        config: KubernetesJobConfig,
        *,
        watch_seconds: int = DEFAULT_WATCH_SECONDS,
    ) -> None:
        self.config = config
        self._batch = BatchV1Api(api)
        self._core = CoreV1Api(api)
        namespace = config.namespace
        self.jobs: ObjectCache[V1Job] = ObjectCache(
            "jobs", self._batch.list_namespaced_job, namespace, watch_seconds=watch_seconds
        )
        self.pods: ObjectCache[V1Pod] = ObjectCache(
            "pods", self._core.list_namespaced_pod, namespace, watch_seconds=watch_seconds
        )
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self.jobs.run(), name="k8s-jobs-cache"),
            asyncio.create_task(self.pods.run(), name="k8s-pods-cache"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- launch -----------------------------------------------------------------------------

    async def launch(self, spec: JobSpec) -> JobHandle:
        """Create the attempt's Job and Secret, or adopt the Job this name already has if it
        was made for the same training run and attempt."""
        namespace = self.config.namespace
        try:
            job = await self._batch.create_namespaced_job(
                namespace, _as_body(V1Job, job_manifest(spec, self.config))
            )
            created = True
        except ApiException as exc:
            if exc.status != 409:
                raise self._launch_error(spec.name, exc) from None
            job = await self._adoptable(spec)
            created = False
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise JobLaunchError(f"could not create job {spec.name}: {exc}") from exc
        await self._ensure_secret(spec, job)
        return JobHandle(spec.name, created=created, started_at=job.metadata.creation_timestamp)

    def _launch_error(self, name: str, exc: ApiException) -> JobRunnerError:
        message = f"could not create job {name} in {self.config.namespace}: {_api_error(exc)}"
        if exc.status in (400, 422):  # the manifest itself is refused: retrying cannot help
            return JobRunnerError(message)
        return JobLaunchError(message)

    async def _adoptable(self, spec: JobSpec) -> V1Job:
        try:
            job = await self._batch.read_namespaced_job(spec.name, self.config.namespace)
        except ApiException as exc:
            raise JobLaunchError(
                f"job {spec.name} exists but could not be read: {_api_error(exc)}"
            ) from None
        labels = job.metadata.labels or {}
        wanted = job_labels(spec.origin)
        mismatched = [
            key
            for key in (TENANT_LABEL, TRAINING_RUN_LABEL, ATTEMPT_LABEL)
            if labels.get(key) != wanted[key]
        ]
        if mismatched:
            found = ", ".join(f"{key}={labels.get(key)!r}" for key in mismatched)
            raise JobRunnerError(
                f"job {spec.name} in {self.config.namespace} exists but was not launched for"
                f" training run {spec.origin.training_run_id} attempt {spec.origin.attempt}"
                f" ({found}); refusing to adopt it"
            )
        log.info("job %s exists already; adopting it", spec.name)
        return job

    async def _ensure_secret(self, spec: JobSpec, job: V1Job) -> None:
        """Create the attempt's Secret owned by ``job``, unless it exists with that owner (a
        leftover of an earlier Job of this name is replaced: the collector would delete it)."""
        manifest = secret_manifest(spec, self.config, job_uid=job.metadata.uid)
        if manifest is None:
            return
        name, namespace = manifest["metadata"]["name"], self.config.namespace
        for _ in range(2):
            try:
                await self._core.create_namespaced_secret(namespace, _as_body(V1Secret, manifest))
                return
            except ApiException as exc:
                if exc.status != 409:
                    raise JobRunnerError(
                        f"job {spec.name} was created but its Secret {name} was not:"
                        f" {_api_error(exc)} (launching again completes it)"
                    ) from None
            try:
                existing = await self._core.read_namespaced_secret(name, namespace)
                owners = {ref.uid for ref in existing.metadata.owner_references or []}
                if job.metadata.uid in owners:
                    return
                await self._core.delete_namespaced_secret(name, namespace)
            except ApiException as exc:
                if exc.status != 404:
                    raise JobRunnerError(
                        f"the Secret {name} of job {spec.name}: {_api_error(exc)}"
                    ) from None
        raise JobRunnerError(f"the Secret {name} of job {spec.name} keeps being replaced")

    # -- status -----------------------------------------------------------------------------

    async def status(self, name: str) -> JobStatus:
        if not is_job_name(name):
            raise ValueError(f"not a job name: {name!r}")
        job = self.jobs.get(name)
        try:
            if job is None:
                job = await self._batch.read_namespaced_job(name, self.config.namespace)
            pods = await self._pods_of(job)
        except ApiException as exc:
            if exc.status == 404:
                return JobStatus(
                    name, JobState.UNKNOWN, f"no job named {name} in {self.config.namespace}"
                )
            raise JobRunnerError(f"could not read job {name}: {_api_error(exc)}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise JobRunnerError(f"could not read job {name}: {exc}") from exc
        return job_status(
            name, job, pods, now=datetime.now(UTC), stuck_after=self.config.pod_stuck_seconds
        )

    async def _pods_of(self, job: V1Job) -> list[V1Pod]:
        uid = job.metadata.uid
        if self.pods.synced.is_set():
            candidates = list(self.pods.objects.values())
        else:
            listing = await self._core.list_namespaced_pod(
                self.config.namespace,
                label_selector=f"{JOB_NAME_POD_LABEL}={job.metadata.name}",
            )
            candidates = list(listing.items or [])
        return [
            pod
            for pod in candidates
            if any(ref.uid == uid for ref in pod.metadata.owner_references or [])
        ]

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(self, name: str) -> None:
        """Delete the Job if it has not finished (propagation Background: its pod and Secret
        go too); an unknown or finished Job is left alone."""
        status = await self.status(name)
        if status.state is JobState.UNKNOWN or status.finished:
            return
        try:
            await self._batch.delete_namespaced_job(
                name, self.config.namespace, propagation_policy="Background"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise JobRunnerError(f"could not delete job {name}: {_api_error(exc)}") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise JobRunnerError(f"could not delete job {name}: {exc}") from exc
        self.jobs.forget(name)


# -- connecting -------------------------------------------------------------------------------


def kubeconfig_problem(settings: Settings, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why no Kubernetes client configuration can be loaded (None if one can)."""
    if environ.get(SERVICE_HOST_ENV_NAME):
        if not Path(SERVICE_TOKEN_FILENAME).is_file():
            return (
                f"in a pod ({SERVICE_HOST_ENV_NAME} is set) but without a service account token"
                f" at {SERVICE_TOKEN_FILENAME}: the worker's pod needs one"
            )
        return None
    path = (settings.kubeconfig or Path(KUBE_CONFIG_DEFAULT_LOCATION)).expanduser()
    if not path.is_file():
        setting = "RAI_KUBECONFIG" if settings.kubeconfig else "RAI_KUBECONFIG (unset)"
        return (
            f"no kubeconfig at {path}: not in a pod ({SERVICE_HOST_ENV_NAME} unset), set"
            f" {setting} to a kubeconfig file"
        )
    return None


async def client_configuration(settings: Settings) -> Configuration:
    """The service account's configuration in a pod, else the kubeconfig's."""
    configuration = Configuration()
    if os.environ.get(SERVICE_HOST_ENV_NAME):
        InClusterConfigLoader(
            token_filename=SERVICE_TOKEN_FILENAME, cert_filename=SERVICE_CERT_FILENAME
        ).load_and_set(configuration)
    else:
        path = settings.kubeconfig or Path(KUBE_CONFIG_DEFAULT_LOCATION)
        await load_kube_config(
            config_file=str(path.expanduser()), client_configuration=configuration
        )
    return configuration


@contextlib.asynccontextmanager
async def open_kubernetes_job_runner(
    settings: Settings, *, watch_seconds: int = DEFAULT_WATCH_SECONDS
) -> AsyncIterator[KubernetesJobRunner]:
    """The runner for ``settings``, its caches running, closed with the block."""
    try:
        config = KubernetesJobConfig.from_settings(settings)
    except ValueError as exc:
        raise JobRunnerError(str(exc)) from None
    problem = kubeconfig_problem(settings)
    if problem is not None:
        raise JobRunnerError(problem)
    try:
        configuration = await client_configuration(settings)
    except ConfigException as exc:
        raise JobRunnerError(f"Kubernetes client configuration: {exc}") from exc
    async with ApiClient(configuration) as api:
        runner = KubernetesJobRunner(api, config, watch_seconds=watch_seconds)
        runner.start()
        try:
            yield runner
        finally:
            await runner.close()
