"""An in-test Kubernetes API server: the subset of the API the Kubernetes job runner uses.

No API server can be installed on these machines, so the runner is tested against this one. It
speaks real HTTP and the real wire format: batch/v1 Jobs, core/v1 Pods and Secrets in any
namespace — create, get, list, delete, and watch with ``resourceVersion`` (list, then watch
from the list's version; history replay; bookmarks are not sent, which the API allows) — with
the API's ``Status`` errors 401/404/405/409/410/422. One global ``resourceVersion`` counter
orders every change, as etcd's revision does.

What the real control plane would also do, it does as far as the runner can notice:

* Every object a client sends is validated strictly against the Kubernetes OpenAPI schemas of
  :data:`KUBERNETES_VERSION` (``kubernetes-validate --strict``: unknown fields, wrong types,
  missing required fields) and against a few API-server rules a schema cannot express
  (:func:`semantic_problems`: names, labels, requests <= limits, restartPolicy, Secret keys).
  A refused object is answered 422 ``Invalid`` *and* recorded in :attr:`FakeKubernetes.rejected`
  so that a test fails on it even if the client swallowed the error.
* The Job controller: on create it defaults the Job (selector, controller labels) and creates
  its pod, unless the pod would violate Pod Security ``restricted`` (the training namespace's
  level, M9; :func:`restricted_violations`), which is recorded in ``rejected`` instead. It
  enforces ``activeDeadlineSeconds`` (``DeadlineExceeded``), ``backoffLimit: 0``
  (``BackoffLimitExceeded``) and ``ttlSecondsAfterFinished``, with the conditions a 1.31+
  cluster sets (``SuccessCriteriaMet``/``FailureTarget`` before ``Complete``/``Failed``).
* The garbage collector: deleting a Job with propagation ``Background`` deletes its dependents
  (pods, Secrets whose ``ownerReferences`` name the Job's uid) right after it, ``Foreground``
  before it, ``Orphan`` (the REST default for Jobs) strips the references; an object created
  with an owner uid that does not exist is collected.
* With ``kubelet=True`` the pods run: the container's command as a local process (``python``
  is this test's interpreter), with the container's ``env``, its ``envFrom``/``secretKeyRef``
  Secrets' data (a missing Secret keeps the pod in ``CreateContainerConfigError`` and is
  retried, as the kubelet does), and a termination-message file. The emulated container shares
  this host's filesystem, so where the kubelet would mount that file at
  ``terminationMessagePath``, the path in the container's arguments is replaced by the host
  file's; the message (at most 4096 bytes, ``FallbackToLogsOnError`` honoured) goes into the
  pod's status when the process ends. Security contexts are validated, not enforced (the
  process runs as this test's user). Deleting a running pod sends SIGTERM, then SIGKILL after
  ``kill_grace`` seconds.

Without ``kubelet`` pods stay ``Pending`` until a test sets their status
(:meth:`FakeKubernetes.set_pod_status`, with the shapes of :mod:`tests.k8s_shapes`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import os
import re
import secrets
import signal
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import kubernetes_validate
from aiohttp import web

from adapters.k8sjobs import quantity_value

KUBERNETES_VERSION: Final = "1.30.0"
NODE_NAME: Final = "gpu-node-1"
LOG_FALLBACK_BYTES: Final = 2048
LOG_FALLBACK_LINES: Final = 80
MESSAGE_LIMIT: Final = 4096

# resource (URL segment) -> (group, version, kind)
RESOURCES: Final = {
    "jobs": ("batch", "v1", "Job"),
    "pods": ("", "v1", "Pod"),
    "secrets": ("", "v1", "Secret"),
}
_PATH = re.compile(
    r"^/(?:apis/(?P<group>batch)/v1|api/v1)/namespaces/(?P<namespace>[^/]+)/"
    r"(?P<resource>jobs|pods|secrets)(?:/(?P<name>[^/]+))?$"
)
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(
    r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def timestamp(moment: datetime | None = None) -> str:
    """RFC 3339 in UTC with seconds, as the API writes times."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_version(resource: str) -> str:
    group, version, _ = RESOURCES[resource]
    return f"{group}/{version}" if group else version


def qualified(resource: str) -> str:
    """How the API names a resource in messages: ``jobs.batch``, ``pods``."""
    group = RESOURCES[resource][0]
    return f"{resource}.{group}" if group else resource


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def body(self) -> dict[str, Any]:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def not_found(resource: str, name: str) -> ApiError:
    group = RESOURCES[resource][0]
    return ApiError(
        404,
        "NotFound",
        f'{qualified(resource)} "{name}" not found',
        name=name,
        group=group,
        kind=resource,
    )


# -- validation ---------------------------------------------------------------------------------


def schema_problems(body: dict[str, Any]) -> list[str]:
    """What the strict OpenAPI schema of :data:`KUBERNETES_VERSION` refuses in ``body``."""
    try:
        kubernetes_validate.validate(body, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(part) for part in exc.path)
        return [f"{where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [exc.message]
    return []


def _label_problems(where: str, labels: dict[str, Any]) -> list[str]:
    problems = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if (prefix and not _DNS_SUBDOMAIN.fullmatch(prefix)) or not _LABEL_NAME.fullmatch(name):
            problems.append(f"{where}: invalid label key {key!r}")
        if not isinstance(value, str) or not _LABEL_VALUE.fullmatch(value):
            problems.append(f"{where}: invalid label value {value!r} of {key}")
    return problems


def _container_problems(where: str, container: dict[str, Any]) -> list[str]:
    problems = []
    if not _DNS_LABEL.fullmatch(container.get("name", "")):
        problems.append(f"{where}.name: must be a DNS-1123 label")
    resources = container.get("resources", {})
    requests, limits = resources.get("requests", {}), resources.get("limits", {})
    for resource, request in requests.items():
        if resource in limits and quantity_value(str(request)) > quantity_value(
            str(limits[resource])
        ):
            problems.append(f"{where}.resources.requests[{resource}]: must be <= the limit")
        if "/" in resource and resource in limits and request != limits[resource]:
            problems.append(f"{where}.resources.requests[{resource}]: must equal the limit")
    for resource, limit in limits.items():
        if "/" in resource and Decimal(quantity_value(str(limit))) % 1 != 0:
            problems.append(f"{where}.resources.limits[{resource}]: must be an integer")
    return problems


def semantic_problems(resource: str, body: dict[str, Any], namespace: str) -> list[str]:
    """The API server's validation beyond the schema, for what the runner sends."""
    problems: list[str] = []
    metadata = body.get("metadata", {})
    name = metadata.get("name", "")
    if not _DNS_SUBDOMAIN.fullmatch(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 subdomain")
    if resource == "jobs" and not _DNS_LABEL.fullmatch(name):
        problems.append(f"metadata.name: {name!r} must be a label value (<= 63 characters)")
    if metadata.get("namespace", namespace) != namespace:
        problems.append("metadata.namespace: does not match the namespace of the request")
    if (
        body.get("apiVersion") != api_version(resource)
        or body.get("kind") != RESOURCES[resource][2]
    ):
        problems.append(f"apiVersion/kind: not {api_version(resource)} {RESOURCES[resource][2]}")
    problems += _label_problems("metadata.labels", metadata.get("labels", {}))
    if resource == "jobs":
        template = body.get("spec", {}).get("template", {})
        problems += _label_problems(
            "spec.template.metadata.labels", template.get("metadata", {}).get("labels", {})
        )
        pod = template.get("spec", {})
        if pod.get("restartPolicy") not in ("Never", "OnFailure"):
            problems.append("spec.template.spec.restartPolicy: must be Never or OnFailure")
        for i, container in enumerate(pod.get("containers", [])):
            problems += _container_problems(f"spec.template.spec.containers[{i}]", container)
    if resource == "secrets":
        for key, value in body.get("data", {}).items():
            if not _SECRET_KEY.fullmatch(key):
                problems.append(f"data[{key}]: not a valid Secret key")
            try:
                base64.b64decode(value, validate=True)
            except ValueError:
                problems.append(f"data[{key}]: not base64")
    return problems


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """What Pod Security ``restricted`` (latest) refuses in a pod spec."""
    problems: list[str] = []
    pod_context = pod.get("securityContext", {})
    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag):
            problems.append(f"{flag}=true")
    allowed_volumes = {
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    }
    for volume in pod.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= allowed_volumes:
            problems.append(f"volume {volume.get('name')} of type {sorted(kinds)}")
    containers = pod.get("initContainers", []) + pod.get("containers", [])
    for container in containers:
        name = container.get("name")
        context = container.get("securityContext", {})
        if context.get("privileged"):
            problems.append(f"container {name}: privileged")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"container {name}: allowPrivilegeEscalation != false")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"container {name}: capabilities.drop lacks ALL")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"container {name}: adds capabilities")
        if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            problems.append(f"container {name}: runAsNonRoot != true")
        if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
            problems.append(f"container {name}: runAsUser=0")
        profile = context.get("seccompProfile", pod_context.get("seccompProfile", {}))
        if profile.get("type") not in ("RuntimeDefault", "Localhost"):
            problems.append(f"container {name}: seccompProfile not RuntimeDefault/Localhost")
        if any(port.get("hostPort") for port in container.get("ports", [])):
            problems.append(f"container {name}: hostPort")
    return problems


# -- label selectors ------------------------------------------------------------------------------


def selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``."""
    for term in filter(None, (part.strip() for part in (selector or "").split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# -- the server ---------------------------------------------------------------------------------


@dataclass
class _Event:
    version: int
    resource: str
    namespace: str
    type: str
    object: dict[str, Any]


@dataclass(eq=False)
class _Watcher:
    resource: str
    namespace: str
    selector: str | None
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: _Event) -> bool:
        labels = event.object.get("metadata", {}).get("labels", {})
        return (
            event.resource == self.resource
            and event.namespace == self.namespace
            and selector_matches(self.selector, labels)
        )


@dataclass
class _Container:
    process: asyncio.subprocess.Process
    log: Path


class FakeKubernetes:
    """The server (see the module docstring). ``async with FakeKubernetes(root) as fake``."""

    def __init__(
        self,
        root: Path,
        *,
        kubelet: bool = False,
        python: str = sys.executable,
        kill_grace: float = 2.0,
        base_env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.kubelet = kubelet
        self.python = python
        self.kill_grace = kill_grace
        # What the image's own environment would be: the kubelet adds the container's to it.
        self.base_env = base_env if base_env is not None else {"PATH": os.environ["PATH"]}
        self.token = secrets.token_hex(16)
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {r: {} for r in RESOURCES}
        self.version = 0
        self.history: list[_Event] = []
        self.compacted = 0
        self.watchers: set[_Watcher] = set()
        # Objects the real API server or Pod Security admission would have refused.
        self.rejected: list[str] = []
        # (method, path, watch?) of every request, for tests that count API calls.
        self.requests: list[tuple[str, str, bool]] = []
        self.jobs_created = 0
        # Answer every watch request with HTTP 500 while set (tests of the polling fallback).
        self.fail_watches = False
        # The answer to the next create of that resource instead of creating it (a quota
        # refusal, an admission webhook's veto ...).
        self.next_create_error: dict[str, ApiError] = {}
        self._containers: dict[tuple[str, str], _Container] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> FakeKubernetes:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        await web.SockSite(self._runner, listener).start()
        self.url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(None)
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for container in list(self._containers.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.process.pid, signal.SIGKILL)
            await container.process.wait()
        if self._runner is not None:
            await self._runner.cleanup()

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig file for this server (bearer token auth), as kubectl would read it."""
        document = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "worker", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "worker", "namespace": namespace},
                }
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(document, indent=2))
        return path

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the store --------------------------------------------------------------------------

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.objects[resource].get((namespace, name))
        return copy.deepcopy(found) if found is not None else None

    def list_objects(
        self, resource: str, namespace: str, selector: str | None = None
    ) -> list[dict[str, Any]]:
        return [
            copy.deepcopy(obj)
            for (ns, _), obj in sorted(self.objects[resource].items())
            if ns == namespace and selector_matches(selector, obj["metadata"].get("labels", {}))
        ]

    def pods_of(self, namespace: str, job: str) -> list[dict[str, Any]]:
        return self.list_objects("pods", namespace, f"batch.kubernetes.io/job-name={job}")

    def _emit(self, resource: str, namespace: str, kind: str, obj: dict[str, Any]) -> None:
        event = _Event(self.version, resource, namespace, kind, copy.deepcopy(obj))
        self.history.append(event)
        for watcher in list(self.watchers):
            if watcher.wants(event):
                watcher.queue.put_nowait({"type": kind, "object": copy.deepcopy(obj)})

    def _store(self, resource: str, namespace: str, obj: dict[str, Any], kind: str) -> None:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        self.objects[resource][(namespace, obj["metadata"]["name"])] = obj
        self._emit(resource, namespace, kind, obj)

    def _remove(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        obj = self.objects[resource].pop((namespace, name), None)
        if obj is not None:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self._emit(resource, namespace, "DELETED", obj)
        return obj

    def update(
        self, resource: str, namespace: str, name: str, change: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any] | None:
        """Apply ``change`` to a stored object (a MODIFIED event); None if it is gone."""
        obj = self.objects[resource].get((namespace, name))
        if obj is None:
            return None
        change(obj)
        self._store(resource, namespace, obj, "MODIFIED")
        return copy.deepcopy(obj)

    def set_pod_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace a pod's status (as the kubelet would report it)."""

        def change(pod: dict[str, Any]) -> None:
            pod["status"] = copy.deepcopy(status)

        if self.update("pods", namespace, name, change) is None:
            raise KeyError(f"no pod {namespace}/{name}")

    def set_job_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Replace a Job's status (as the Job controller would)."""

        def change(job: dict[str, Any]) -> None:
            job["status"] = copy.deepcopy(status)

        if self.update("jobs", namespace, name, change) is None:
            raise KeyError(f"no job {namespace}/{name}")

    def end_watches(self) -> None:
        """End every open watch normally, as the server does at a watch's timeout."""
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(None)

    def compact(self) -> None:
        """Forget the history up to now: a watch from an older ``resourceVersion`` is refused
        with ``410 Gone``."""
        self.compacted = self.version

    def expire_watches(self) -> None:
        """Compact, and end every open watch with ``410 Gone`` (an ERROR event), so that
        clients must list again."""
        self.compact()
        for watcher in list(self.watchers):
            watcher.queue.put_nowait(self._expired_event())
            watcher.queue.put_nowait(None)

    def _expired_event(self, version: str | None = None) -> dict[str, Any]:
        old = version or str(self.compacted)
        error = ApiError(410, "Expired", f"too old resource version: {old} ({self.compacted + 1})")
        return {"type": "ERROR", "object": error.body()}

    # -- HTTP -------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        # Go's strconv.ParseBool, as the API server parses it (the Python client sends "True").
        watch = request.query.get("watch") in ("1", "t", "T", "TRUE", "true", "True")
        self.requests.append((request.method, request.path, watch))
        try:
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiError(401, "Unauthorized", "Unauthorized")
            match = _PATH.match(request.path)
            if match is None:
                raise ApiError(404, "NotFound", f"the server could not find {request.path}")
            resource, namespace, name = match["resource"], match["namespace"], match["name"]
            if (match["group"] == "batch") != (resource == "jobs"):
                raise ApiError(404, "NotFound", f"the server could not find {request.path}")
            if request.method == "GET" and name is None and watch:
                return await self._watch(request, resource, namespace)
            if request.method == "GET" and name is None:
                return self._json(200, self._list_body(resource, namespace, request))
            if request.method == "GET":
                found = self.get(resource, namespace, name)
                if found is None:
                    raise not_found(resource, name)
                return self._json(200, found)
            if request.method == "POST" and name is None:
                return self._json(
                    201, self.create_object(resource, namespace, await request.json())
                )
            if request.method == "DELETE" and name is not None:
                body = await request.json() if request.can_read_body else {}
                policy = request.query.get("propagationPolicy") or (body or {}).get(
                    "propagationPolicy"
                )
                return self._json(200, await self.delete_object(resource, namespace, name, policy))
            raise ApiError(405, "MethodNotAllowed", f"{request.method} is not supported here")
        except ApiError as exc:
            return self._json(exc.code, exc.body())

    @staticmethod
    def _json(status: int, body: dict[str, Any]) -> web.Response:
        return web.json_response(body, status=status)

    def _list_body(self, resource: str, namespace: str, request: web.Request) -> dict[str, Any]:
        return {
            "kind": f"{RESOURCES[resource][2]}List",
            "apiVersion": api_version(resource),
            "metadata": {"resourceVersion": str(self.version)},
            "items": self.list_objects(resource, namespace, request.query.get("labelSelector")),
        }

    async def _watch(
        self, request: web.Request, resource: str, namespace: str
    ) -> web.StreamResponse:
        if self.fail_watches:
            raise ApiError(500, "InternalError", "watches are failing (test)")
        version = request.query.get("resourceVersion", "")
        timeout = float(request.query.get("timeoutSeconds", "1800"))
        selector = request.query.get("labelSelector")
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write(json.dumps(event).encode() + b"\n")

        if version not in ("", "0") and int(version) < self.compacted:
            await send(self._expired_event(version))
            return response
        watcher = _Watcher(resource, namespace, selector)
        # Registered and replayed without an await in between: no event is missed or doubled.
        self.watchers.add(watcher)
        if version in ("", "0"):
            backlog = [
                {"type": "ADDED", "object": obj}
                for obj in self.list_objects(resource, namespace, selector)
            ]
        else:
            backlog = [
                {"type": event.type, "object": copy.deepcopy(event.object)}
                for event in self.history
                if event.version > int(version) and watcher.wants(event)
            ]
        try:
            for event in backlog:
                await send(event)
            async with asyncio.timeout(timeout):
                while (item := await watcher.queue.get()) is not None:
                    await send(item)
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self.watchers.discard(watcher)
        return response

    # -- create and delete ------------------------------------------------------------------

    def create_object(self, resource: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """What a POST of ``body`` does (validation, 409, defaults, the Job controller); raises
        :class:`ApiError` where the API answers an error."""
        refusal = self.next_create_error.pop(resource, None)
        if refusal is not None:
            raise refusal
        problems = schema_problems(body) + semantic_problems(resource, body, namespace)
        name = body.get("metadata", {}).get("name", "")
        if problems:
            self.rejected += [f"{resource}/{name}: {problem}" for problem in problems]
            raise ApiError(
                422,
                "Invalid",
                f'{RESOURCES[resource][2]} "{name}" is invalid: {"; ".join(problems)}',
                name=name,
                kind=RESOURCES[resource][2],
            )
        if (namespace, name) in self.objects[resource]:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{qualified(resource)} "{name}" already exists',
                name=name,
                group=RESOURCES[resource][0],
                kind=resource,
            )
        obj = copy.deepcopy(body)
        metadata = obj["metadata"]
        metadata.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=timestamp(),
        )
        if resource == "secrets" and "stringData" in obj:
            for key, value in obj.pop("stringData").items():
                obj.setdefault("data", {})[key] = base64.b64encode(value.encode()).decode()
        if resource == "jobs":
            self._default_job(obj)
        self._store(resource, namespace, obj, "ADDED")
        self._collect_if_orphaned(resource, namespace, obj)
        if resource == "jobs":
            self.jobs_created += 1
            self._spawn(self._run_job(namespace, name, metadata["uid"]))
        return copy.deepcopy(obj)

    @staticmethod
    def _default_job(job: dict[str, Any]) -> None:
        """What the API server adds to a Job: defaults, the selector and controller labels."""
        name, uid = job["metadata"]["name"], job["metadata"]["uid"]
        job["metadata"]["generation"] = 1
        spec = job["spec"]
        spec.setdefault("completions", 1)
        spec.setdefault("parallelism", 1)
        spec.setdefault("completionMode", "NonIndexed")
        spec.setdefault("suspend", False)
        spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
        controller = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        template = spec["template"]
        template.setdefault("metadata", {}).setdefault("labels", {}).update(controller)
        pod = template["spec"]
        pod.setdefault("dnsPolicy", "ClusterFirst")
        pod.setdefault("schedulerName", "default-scheduler")
        pod.setdefault("terminationGracePeriodSeconds", 30)
        job["status"] = {}

    def _owner_exists(self, namespace: str, uid: str) -> bool:
        return any(
            obj["metadata"]["uid"] == uid
            for objects in self.objects.values()
            for (ns, _), obj in objects.items()
            if ns == namespace
        )

    def _collect_if_orphaned(self, resource: str, namespace: str, obj: dict[str, Any]) -> None:
        owners = obj["metadata"].get("ownerReferences", [])
        if owners and not any(self._owner_exists(namespace, ref["uid"]) for ref in owners):
            self._spawn(
                self.delete_object(resource, namespace, obj["metadata"]["name"], "Background")
            )

    def _dependents(self, namespace: str, uid: str) -> list[tuple[str, str]]:
        return [
            (resource, name)
            for resource, objects in self.objects.items()
            for (ns, name), obj in objects.items()
            if ns == namespace
            and any(ref.get("uid") == uid for ref in obj["metadata"].get("ownerReferences", []))
        ]

    async def delete_object(
        self, resource: str, namespace: str, name: str, policy: str | None
    ) -> dict[str, Any]:
        """What a DELETE with propagation ``policy`` does (see the module docstring)."""
        obj = self.objects[resource].get((namespace, name))
        if obj is None:
            raise not_found(resource, name)
        uid = obj["metadata"]["uid"]
        # The REST default for Jobs is to orphan their pods (kubectl asks for Background).
        policy = policy or ("Orphan" if resource == "jobs" else "Background")
        if policy == "Foreground":
            for dependent, dependent_name in self._dependents(namespace, uid):
                with contextlib.suppress(ApiError):
                    await self.delete_object(dependent, namespace, dependent_name, "Foreground")
        elif policy == "Orphan":
            for dependent, dependent_name in self._dependents(namespace, uid):

                def strip(item: dict[str, Any]) -> None:
                    item["metadata"]["ownerReferences"] = [
                        ref for ref in item["metadata"]["ownerReferences"] if ref["uid"] != uid
                    ]

                self.update(dependent, namespace, dependent_name, strip)
        if resource == "pods":
            await self._stop_container(namespace, name)
        self._remove(resource, namespace, name)
        if policy == "Background":
            for dependent, dependent_name in self._dependents(namespace, uid):
                self._spawn(self.delete_object(dependent, namespace, dependent_name, "Background"))
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": name,
                "group": RESOURCES[resource][0],
                "kind": resource,
                "uid": uid,
            },
        }

    # -- the Job controller -----------------------------------------------------------------

    def _job_alive(self, namespace: str, name: str, uid: str) -> dict[str, Any] | None:
        job = self.objects["jobs"].get((namespace, name))
        return job if job is not None and job["metadata"]["uid"] == uid else None

    async def _run_job(self, namespace: str, name: str, uid: str) -> None:
        job = self.get("jobs", namespace, name)
        assert job is not None
        template = job["spec"]["template"]
        violations = restricted_violations(template["spec"])
        if violations:
            self.rejected += [f"pod of job {name}: PodSecurity restricted: {v}" for v in violations]
            return
        pod_name = f"{name}-{secrets.token_hex(3)[:5]}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "generateName": f"{name}-",
                "namespace": namespace,
                "uid": str(uuid.uuid4()),
                "creationTimestamp": timestamp(),
                "labels": dict(template["metadata"]["labels"]),
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "kind": "Job",
                        "name": name,
                        "uid": uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": copy.deepcopy(template["spec"]),
            "status": {"phase": "Pending", "qosClass": "Burstable"},
        }
        self._store("pods", namespace, pod, "ADDED")
        started = timestamp()
        self.update(
            "jobs",
            namespace,
            name,
            lambda j: j["status"].update(startTime=started, active=1, ready=0, terminating=0),
        )
        deadline = job["spec"].get("activeDeadlineSeconds")
        if deadline is not None:
            self._spawn(self._enforce_deadline(namespace, name, uid, float(deadline)))
        if self.kubelet:
            await self._run_pod(namespace, pod_name, name, uid)

    def finish_job(
        self, namespace: str, name: str, *, succeeded: bool, reason: str, message: str
    ) -> None:
        """Set the Job's terminal conditions, as a 1.31+ Job controller does."""
        now = timestamp()

        def condition(kind: str) -> dict[str, Any]:
            return {
                "type": kind,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }

        def change(job: dict[str, Any]) -> None:
            status = job["status"]
            status.update(active=0, ready=0, terminating=0, uncountedTerminatedPods={})
            if succeeded:
                status.update(succeeded=1, completionTime=now)
                status["conditions"] = [condition("SuccessCriteriaMet"), condition("Complete")]
            else:
                status.update(failed=1)
                status["conditions"] = [condition("FailureTarget"), condition("Failed")]

        job = self.update("jobs", namespace, name, change)
        ttl = job["spec"].get("ttlSecondsAfterFinished") if job is not None else None
        if job is not None and ttl is not None:
            self._spawn(self._expire(namespace, name, job["metadata"]["uid"], float(ttl)))

    async def _expire(self, namespace: str, name: str, uid: str, ttl: float) -> None:
        await asyncio.sleep(ttl)
        if self._job_alive(namespace, name, uid):
            with contextlib.suppress(ApiError):
                await self.delete_object("jobs", namespace, name, "Background")

    @staticmethod
    def _finished(job: dict[str, Any]) -> bool:
        return any(
            c["type"] in ("Complete", "Failed") and c["status"] == "True"
            for c in job.get("status", {}).get("conditions", [])
        )

    async def _enforce_deadline(self, namespace: str, name: str, uid: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        job = self._job_alive(namespace, name, uid)
        if job is None or self._finished(job):
            return
        self.finish_job(
            namespace,
            name,
            succeeded=False,
            reason="DeadlineExceeded",
            message="Job was active longer than specified deadline",
        )
        for pod in self.pods_of(namespace, name):
            with contextlib.suppress(ApiError):
                await self.delete_object("pods", namespace, pod["metadata"]["name"], "Background")

    # -- the kubelet ------------------------------------------------------------------------

    def _container_env(
        self, namespace: str, container: dict[str, Any]
    ) -> tuple[dict[str, str], str | None]:
        """The container's environment from its env and Secrets, or why it cannot start."""
        env: dict[str, str] = {}

        def secret_data(name: str) -> dict[str, str] | None:
            secret = self.objects["secrets"].get((namespace, name))
            if secret is None:
                return None
            return {
                key: base64.b64decode(value).decode()
                for key, value in secret.get("data", {}).items()
            }

        for source in container.get("envFrom", []):
            reference = source.get("secretRef")
            if reference is None:
                return {}, "only secretRef sources are emulated"
            data = secret_data(reference["name"])
            if data is None:
                if reference.get("optional"):
                    continue
                return {}, f'secret "{reference["name"]}" not found'
            env.update({source.get("prefix", "") + key: value for key, value in data.items()})
        for variable in container.get("env", []):
            if "value" in variable:
                env[variable["name"]] = variable["value"]
                continue
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference is None:
                return {}, f"env {variable['name']}: only secretKeyRef is emulated"
            data = secret_data(reference["name"])
            if data is None:
                return {}, f'secret "{reference["name"]}" not found'
            if reference["key"] not in data:
                return (
                    {},
                    f"couldn't find key {reference['key']} in Secret"
                    f" {namespace}/{reference['name']}",
                )
            env[variable["name"]] = data[reference["key"]]
        return env, None

    def _set_container(
        self, namespace: str, pod: str, state: dict[str, Any], **status: Any
    ) -> dict[str, Any] | None:
        def change(obj: dict[str, Any]) -> None:
            container = obj["spec"]["containers"][0]
            running = "running" in state
            obj["status"].update(status)
            obj["status"]["containerStatuses"] = [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": running,
                    "started": running,
                    "restartCount": 0,
                    "state": state,
                }
            ]

        return self.update("pods", namespace, pod, change)

    async def _run_pod(self, namespace: str, pod_name: str, job_name: str, job_uid: str) -> None:
        now = timestamp()

        def schedule(pod: dict[str, Any]) -> None:
            pod["spec"]["nodeName"] = NODE_NAME
            pod["status"].update(
                startTime=now,
                hostIP="10.0.0.11",
                conditions=[
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": now,
                    },
                ],
            )

        self.update("pods", namespace, pod_name, schedule)
        pod = self.get("pods", namespace, pod_name)
        if pod is None:
            return
        container = pod["spec"]["containers"][0]
        while True:
            if self.get("pods", namespace, pod_name) is None:
                return
            env, problem = self._container_env(namespace, container)
            if problem is None:
                break
            self._set_container(
                namespace,
                pod_name,
                {"waiting": {"reason": "CreateContainerConfigError", "message": problem}},
            )
            await asyncio.sleep(0.3)
        directory = self.root / "pods" / pod_name
        directory.mkdir(parents=True, exist_ok=True)
        message_path = container.get("terminationMessagePath", "/dev/termination-log")
        message_file = directory / "termination-log"
        message_file.write_bytes(b"")
        message_file.chmod(0o666)
        command = list(container.get("command", []))
        if command and command[0] == "python":
            command[0] = self.python
        args = [
            str(message_file) if arg == message_path else arg for arg in container.get("args", [])
        ]
        log = directory / "container.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *command,
                *args,
                env={**self.base_env, "HOSTNAME": pod_name, **env},
                cwd=directory,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        self._containers[(namespace, pod_name)] = _Container(process, log)
        started = timestamp()
        self._set_container(
            namespace,
            pod_name,
            {"running": {"startedAt": started}},
            phase="Running",
            podIP="10.1.0.7",
        )
        code = await process.wait()
        self._containers.pop((namespace, pod_name), None)
        if code < 0:  # killed by a signal: the runtime reports 128 + N
            code = 128 - code
        message = message_file.read_bytes()[:MESSAGE_LIMIT].decode(errors="replace")
        if (
            not message
            and code != 0
            and container.get("terminationMessagePolicy") == ("FallbackToLogsOnError")
        ):
            tail = log.read_bytes()[-LOG_FALLBACK_BYTES:].decode(errors="replace")
            message = "\n".join(tail.splitlines()[-LOG_FALLBACK_LINES:])
        terminated: dict[str, Any] = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": started,
            "finishedAt": timestamp(),
            "containerID": f"containerd://{secrets.token_hex(32)}",
        }
        if message:
            terminated["message"] = message
        phase = "Succeeded" if code == 0 else "Failed"
        if (
            self._set_container(namespace, pod_name, {"terminated": terminated}, phase=phase)
            is None
        ):
            return
        job = self._job_alive(namespace, job_name, job_uid)
        if job is None or self._finished(job):
            return
        if code == 0:
            self.finish_job(
                namespace,
                job_name,
                succeeded=True,
                reason="CompletionsReached",
                message="Reached expected number of succeeded pods",
            )
        else:
            self.finish_job(
                namespace,
                job_name,
                succeeded=False,
                reason="BackoffLimitExceeded",
                message="Job has reached the specified backoff limit",
            )

    async def _stop_container(self, namespace: str, pod_name: str) -> None:
        container = self._containers.get((namespace, pod_name))
        if container is None or container.process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(container.process.pid, signal.SIGTERM)
        try:
            async with asyncio.timeout(self.kill_grace):
                await container.process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(container.process.pid, signal.SIGKILL)
            await container.process.wait()
